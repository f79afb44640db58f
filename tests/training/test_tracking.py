"""training.tracking.configure_experiment: which experiment runs go to, in and outside ``mlflow run``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from training import tracking


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MlflowClient]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    # set_experiment exports MLFLOW_EXPERIMENT_ID; delenv restores its absence afterwards
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID"):
        monkeypatch.delenv(name, raising=False)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    yield MlflowClient()
    mlflow.end_run()


def test_outside_mlflow_run_the_named_experiment_is_created_and_used(
    store: MlflowClient,
) -> None:
    uri, experiment = tracking.configure_experiment("named")
    assert experiment == "named" and uri.endswith("mlflow.db")
    with mlflow.start_run() as run:
        pass
    assert store.get_experiment(run.info.experiment_id).name == "named"


def test_inside_mlflow_run_training_logs_into_the_run_it_started(
    store: MlflowClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What `mlflow run` does: create the run in its own experiment, pass its id on.
    outer_experiment = store.create_experiment("chosen-by-mlflow-run")
    outer = store.create_run(outer_experiment)
    monkeypatch.setenv("MLFLOW_RUN_ID", outer.info.run_id)

    uri, experiment = tracking.configure_experiment("touchpoint")
    assert experiment == "chosen-by-mlflow-run"
    # Without the fix, start_run raised: "active experiment ID does not match environment
    # run ID", because configure had selected the experiment named on the command line.
    with mlflow.start_run() as run:
        mlflow.log_metric("m", 1.0)
    assert run.info.run_id == outer.info.run_id
    assert store.get_run(outer.info.run_id).data.metrics == {"m": 1.0}
    assert store.get_experiment_by_name("touchpoint") is None
