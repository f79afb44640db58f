"""A training run as MLflow records it: params, data hash, metrics, plots, bundle, registry.

The registered model ``touchpoint`` gets the alias ``challenger`` on every run; it becomes
``champion`` only when its policy value (DR estimate) beats the current champion's on this
run's test data — both policies scored on the same decision points, with the same
propensities and rewards.  The decision and its figures are logged on the run.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd

from features.catalog import Catalog
from features.pipeline import compute_features
from serving.bundle import load_bundle
from serving.engagement import ENGAGEMENT_COLUMN
from serving.engine import DecisionEngine
from training import plots, report, tracking
from training.evaluation import summarize_policy_table
from training.promotion import compare_with_champion
from training.report import QuarantineSummary
from training.train import TrainConfig, TrainResult, fit_and_evaluate

Progress = Callable[[str], None]


@dataclass
class RunSummary:
    """What ``touchpoint train`` prints at the end."""

    run_id: str
    experiment: str
    tracking_uri: str
    bundle_dir: Path
    registered_version: str | None
    promoted: bool
    headline: dict[str, float]
    report_path: Path | None = None


def run_training(
    events: pd.DataFrame,
    customers: pd.DataFrame | None,
    catalog: Catalog,
    config: TrainConfig,
    *,
    data_paths: list[str | Path | None],
    experiment: str = tracking.DEFAULT_EXPERIMENT,
    models_dir: Path = Path("models"),
    ground_truth: pd.DataFrame | None = None,
    register: bool = True,
    quarantine: QuarantineSummary | None = None,
    progress: Progress = lambda _msg: None,
) -> RunSummary:
    """Train, evaluate and log one run; register and maybe promote its model.

    The experiment report (``training/report.py``) is written next to the bundles as
    ``report-<run id>.html`` and attached to the run under ``report/``.
    """
    uri, experiment = tracking.configure_experiment(experiment)
    progress(f"MLflow tracking URI: {uri}, experiment {experiment!r}")
    with mlflow.start_run() as run:
        run_id = run.info.run_id
        progress(f"MLflow run {run_id}")
        tracking.log_params(
            {
                "config": asdict(config),
                "catalog": catalog.to_dict(),
                "data": {"sha256": tracking.data_hash(*data_paths)},
            }
        )
        mlflow.log_dict(catalog.to_dict(), "catalog.json")
        bundle_dir = Path(models_dir) / f"touchpoint-{run_id[:12]}"
        result = fit_and_evaluate(
            events,
            customers,
            catalog,
            config,
            bundle_dir=bundle_dir,
            model_version=run_id[:12],
            progress=progress,
        )
        metrics = _collect_metrics(result)
        # Look the champion up before this run may replace it, so the report compares
        # the run with the model it competed against.
        champion = report.champion_info() if register else None
        choices = None
        if ground_truth is not None:
            from training.truth import simulated_truth

            progress("scoring the policy against the simulator's ground truth")
            truth, choices = simulated_truth(
                result.engine,
                events,
                customers,
                ground_truth,
                catalog,
                best_single=result.best_single,
            )
            metrics.update(truth)
            mlflow.log_text(choices.to_csv(index=False), "truth_choices.csv")
        mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
        mlflow.log_text(result.policy_table.to_csv(index=False), "policy_values.csv")
        mlflow.log_dict(result.spec.to_dict(), "feature_spec.json")
        mlflow.set_tags({"formulation": result.formulation, "best_single": result.best_single})
        _log_plots(result)
        mlflow.log_artifacts(str(bundle_dir), "bundle")

        version, promoted = None, False
        if register:
            version, _ = tracking.log_bundle_model(bundle_dir)
            if version is not None:
                tracking.set_alias(tracking.CHALLENGER, version)
                promoted = _maybe_promote(result, events, customers, catalog, version, progress)
        progress("writing the experiment report")
        inputs = report.inputs_from_training(
            result, events, customers, catalog,
            metrics=metrics, run_id=run_id, truth_choices=choices, champion=champion,
            tags={"promotion.decision": "promoted" if promoted else "kept champion"}
            if register else None,
            quarantine=quarantine,
        )  # fmt: skip
        report_path = report.build_report(
            inputs, Path(models_dir) / f"report-{run_id[:12]}.html", progress=progress
        )
        report.log_report_to_mlflow(report_path)
        progress(f"report: {report_path}")
        headline: dict[str, float] = {
            key: metrics[key]
            for key in (
                "conversion.auc",
                "churn.auc",
                "conversion.ece",
                "churn.ece",
                "policy.model.dr",
                "policy.logging.dr",
                "policy.no_action.dr",
                "truth.oracle_fraction.model",
                "truth.oracle_fraction.best_single",
                "truth.violations",
            )
            if key in metrics
        }
        return RunSummary(
            run_id=run_id,
            experiment=experiment,
            tracking_uri=uri,
            bundle_dir=bundle_dir,
            registered_version=version,
            promoted=promoted,
            headline=headline,
            report_path=report_path,
        )


def _collect_metrics(result: TrainResult) -> dict[str, float]:
    metrics = dict(result.metrics)
    metrics.update(summarize_policy_table(result.policy_table))
    metrics.update(result.formulation_comparison)
    metrics.update({f"count.{k}": float(v) for k, v in result.counts.items()})
    for target, fit in result.fit_reports.items():
        metrics[f"{target}.valid_brier_raw"] = fit.valid_brier_raw
        metrics[f"{target}.valid_brier_calibrated"] = fit.valid_brier_calibrated
        metrics[f"{target}.calibrated"] = float(fit.calibrated)
    return metrics


def _log_plots(result: TrainResult) -> None:
    rounds = result.test_rounds
    bundle = result.engine.bundle
    curves = {
        "conversion": (
            rounds.conversion,
            bundle.conversion.predict_logged(rounds.X, rounds.action),
        ),
        "churn": (rounds.churn, bundle.churn.predict_logged(rounds.X, rounds.action)),
    }
    figures = {
        "plots/calibration.png": plots.calibration_figure(curves),
        "plots/policy_comparison.png": plots.policy_figure(result.policy_table),
    }
    if result.qini_curves:
        figures["plots/qini_curves.png"] = plots.qini_figure(result.qini_curves)
    names = list(bundle.spec.feature_names)
    for target, scorer in (("conversion", bundle.conversion), ("churn", bundle.churn)):
        columns = [*names, *([] if scorer.engagement is None else [ENGAGEMENT_COLUMN]), "action"]
        figures[f"plots/importance_{target}.png"] = plots.importance_figure(
            columns, _importance(scorer.boosters, columns), f"What drives the {target} model"
        )
    for path, fig in figures.items():
        mlflow.log_figure(fig, path)
        plt.close(fig)


def _importance(boosters: dict[str, Any], columns: list[str]) -> np.ndarray:
    """Total gain per column of ``columns`` (the features, the engagement if any, the
    action) over the boosters: each reads the features first, and the action-aware ones
    the rest of the columns after them (the action code always last)."""
    total = np.zeros(len(columns))
    for booster in boosters.values():
        gain = np.asarray(booster.feature_importance(importance_type="gain"), dtype=float)
        if len(gain) == len(columns):
            total += gain
        else:  # a booster of the features alone (base, offset or per-action)
            total[: len(gain)] += gain
    return total


def _maybe_promote(
    result: TrainResult,
    events: pd.DataFrame,
    customers: pd.DataFrame | None,
    catalog: Catalog,
    version: str,
    progress: Progress,
) -> bool:
    """Promote to champion when the challenger's DR policy value beats the champion's, both
    graded on this run's test decision points by the same reward estimates
    (training/promotion.py)."""
    challenger_value = float(
        result.policy_table.query("policy == 'model' and estimator == 'dr'")["value"].iloc[0]
    )
    champion_version = tracking.alias_version(tracking.CHAMPION)
    champion_value = float("nan")
    if champion_version is None:
        promote, reason = True, "no champion yet"
    else:
        with tempfile.TemporaryDirectory(prefix="touchpoint-bundle-") as folder:
            champion = DecisionEngine(
                load_bundle(
                    tracking.download_bundle(f"models:/{tracking.MODEL_NAME}@champion", folder)
                )
            )  # read into memory: the download is not needed once loaded
        comparison = compare_with_champion(
            result.engine,
            champion,
            result.test_rounds,
            _champion_X(champion, result, events, customers),
        )
        if comparison is None:  # different action sets: not comparable, the newer catalog wins
            promote, reason = True, f"champion v{champion_version} serves other actions"
        else:
            challenger_value, champion_value = comparison.challenger, comparison.champion
            promote = challenger_value > champion_value
            reason = (
                f"challenger DR {challenger_value:.4f} vs champion v{champion_version} "
                f"DR {champion_value:.4f} on the same test decision points, graded by the "
                "mean of both models' reward estimates"
            )
    mlflow.log_metrics(
        {"promotion.challenger_dr": challenger_value}
        | ({"promotion.champion_dr": champion_value} if np.isfinite(champion_value) else {})
    )
    mlflow.set_tags(
        {
            "promotion.decision": "promoted" if promote else "kept champion",
            "promotion.reason": reason,
        }
    )
    progress(
        f"registry: version {version} is challenger; {reason}: "
        f"{'promoted to champion' if promote else 'champion kept'}"
    )
    if promote:
        tracking.set_alias(tracking.CHAMPION, version)
    return promote


def _champion_X(
    champion: DecisionEngine,
    result: TrainResult,
    events: pd.DataFrame,
    customers: pd.DataFrame | None,
) -> np.ndarray:
    """This run's test decision points in the champion's own feature spec."""
    features = compute_features(events, result.test_decisions, customers, spec=champion.bundle.spec)
    return features[list(champion.bundle.spec.feature_names)].to_numpy(dtype=np.float64)


def policy_table_text(table: pd.DataFrame) -> str:
    buf = io.StringIO()
    table.to_string(buf, index=False, float_format=lambda v: f"{v:.4f}")
    return buf.getvalue()
