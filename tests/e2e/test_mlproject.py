"""The MLproject's entry points through a real ``mlflow run --env-manager local``.

The entry points only call the ``touchpoint`` command, so the project folder here holds
just a copy of ``MLproject``: the run writes its models and outputs into a temporary folder,
not into the repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from touchpoint.cli import main

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def _mlflow_run(project: Path, env: dict[str, str], *args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mlflow", "run", str(project), "--env-manager", "local", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_train_and_recommend_entry_points(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert main(["simulate", "--out", str(data), "--customers", "600", "--days", "300"]) == 0
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "MLproject", project / "MLproject")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        # the `touchpoint` command of this interpreter, whatever PATH the tests run with
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    # what earlier tests' set_experiment / start_run exported would steer `mlflow run`
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(name, None)
    inputs = [
        "-P",
        f"events={data / 'events.parquet'}",
        "-P",
        f"customers={data / 'customers.parquet'}",
    ]
    _mlflow_run(
        project,
        env,
        "-e",
        "train",
        "--experiment-name",
        "project-e2e",
        *inputs,
        "-P",
        f"catalog={data / 'catalog.yaml'}",
    )
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name("project-e2e")
    runs = client.search_runs([experiment.experiment_id])
    # One run: the one `mlflow run` started, which training logged into and finished.
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.metrics["truth.violations"] == 0
    assert "policy.model.dr" in run.data.metrics
    # The entry point's defaults are the CLI's: one formulation fitted, shared_offset.
    assert run.data.tags["formulation"] == "shared_offset"
    assert not any(key.startswith("formulation.") for key in run.data.metrics)
    assert client.get_experiment_by_name("touchpoint") is None
    champion = client.get_model_version_by_alias("touchpoint", "champion")
    assert champion.run_id == run.info.run_id
    assert (project / "models" / f"touchpoint-{run.info.run_id[:12]}").is_dir()

    out = tmp_path / "recommendations.csv"
    _mlflow_run(project, env, "-e", "recommend", *inputs, "-P", f"out={out}")
    recommendations = pd.read_csv(out)
    customers = pd.read_parquet(data / "customers.parquet")
    assert set(recommendations["customer_id"]) == set(customers["customer_id"])
