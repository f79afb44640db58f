"""The marketers' report: one self-contained HTML page per training run.

Everything a marketer needs to review a run, without code: the data, the journey funnel,
each touchpoint's response and lift, channel attribution, model quality, the policy
comparison, the contact rules' suppressions and the comparison with the champion.  Plots
are embedded as base64 PNG and the CSS is inline, so the file opens offline and shows in
the MLflow UI (``report/`` artifact of the run).

Two ways to fill :class:`ReportInputs`:

- :func:`inputs_from_run` / :func:`report_from_run`: from a finished MLflow run (its
  metrics, tags, params and artifacts), plus the event log it was trained on;
- :func:`inputs_from_training`: from the in-memory :class:`training.train.TrainResult` at
  the end of :func:`training.run.run_training`.

Then :func:`build_report` writes the page and :func:`log_report_to_mlflow` attaches it to
the run.  The page's sections are in :mod:`training.report_sections`; ``docs/REPORT.md``
says what each one shows and where its figures come from.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from training import report_sections as rs

if TYPE_CHECKING:
    from features.catalog import Catalog
    from features.ingest import IngestResult
    from serving.engine import DecisionEngine
    from training.train import TrainResult

__all__ = [
    "ChampionInfo",
    "QuarantineSummary",
    "ReportInputs",
    "build_report",
    "campaign_recommendations",
    "champion_info",
    "inputs_from_run",
    "inputs_from_training",
    "log_report_to_mlflow",
    "report_from_run",
]

Progress = Callable[[str], None]

#: At most this many customers get a campaign recommendation for the report (a seeded
#: random sample beyond it): the breakdowns are shares, a sample shows them as well.
MAX_CAMPAIGN_CUSTOMERS = 20_000


@dataclass(frozen=True)
class QuarantineSummary:
    """What ingestion set aside: input rows, quarantined rows, and how many per reason."""

    n_input: int
    n_quarantined: int
    reason_counts: Mapping[str, int] = field(default_factory=dict)
    n_duplicates: int = 0

    @property
    def share(self) -> float:
        return self.n_quarantined / self.n_input if self.n_input else 0.0

    @classmethod
    def from_ingest(cls, result: IngestResult) -> QuarantineSummary:
        """From ``features.ingest.read_events`` (or ``normalize_events``)."""
        return cls(
            n_input=int(result.n_input),
            n_quarantined=int(result.n_quarantined),
            reason_counts=dict(result.reason_counts),
            n_duplicates=int(result.n_duplicates),
        )


@dataclass(frozen=True)
class ChampionInfo:
    """The registry's current champion: its version, run, metrics and params."""

    version: str
    run_id: str
    metrics: Mapping[str, float]
    params: Mapping[str, str] = field(default_factory=dict)


@dataclass
class ReportInputs:
    """Everything the report reads.  Only ``events`` is required; every other part is
    optional and its section says "Not available: …" when it is missing.

    Attributes
    ----------
    events : DataFrame
        The canonical event table the run was trained on.
    customers : DataFrame, optional
        The customer table (segments for the recommendation breakdown).
    catalog : mapping, optional
        ``Catalog.to_dict()`` (the run's ``catalog.json``).
    metrics, tags, params : mappings
        The run's MLflow metrics, tags and (flattened) params.
    policy_table : DataFrame, optional
        ``policy_values.csv``: policy, estimator, value, ci_low, ci_high, ess, …
    truth_choices : DataFrame, optional
        ``truth_choices.csv``: customer_id, action (simulator runs).
    recommendations : DataFrame, optional
        ``DecisionEngine.recommendations_frame`` output (``customer_id, rank, action, …,
        suppressed``), e.g. from :func:`campaign_recommendations`.
    recommendations_time : Timestamp, optional
        When those recommendations were made.
    plots : mapping of str to bytes
        PNG bytes by artifact path (``plots/calibration.png`` …).
    quarantine : QuarantineSummary, optional
        From ingestion; None means unknown (not "nothing quarantined").
    feature_spec : mapping, optional
        ``FeatureSpec.to_dict()``: to rebuild the decision points for per-touchpoint rates.
    test_period : (Timestamp, Timestamp), optional
        The run's test period ``[start, end)``.
    champion : ChampionInfo, optional
        The champion to compare with.
    segment_column : str, optional
        The customer column for the segment breakdown (default: picked from the table).
    """

    events: pd.DataFrame
    customers: pd.DataFrame | None = None
    catalog: Mapping[str, Any] | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, str] = field(default_factory=dict)
    run_id: str | None = None
    experiment: str | None = None
    policy_table: pd.DataFrame | None = None
    truth_choices: pd.DataFrame | None = None
    recommendations: pd.DataFrame | None = None
    recommendations_time: pd.Timestamp | None = None
    plots: Mapping[str, bytes] = field(default_factory=dict)
    quarantine: QuarantineSummary | None = None
    feature_spec: Mapping[str, Any] | None = None
    test_period: tuple[pd.Timestamp, pd.Timestamp] | None = None
    champion: ChampionInfo | None = None
    segment_column: str | None = None
    title: str = "Touchpoint experiment report"


# --------------------------------------------------------------------------- filling inputs
def campaign_recommendations(
    engine: DecisionEngine,
    events: pd.DataFrame,
    customers: pd.DataFrame | None,
    *,
    max_customers: int = MAX_CAMPAIGN_CUSTOMERS,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.Timestamp]:
    """The new policy's first choice for (a sample of) all customers, as a batch campaign
    at noon on the day after the log ends, with the suppressions of the contact rules."""
    from serving.batch import recommend_batch
    from training.truth import CAMPAIGN_HOUR

    end = rs.data_end(events)
    campaign = end.normalize() + pd.Timedelta(hours=CAMPAIGN_HOUR)
    if campaign < end:
        campaign += pd.Timedelta(days=1)
    pool = [events["customer_id"].astype(str)]
    if customers is not None:
        pool.append(customers["customer_id"].astype(str))
    ids = np.asarray(pd.unique(pd.concat(pool, ignore_index=True)), dtype=object)
    if len(ids) > max_customers:
        rng = np.random.default_rng(seed)
        ids = np.sort(rng.choice(ids, size=max_customers, replace=False))
    batch = recommend_batch(engine, events, customers, campaign, ids=list(ids), top_k=1)
    return batch.recommendations, campaign


def champion_info(*, client: Any = None) -> ChampionInfo | None:
    """The current ``touchpoint@champion``, or None when there is none (or no registry)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from training import tracking

    client = client or MlflowClient()
    try:
        version = client.get_model_version_by_alias(tracking.MODEL_NAME, tracking.CHAMPION)
        run = client.get_run(version.run_id)
    except MlflowException:
        return None
    return ChampionInfo(
        version=str(version.version),
        run_id=str(version.run_id),
        metrics=dict(run.data.metrics),
        params=dict(run.data.params),
    )


def inputs_from_training(
    result: TrainResult,
    events: pd.DataFrame,
    customers: pd.DataFrame | None,
    catalog: Catalog,
    *,
    metrics: Mapping[str, float] | None = None,
    run_id: str | None = None,
    truth_choices: pd.DataFrame | None = None,
    quarantine: QuarantineSummary | None = None,
    champion: ChampionInfo | None = None,
    tags: Mapping[str, str] | None = None,
    params: Mapping[str, str] | None = None,
    recommend: bool = True,
) -> ReportInputs:
    """Inputs from the in-memory result of :func:`training.train.fit_and_evaluate`.

    ``metrics`` defaults to what the run logs (model, uplift, policy and count metrics);
    pass ``run_training``'s own dict to include the simulator's ``truth.*``.  The
    calibration, Qini and policy plots are drawn again from the result.
    """
    import matplotlib.pyplot as plt

    from training import plots
    from training.evaluation import summarize_policy_table

    if metrics is None:
        metrics = dict(result.metrics)
        metrics.update(summarize_policy_table(result.policy_table))
        metrics.update({f"count.{k}": float(v) for k, v in result.counts.items()})
    rounds, bundle = result.test_rounds, result.engine.bundle
    figures = {
        "plots/calibration.png": plots.calibration_figure(
            {
                "conversion": (
                    rounds.conversion,
                    bundle.conversion.predict_logged(rounds.X, rounds.action),
                ),
                "churn": (rounds.churn, bundle.churn.predict_logged(rounds.X, rounds.action)),
            }
        ),
        "plots/policy_comparison.png": plots.policy_figure(result.policy_table),
    }
    if result.qini_curves:
        figures["plots/qini_curves.png"] = plots.qini_figure(result.qini_curves)
    pngs = {}
    for key, fig in figures.items():
        pngs[key] = rs.fig_png(fig)
        plt.close(fig)
    recs, when = (
        campaign_recommendations(result.engine, events, customers) if recommend else (None, None)
    )
    return ReportInputs(
        events=events,
        customers=customers,
        catalog=catalog.to_dict(),
        metrics=dict(metrics),
        tags={"formulation": result.formulation, "best_single": result.best_single}
        | dict(tags or {}),
        params=dict(params or {}),
        run_id=run_id,
        policy_table=result.policy_table,
        truth_choices=truth_choices,
        recommendations=recs,
        recommendations_time=when,
        plots=pngs,
        quarantine=quarantine,
        feature_spec=result.spec.to_dict(),
        test_period=(result.split.test_start, result.split.test_end),
        champion=champion,
    )


def _download(run_id: str, path: str, dst: Path) -> Path | None:
    """One artifact of the run (file or folder), or None when the run does not have it."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=path, dst_path=str(dst)
        )
    except (MlflowException, OSError):
        return None
    out = Path(local)
    return out if out.exists() else None


def inputs_from_run(
    run_id: str,
    events: pd.DataFrame,
    customers: pd.DataFrame | None = None,
    *,
    quarantine: QuarantineSummary | None = None,
    recommend: bool = True,
    progress: Progress = lambda _msg: None,
) -> ReportInputs:
    """Inputs from a finished MLflow run (tracking URI as ``touchpoint`` configures it).

    Reads the run's metrics, tags and params, and the artifacts ``catalog.json``,
    ``feature_spec.json``, ``policy_values.csv``, ``truth_choices.csv``, ``plots/*.png``
    and ``bundle/`` (for the test period and, with ``recommend``, a campaign at the end of
    the data that shows what the policy recommends and what the contact rules suppress).
    """
    from mlflow.tracking import MlflowClient

    from training import tracking

    tracking.configure_uri_only()
    client = MlflowClient()
    run = client.get_run(run_id)
    experiment = client.get_experiment(run.info.experiment_id)
    with tempfile.TemporaryDirectory(prefix="touchpoint-report-") as tmp:
        dst = Path(tmp)
        progress(f"reading the artifacts of run {run_id}")

        def read_json(name: str) -> Mapping[str, Any] | None:
            p = _download(run_id, name, dst)
            return json.loads(p.read_text(encoding="utf-8")) if p else None

        def read_csv(name: str) -> pd.DataFrame | None:
            p = _download(run_id, name, dst)
            return pd.read_csv(p) if p else None

        catalog = read_json("catalog.json")
        spec = read_json("feature_spec.json")
        policy_table = read_csv("policy_values.csv")
        truth = read_csv("truth_choices.csv")
        plots_dir = _download(run_id, "plots", dst)
        pngs = (
            {f"plots/{p.name}": p.read_bytes() for p in sorted(plots_dir.glob("*.png"))}
            if plots_dir
            else {}
        )
        test_period = None
        recs, when = None, None
        bundle_dir = _download(run_id, "bundle", dst)
        if bundle_dir is not None and (bundle_dir / "bundle.json").is_file():
            from serving.bundle import load_bundle
            from serving.engine import DecisionEngine

            bundle = load_bundle(bundle_dir)
            split = dict(bundle.metadata.get("split") or {})
            if "test_start" in split and "test_end" in split:
                test_period = (pd.Timestamp(split["test_start"]), pd.Timestamp(split["test_end"]))
            if recommend:
                progress("recommending for a campaign at the end of the data")
                recs, when = campaign_recommendations(DecisionEngine(bundle), events, customers)
    return ReportInputs(
        events=events,
        customers=customers,
        catalog=catalog,
        metrics=dict(run.data.metrics),
        tags=dict(run.data.tags),
        params=dict(run.data.params),
        run_id=run_id,
        experiment=experiment.name if experiment else None,
        policy_table=policy_table,
        truth_choices=truth,
        recommendations=recs,
        recommendations_time=when,
        plots=pngs,
        quarantine=quarantine,
        feature_spec=spec,
        test_period=test_period,
        champion=champion_info(client=client),
    )


def report_from_run(
    run_id: str,
    events: pd.DataFrame,
    customers: pd.DataFrame | None,
    out_path: str | Path,
    *,
    quarantine: QuarantineSummary | None = None,
    log_to_run: bool = False,
    progress: Progress = lambda _msg: None,
) -> Path:
    """Build the report of a finished run; optionally attach it to the run (``report/``)."""
    inputs = inputs_from_run(run_id, events, customers, quarantine=quarantine, progress=progress)
    path = build_report(inputs, out_path, progress=progress)
    if log_to_run:
        log_report_to_mlflow(path, run_id=run_id)
    return path


# --------------------------------------------------------------------------- the page
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
 color:#1f2933;background:#f5f7fa;margin:0;line-height:1.45;font-size:15px}
main{max-width:1280px;margin:0 auto;padding:24px 32px 64px}
header{background:#1f3a5f;color:#fff;padding:22px 32px}
header h1{margin:0 0 6px;font-size:26px}
header p{margin:2px 0;color:#d6e2f0}
nav{background:#fff;border-bottom:1px solid #d9e2ec;padding:10px 32px;position:sticky;top:0;z-index:2}
nav a{margin-right:18px;color:#1f3a5f;text-decoration:none;font-weight:600;white-space:nowrap}
section{background:#fff;border:1px solid #d9e2ec;border-radius:8px;padding:8px 24px 20px;margin:22px 0}
h2{font-size:22px;color:#1f3a5f;border-bottom:2px solid #e4ebf3;padding-bottom:6px}
h3{font-size:17px;margin:22px 0 8px;color:#243b53}
h4{font-size:15px;margin:16px 0 6px;color:#334e68}
table{border-collapse:collapse;margin:10px 0 16px;font-size:13.5px}
th{background:#eef2f7;text-align:left;padding:6px 10px;border-bottom:2px solid #cbd5e0;vertical-align:bottom}
td{padding:5px 10px;border-bottom:1px solid #e4ebf3}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.hl td{font-weight:600;background:#fff7e6}
caption{text-align:left;font-weight:600;padding:4px 0}
figure{margin:14px 0;padding:0}
figure img{max-width:100%;height:auto;border:1px solid #e4ebf3;border-radius:4px}
.plot-title{font-weight:600;font-size:15px;margin-bottom:6px}
.howto{color:#486581;font-size:13.5px;margin:6px 0 0}
.na{color:#8a4b08;background:#fff8e1;border-left:4px solid #f0b429;padding:8px 12px}
.error{color:#9b1c1c;background:#fdecea;border-left:4px solid #d64545;padding:8px 12px}
.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:20px;align-items:start}
dl.facts{display:flex;flex-wrap:wrap;gap:12px;margin:12px 0}
dl.facts div{background:#f0f4f8;border-radius:6px;padding:8px 14px;min-width:150px}
dt{font-size:12px;color:#627d98;text-transform:uppercase;letter-spacing:.03em}
dd{margin:2px 0 0;font-size:19px;font-weight:600}
.summary{background:#e8f1fb;border-left:5px solid #1f3a5f;padding:12px 16px;margin-top:20px;font-size:16px}
footer{color:#829ab1;font-size:12px;text-align:center;margin-top:30px}
"""


def render_html(inputs: ReportInputs, progress: Progress = lambda _msg: None) -> str:
    """The whole page as a string; a section that fails shows its error, the rest goes on."""
    sections: list[rs.Section] = []
    for anchor, title, build in rs.SECTIONS:
        progress(f"report: {title.lower()}")
        try:
            sections.append(build(inputs))
        except Exception as exc:  # one broken section must not lose the whole report
            body = (
                f'<p class="error">This section could not be built: '
                f"{rs.esc(type(exc).__name__)}: {rs.esc(exc)}</p>"
            )
            sections.append(rs.Section(anchor, title, body))
    nav = "".join(f'<a href="#{s.id}">{rs.esc(s.title)}</a>' for s in sections)
    body = "".join(
        f'<section id="{s.id}"><h2>{rs.esc(s.title)}</h2>{s.body}</section>' for s in sections
    )
    sub = []
    if inputs.run_id:
        sub.append(f"MLflow run {inputs.run_id}")
    if inputs.experiment:
        sub.append(f"experiment {inputs.experiment}")
    for tag, label in (
        ("formulation", "model formulation"),
        ("best_single", "best single touchpoint"),
    ):
        if tag in inputs.tags:
            sub.append(f"{label}: {inputs.tags[tag]}")
    refit_rows = inputs.metrics.get("count.rows_refit")
    if refit_rows is not None:  # touchpoint train --refit pre-test (docs/TRAINING.md)
        sub.append(f"refit on the {refit_rows:,.0f} decision points before the test period")
    created = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{rs.esc(inputs.title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{rs.esc(inputs.title)}</h1>"
        f"<p>{rs.esc(' · '.join(sub) or 'not linked to an MLflow run')}</p>"
        f"<p>Created {created}. Everything is on this page; it works offline.</p></header>"
        f"<nav>{nav}</nav><main>{rs.summary_html(inputs)}{body}"
        "<footer>Made by touchpoint (training/report.py).</footer></main></body></html>"
    )


def build_report(
    inputs: ReportInputs, out_path: str | Path, *, progress: Progress = lambda _msg: None
) -> Path:
    """Write the self-contained HTML report to ``out_path`` and return the path."""
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(inputs, progress), encoding="utf-8")
    return out


def log_report_to_mlflow(path: str | Path, *, run_id: str | None = None) -> None:
    """Attach the report to the active run (or to ``run_id``) under ``report/``."""
    import mlflow
    from mlflow.tracking import MlflowClient

    if run_id is None:
        mlflow.log_artifact(str(path), artifact_path="report")
    else:
        MlflowClient().log_artifact(run_id, str(path), artifact_path="report")
