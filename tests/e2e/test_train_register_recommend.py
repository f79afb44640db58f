"""End to end on small simulated data: simulate → train (MLflow) → register → recommend.

The figures are checked against the simulator's ground truth, not against themselves.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from touchpoint.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="module")
def trained(workdir: Path) -> dict[str, object]:
    mp = pytest.MonkeyPatch()
    mp.chdir(workdir)
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{workdir / 'mlflow.db'}")
    data = workdir / "data"
    assert main(["simulate", "--out", str(data), "--customers", "2500", "--days", "270"]) == 0
    common = [
        "--events",
        str(data / "events.parquet"),
        "--customers",
        str(data / "customers.parquet"),
    ]
    assert (
        main(
            [
                "train",
                *common,
                "--catalog",
                str(data / "catalog.yaml"),
                "--experiment",
                "e2e",
                "--bootstrap",
                "100",
                "--formulation",
                "shared_offset",
            ]
        )
        == 0
    )
    client = MlflowClient()
    run = client.search_runs([client.get_experiment_by_name("e2e").experiment_id])[0]
    yield {"data": data, "common": common, "run": run, "client": client}
    mlflow.end_run()
    mp.undo()


def test_run_logged_params_metrics_plots_and_bundle(trained: dict) -> None:
    run = trained["run"]
    assert "data.sha256" in run.data.params and len(run.data.params["data.sha256"]) == 64
    assert "catalog.objective.churn_cost" in run.data.params
    metrics = run.data.metrics
    for key in (
        "conversion.auc",
        "churn.auc",
        "conversion.ece",
        "policy.model.dr",
        "policy.logging.snips",
        "truth.oracle_fraction.model",
    ):
        assert key in metrics, key
    assert metrics["conversion.auc"] > 0.6
    assert metrics["churn.auc"] > 0.6
    # The test rows' own (cross-fitted) propensities weigh "no action" right: 1 in
    # expectation (a model of the training period gave 1.08-1.10 on the default world).
    assert 0.9 < metrics["propensity.none_weight"] < 1.1
    artifacts = {a.path for a in trained["client"].list_artifacts(run.info.run_id, "plots")}
    assert {"plots/calibration.png", "plots/policy_comparison.png"} <= artifacts
    bundle = {a.path for a in trained["client"].list_artifacts(run.info.run_id, "bundle")}
    assert "bundle/bundle.json" in bundle
    # The experiment report is attached to the run, self-contained.
    report = [a.path for a in trained["client"].list_artifacts(run.info.run_id, "report")]
    assert len(report) == 1 and report[0].endswith(".html"), report
    local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path=report[0])
    html = Path(local).read_text(encoding="utf-8")
    assert "data:image/png;base64" in html and "http://" not in html.split("<body", 1)[1]


def test_model_registered_and_first_version_is_champion(trained: dict) -> None:
    client = trained["client"]
    champion = client.get_model_version_by_alias("touchpoint", "champion")
    challenger = client.get_model_version_by_alias("touchpoint", "challenger")
    assert str(champion.version) == str(challenger.version) == "1"
    assert trained["run"].data.tags["promotion.decision"] == "promoted"


def test_policy_beats_no_action_in_truth_and_never_breaks_consent(trained: dict) -> None:
    metrics = trained["run"].data.metrics
    assert metrics["truth.violations"] == 0
    # The learned policy must beat leaving everyone alone, by the simulator's own truth.
    assert metrics["truth.value.model"] > metrics["truth.value.no_action"]
    assert metrics["truth.oracle_fraction.model"] > 0.0


def _no_bundle_left(scratch: Path) -> None:
    """A bundle fetched from the registry for one command is gone when it returns."""
    assert sorted(p.name for p in scratch.glob("touchpoint-bundle-*")) == []


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The temporary folder of everything the test runs (``tempfile.gettempdir()``)."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def test_recommend_from_registry_uses_only_the_past(
    trained: dict, workdir: Path, scratch: Path
) -> None:
    data, common = trained["data"], trained["common"]
    ids = workdir / "ids.txt"
    truth = pd.read_parquet(data / "ground_truth.parquet")
    chosen = sorted(truth["customer_id"].astype(str).unique())[:50]
    ids.write_text("customer_id\n" + "\n".join(chosen) + "\n")
    out = workdir / "recs.csv"
    as_of = "2026-06-01T12:00:00Z"
    args = [
        "recommend",
        *common,
        "--model",
        "models:/touchpoint@champion",
        "--as-of",
        as_of,
        "--ids",
        str(ids),
        "--top-k",
        "3",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    _no_bundle_left(scratch)
    recs = pd.read_csv(out)
    assert {"customer_id", "rank", "action", "score", "p_conversion", "p_churn"} <= set(recs)
    assert set(recs["customer_id"].astype(str)) == set(chosen)
    assert recs.groupby("customer_id")["rank"].min().eq(1).all()
    assert recs["p_conversion"].between(0, 1).all() and recs["p_churn"].between(0, 1).all()

    # Events at or after --as-of must not change anything: cut them off and compare.
    events = pd.read_parquet(data / "events.parquet")
    past = events[events["timestamp"] < pd.Timestamp(as_of)]
    past_path = workdir / "past.parquet"
    past.to_parquet(past_path)
    out2 = workdir / "recs_past.csv"
    args2 = [
        "recommend",
        "--events",
        str(past_path),
        "--customers",
        str(data / "customers.parquet"),
        "--model",
        "models:/touchpoint@champion",
        "--as-of",
        as_of,
        "--ids",
        str(ids),
        "--top-k",
        "3",
        "--out",
        str(out2),
    ]
    assert main(args2) == 0
    pd.testing.assert_frame_equal(recs, pd.read_csv(out2))


def test_serve_of_a_fixed_version_deletes_its_download_when_it_stops(
    trained: dict, scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import serving.server

    seen: list[bool] = []

    def serve(settings: object, **_: object) -> None:  # the service ran, and stopped
        seen.append((Path(settings.model) / "bundle.json").is_file())  # type: ignore[attr-defined]

    monkeypatch.setattr(serving.server, "serve", serve)
    assert main(["serve", "--model", "models:/touchpoint/1"]) == 0
    assert seen == [True]  # the bundle was there while it served
    _no_bundle_left(scratch)


def test_evaluate_command_reports_every_policy_and_estimator(
    trained: dict, workdir: Path, scratch: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = workdir / "evaluation.csv"
    args = [
        "evaluate",
        *trained["common"],
        "--model",
        "models:/touchpoint@champion",
        "--bootstrap",
        "50",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    _no_bundle_left(scratch)
    table = pd.read_csv(out)
    assert set(table["estimator"]) == {"ips", "snips", "dr"}
    policies = {p.split(" ")[0] for p in table["policy"]}
    assert {"model", "logging", "random_eligible", "best_single", "no_action"} <= policies
    assert (table["ci_low"] <= table["value"]).all() and (table["value"] <= table["ci_high"]).all()
    # The check of its propensities, cross-fitted on the evaluated half: 1 when right.
    weight = re.search(r"^propensity\.none_weight: ([0-9.]+)$", capsys.readouterr().out, re.M)
    assert weight is not None and 0.9 < float(weight.group(1)) < 1.1


def test_second_run_is_challenger_and_promoted_only_if_better(trained: dict, scratch: Path) -> None:
    data, client = trained["data"], trained["client"]
    # This run also refits on the rows before the test period (--refit pre-test).
    args = ["train", *trained["common"], "--catalog", str(data / "catalog.yaml"),
            "--experiment", "e2e", "--bootstrap", "50", "--seed", "1",
            "--refit", "pre-test"]  # fmt: skip
    assert main(args) == 0
    _no_bundle_left(scratch)  # the champion, fetched to compare with
    experiment = client.get_experiment_by_name("e2e").experiment_id
    runs = client.search_runs([experiment], order_by=["attributes.start_time DESC"])
    second = runs[0]
    metrics, tags = second.data.metrics, second.data.tags
    # The refit saw train, the gap after it and validation: more rows than the first two.
    assert second.data.params["config.refit"] == "pre-test"
    assert metrics["count.rows_refit"] > metrics["count.rows_train"] + metrics["count.rows_valid"]
    bundle = json.loads(
        (Path("models") / f"touchpoint-{second.info.run_id[:12]}" / "bundle.json").read_text()
    )
    assert bundle["metadata"]["refit"] == "pre-test"
    assert trained["run"].data.params["config.refit"] == "none"
    challenger = client.get_model_version_by_alias("touchpoint", "challenger")
    champion = client.get_model_version_by_alias("touchpoint", "champion")
    assert str(challenger.version) == "2"
    # Both policies were scored on the same test rows, and the decision follows the figures.
    better = metrics["promotion.challenger_dr"] > metrics["promotion.champion_dr"]
    assert tags["promotion.decision"] == ("promoted" if better else "kept champion")
    assert str(champion.version) == ("2" if better else "1")
