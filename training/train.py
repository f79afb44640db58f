"""The training pipeline: features → labels → split → models → evaluation → bundle.

:func:`fit_and_evaluate` does the work and returns everything it measured;
:mod:`training.run` wraps it in an MLflow run (params, metrics, plots, registry).  Keeping
the two apart lets tests and notebooks train without touching MLflow.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from features.catalog import Catalog
from features.pipeline import build_feature_table
from features.schema import NO_ACTION
from features.spec import MIN_NONE_PER_CUSTOMER, FeatureSpec
from features.stages import StageRules
from serving.bundle import load_bundle, save_bundle
from serving.engine import DecisionEngine
from serving.scoring import Formulation, OffsetScale, OutcomeScorer
from training.datasets import TimeSplit, make_time_split
from training.effect_features import OffsetInteractions, effect_features
from training.effect_scale import EffectScale, conversion_effect_scale
from training.engagement import engagement_labels, fit_engagement
from training.evaluation import (
    LoggedRounds,
    choose_best_single_action,
    logged_rounds,
    model_quality,
    none_weight,
    policy_value_table,
    uplift_quality,
)
from training.labels import LabelWindows, label_decisions
from training.models import (
    DEFAULT_EARLY_STOPPING,
    DEFAULT_ROUNDS,
    NEGATIVE_KEEP,
    FitReport,
    SideJobSignals,
    fit_outcome_models,
)
from training.offset_bagging import OFFSET_MEMBERS
from training.promotion import grade_policies
from training.propensity import cross_fitted_distribution
from training.refit import REFIT_ROUNDS_MULTIPLIER, pre_test_rows, refit_outcomes

Progress = Callable[[str], None]
FormulationChoice = Literal["single", "per_action", "offset", "shared_offset", "compare"]


#: What ``--formulation compare`` fits, every formulation, in this order: the first fits
#: beside the propensity model (``fit_outcome_models``' side job).
COMPARED_FORMULATIONS: tuple[Formulation, ...] = ("shared_offset", "single", "per_action", "offset")
#: The shared offset's scale by default (TrainConfig.offset_scale).  ``probability``: an
#: action's effect is a change of probability that does not scale with the base's
#: ``p (1 - p)``.  Measured with ``bench/bench_policy.py --offset-scale`` on eight
#: simulated worlds (docs/TRAINING.md, "The offset's scale").
OFFSET_SCALE: OffsetScale = "probability"


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run; all of it is logged to MLflow."""

    formulation: FormulationChoice = "shared_offset"
    seed: int = 0
    num_rounds: int = DEFAULT_ROUNDS
    early_stopping: int = DEFAULT_EARLY_STOPPING
    #: Share of each outcome's negative rows its boosters train on, weighted back
    #: (training.models.negative_sample); 1.0 trains on every row.
    negative_keep: float = NEGATIVE_KEEP
    #: What the shared offset booster (the action effects) may split on: ``effects``
    #: (training.effect_features: attributes, channel rates, fatigue; the default, by
    #: measurement: docs/TRAINING.md) or ``all`` features.
    offset_features: Literal["all", "effects"] = "effects"
    #: How the shared offset booster's trees may combine its features: ``pairwise`` (each
    #: branch splits on the action and one other feature: an additive effect per action;
    #: the default, by measurement: docs/TRAINING.md) or ``free``.
    offset_interactions: OffsetInteractions = "pairwise"
    #: ``on``: the shared offset booster also reads the candidate action's engagement, the
    #: chance it is opened or clicked (serving/engagement.py; the default, by measurement:
    #: docs/TRAINING.md, "Engagement"); ``off``: it does not.
    engagement: Literal["on", "off"] = "on"
    #: How the shared offset adds an action's effect to the base (serving/scoring.py):
    #: ``probability`` (the default, by measurement: docs/TRAINING.md, "The offset's
    #: scale") or ``log_odds``.  A bag (``offset_members`` > 1) needs ``log_odds``.
    offset_scale: OffsetScale = OFFSET_SCALE
    #: How many times the model's conversion uplift the policy weighs (serving/engine.py):
    #: ``auto`` estimates it from the training rows (training/effect_scale.py: the logged
    #: label's effects are diluted by the logging policy's follow-up sends; the default, by
    #: measurement: docs/TRAINING.md, "One send's own effect"); a number > 0 fixes it (1:
    #: the model's effects as they are).
    conversion_effect_scale: float | Literal["auto"] = "auto"
    #: Boosters averaged in the shared offset, each on its own negative subsample
    #: (training/offset_bagging.py; by measurement: docs/TRAINING.md); 1: one booster.
    offset_members: int = OFFSET_MEMBERS
    #: ``pre-test``: once early stopping has chosen the rounds, refit the shared_offset
    #: boosters on every row decided before the test period (training/refit.py); the test
    #: figures stay out of sample.  ``none``: ship the split fit.
    refit: Literal["none", "pre-test"] = "none"
    none_per_send: float = 1.0
    #: "No action" moments each customer gets before the rest are spread by span
    #: (FeatureSpec.min_none_per_customer).  2 keeps the measured defaults; 0 samples
    #: customer-time uniformly, which the churn effects need (docs/TRAINING.md).
    min_none_per_customer: int = MIN_NONE_PER_CUSTOMER
    train_share: float = 0.6
    valid_share: float = 0.15
    n_bootstrap: int = 500
    max_train_rows: int = 1_000_000
    lgb_params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        k = self.conversion_effect_scale
        if k != "auto" and not (isinstance(k, int | float) and np.isfinite(k) and k > 0):
            raise ValueError(f"conversion_effect_scale must be 'auto' or a number > 0, got {k!r}")


@dataclass
class TrainResult:
    """What a run produced and measured."""

    bundle_dir: Path
    spec: FeatureSpec
    split: TimeSplit
    counts: dict[str, int]
    fit_reports: dict[str, FitReport]
    formulation: str
    formulation_comparison: dict[str, float]
    metrics: dict[str, float]
    policy_table: pd.DataFrame
    best_single: str
    qini_curves: dict[str, tuple[np.ndarray, np.ndarray]]
    test_rounds: LoggedRounds
    test_decisions: pd.DataFrame
    engine: DecisionEngine


def _offset_features(config: TrainConfig, formulation: str, spec: FeatureSpec) -> list[str] | None:
    """The offset booster's features (None: all), for the formulations that have one."""
    if config.offset_features == "all" or formulation != "shared_offset":
        return None
    return effect_features(spec.feature_names)


def _offset_interactions(config: TrainConfig, formulation: str) -> OffsetInteractions:
    """The offset booster's interactions, for the formulations that have one."""
    return config.offset_interactions if formulation == "shared_offset" else "free"


def feature_spec_for(
    events: pd.DataFrame, customers: pd.DataFrame | None, catalog: Catalog, config: TrainConfig
) -> FeatureSpec:
    """The feature spec: the catalog's channels, and the contact-policy window among the
    feature windows (the contact rules read their counts off the features)."""
    windows = tuple(sorted({7, 30, 90, catalog.contact_policy.window_days}))
    return FeatureSpec.from_data(
        events,
        customers,
        channels=catalog.channels,
        windows_days=windows,
        stage_rules=StageRules.from_dict(dict(catalog.journey or {})),
        none_per_send=config.none_per_send,
        min_none_per_customer=config.min_none_per_customer,
        seed=config.seed,
    )


def fit_and_evaluate(
    events: pd.DataFrame,
    customers: pd.DataFrame | None,
    catalog: Catalog,
    config: TrainConfig,
    *,
    bundle_dir: Path,
    model_version: str,
    progress: Progress = lambda _msg: None,
) -> TrainResult:
    """Train the conversion and churn models and evaluate the serving policy on test."""
    spec = feature_spec_for(events, customers, catalog, config)
    progress(f"building {spec.n_features} point-in-time features")
    table = build_feature_table(events, customers, spec)
    counts: dict[str, int] = {"events": len(events), "decision_points": len(table)}

    actions = (NO_ACTION, *catalog.action_ids)
    known = table["action"].astype(str).isin(actions)
    counts["dropped_unknown_action"] = int((~known).sum())
    if counts["dropped_unknown_action"]:
        progress(
            f"dropped {counts['dropped_unknown_action']:,} sends of actions not in the catalog"
        )
    table = table.loc[known].reset_index(drop=True)

    windows = LabelWindows.from_catalog(catalog)
    labels = label_decisions(events, table, windows)
    counts["dropped_censored"] = int(labels["censored"].sum())
    progress(
        f"labels: {counts['dropped_censored']:,} right-censored decision points dropped "
        f"(label window {windows.lookahead_days} days)"
    )
    keep = ~labels["censored"].to_numpy()
    table, labels = table.loc[keep].reset_index(drop=True), labels.loc[keep].reset_index(drop=True)

    split = make_time_split(
        table["decision_time"],
        gap_days=windows.lookahead_days,
        train_share=config.train_share,
        valid_share=config.valid_share,
    )
    part = split.assign(table["decision_time"]).to_numpy()
    codes = pd.Categorical(table["action"].astype(str), categories=actions).codes.astype(np.int64)
    X = table[list(spec.feature_names)].to_numpy(dtype=np.float64)
    y_conv = labels["conversion"].to_numpy(dtype=np.float64)
    y_churn = labels["churn"].to_numpy(dtype=np.float64)

    train_idx = _cap_rows(np.flatnonzero(part == "train"), config.max_train_rows, config.seed)
    effect_scale = policy_effect_scale(config, labels, codes, train_idx, progress)
    valid_idx, test_idx = np.flatnonzero(part == "valid"), np.flatnonzero(part == "test")
    for name, idx in (("train", train_idx), ("valid", valid_idx), ("test", test_idx)):
        counts[f"rows_{name}"] = len(idx)
    progress(
        f"split: {len(train_idx):,} train / {len(valid_idx):,} valid / {len(test_idx):,} test "
        f"decision points ({split.gap_days}-day gaps)"
    )

    X_train, X_valid = X[train_idx], X[valid_idx]  # once: ~1 GB per copy at 800k rows
    # The logging policy's distribution on the validation and test rows, each cross-fitted
    # on its own rows (training/propensity.py: a model of the training period misjudges the
    # later ones).  Fitted beside the first formulation's outcome models, on the core the
    # shorter chain leaves idle (fit_outcome_models' side_job): a chain's LightGBM threads
    # (one) while the other chain trains, all of them once both chains are done (on a small log the
    # chains end long before it); the same models either way.
    logging_dist: dict[str, np.ndarray] = {}

    def fit_propensity(signals: SideJobSignals) -> None:
        for name, idx, X_part in (("valid", valid_idx, X_valid), ("test", test_idx, None)):
            started = time.perf_counter()
            logging_dist[name], fold_rounds = cross_fitted_distribution(
                X[idx] if X_part is None else X_part,
                codes[idx],
                table["customer_id"].to_numpy()[idx],
                n_actions=len(actions),
                seed=config.seed,
                num_threads=signals.chain_threads,
                more_threads=signals.chains_done,
                threads_then=signals.num_threads,
                stop=signals.failed,
            )
            progress(
                f"  propensity on the {name} rows, cross-fitted by customer: "
                f"{'/'.join(map(str, fold_rounds))} rounds, {time.perf_counter() - started:.1f} s"
            )

    def rounds(name: str, idx: np.ndarray) -> LoggedRounds:
        return logged_rounds(
            X, table["decision_time"], codes, y_conv, y_churn, idx, logging_dist[name]
        )

    candidates = (
        list(COMPARED_FORMULATIONS) if config.formulation == "compare" else [config.formulation]
    )
    engagement = None
    if config.engagement == "on" and "shared_offset" in candidates:
        progress("fitting the engagement model (the sends' opens and clicks)")
        engaged = engagement_labels(events, table, {a.id: a.channel for a in catalog.actions})
        engagement = fit_engagement(
            X_train, codes[train_idx], engaged[train_idx],
            X_valid, codes[valid_idx], engaged[valid_idx],
            feature_names=list(spec.feature_names), actions=actions, catalog=catalog,
            seed=config.seed, progress=progress,
        )  # fmt: skip
        counts["engaged_sends_train"] = int(engaged[train_idx].sum())
    fitted: dict[str, tuple[OutcomeScorer, OutcomeScorer, dict[str, FitReport]]] = {}
    comparison: dict[str, float] = {}
    for i, formulation in enumerate(candidates):
        progress(
            f"fitting conversion and churn models ({formulation} formulation)"
            + ("" if i else " and the logging-policy (propensity) model")
        )
        # Both outcomes in one call: the same models as one fit per outcome, but LightGBM
        # bins the training and validation features once for both.
        fits = fit_outcome_models(
            X_train,
            codes[train_idx],
            {"conversion": y_conv[train_idx], "churn": y_churn[train_idx]},
            X_valid,
            codes[valid_idx],
            {"conversion": y_conv[valid_idx], "churn": y_churn[valid_idx]},
            actions=actions,
            formulation=formulation,
            params=config.lgb_params,
            num_rounds=config.num_rounds,
            early_stopping=config.early_stopping,
            seed=config.seed,
            feature_names=list(spec.feature_names),
            negative_keep=config.negative_keep,
            offset_features=_offset_features(config, formulation, spec),
            offset_members=config.offset_members,
            offset_interactions=_offset_interactions(config, formulation),
            engagement=engagement if formulation == "shared_offset" else None,
            offset_scale=config.offset_scale if formulation == "shared_offset" else "log_odds",
            side_job=None if i else fit_propensity,
            progress=progress,  # binning and each booster, as they finish
        )
        scorers = [fits["conversion"][0], fits["churn"][0]]
        reports = {target: report for target, (_scorer, report) in fits.items()}
        fitted[formulation] = (scorers[0], scorers[1], reports)
        if i == 0:  # the propensity model has been fitted (the side job)
            valid_rounds, test_rounds = rounds("valid", valid_idx), rounds("test", test_idx)
    if len(candidates) > 1:
        # Every candidate's policy graded on validation by the same reward estimates (the
        # mean of all the candidates'), so none grades its own choices (training/promotion.py).
        engines = {
            f: _engine(conv, churn_, spec, catalog, bundle_dir, model_version, effect_scale.scale)
            for f, (conv, churn_, _reports) in fitted.items()
        }
        graded = grade_policies(
            {f: (engine, valid_rounds.X) for f, engine in engines.items()},
            valid_rounds,
            reference=engines[candidates[0]],
            seed=config.seed,
        )
        assert graded is not None  # the candidates serve the same actions
        for name, value in graded.items():
            comparison[f"formulation.{name}.valid_dr"] = value
            progress(f"  {name}: validation DR policy value {value:.4f}")
    chosen = (
        max(candidates, key=lambda f: comparison[f"formulation.{f}.valid_dr"])
        if len(candidates) > 1
        else candidates[0]
    )
    conversion, churn, fit_reports = fitted[chosen]
    progress(f"chosen formulation: {chosen}")
    if config.refit == "pre-test":
        if chosen == "shared_offset":
            conversion, churn = _refit_before_test(
                X, codes, y_conv, y_churn, table["decision_time"], split,
                (conversion, churn), fit_reports, spec, config, counts, progress,
            )  # fmt: skip
        else:
            progress(f"refit: skipped, only the shared_offset formulation refits ({chosen})")

    save_bundle(
        bundle_dir,
        model_version=model_version,
        spec=spec,
        catalog=catalog,
        conversion=conversion,
        churn=churn,
        metadata={
            "formulation": chosen,
            "split": split.to_dict(),
            "seed": config.seed,
            "refit": config.refit if "rows_refit" in counts else "none",
            "engagement": conversion.engagement is not None,
            "offset_scale": conversion.offset_scale,
            "conversion_effect_scale": effect_scale.scale,
            # None, not NaN, where there is no raw ratio: bundle.json stays strict JSON.
            "conversion_effect_scale_raw": (
                effect_scale.raw if np.isfinite(effect_scale.raw) else None
            ),
        },
        conversion_effect_scale=effect_scale.scale,
    )
    # Evaluate the bundle as serving will load it, not the in-memory objects.
    engine = DecisionEngine(load_bundle(bundle_dir))

    progress("evaluating on the test period")
    metrics = model_quality(engine, test_rounds)
    uplift_metrics_, curves = uplift_quality(engine, test_rounds)
    metrics.update(uplift_metrics_)
    metrics["propensity.none_weight"] = none_weight(test_rounds)
    metrics["policy.conversion_effect_scale"] = effect_scale.scale
    metrics["policy.conversion_effect_scale.raw"] = effect_scale.raw
    best_single = choose_best_single_action(engine, valid_rounds, seed=config.seed)
    policy_table = policy_value_table(
        engine,
        test_rounds,
        best_single=best_single,
        n_bootstrap=config.n_bootstrap,
        seed=config.seed,
    )
    test_decisions = table.loc[test_idx, ["customer_id", "decision_time", "action"]]
    return TrainResult(
        bundle_dir=bundle_dir,
        spec=spec,
        split=split,
        counts=counts,
        fit_reports=fit_reports,
        formulation=chosen,
        formulation_comparison=comparison,
        metrics=metrics,
        policy_table=policy_table,
        best_single=engine.actions[best_single],
        qini_curves=curves,
        test_rounds=test_rounds,
        test_decisions=test_decisions.reset_index(drop=True),
        engine=engine,
    )


def _refit_before_test(
    X: np.ndarray,
    codes: np.ndarray,
    y_conv: np.ndarray,
    y_churn: np.ndarray,
    decision_time: pd.Series,
    split: TimeSplit,
    split_fit: tuple[OutcomeScorer, OutcomeScorer],
    reports: dict[str, FitReport],
    spec: FeatureSpec,
    config: TrainConfig,
    counts: dict[str, int],
    progress: Progress,
) -> tuple[OutcomeScorer, OutcomeScorer]:
    """The split fit's boosters refit on the rows decided before the test period
    (training/refit.py), each keeping the split fit's calibration (chosen on validation
    rows out of sample; they are in the refit)."""
    idx = _cap_rows(pre_test_rows(decision_time, split), config.max_train_rows, config.seed)
    counts["rows_refit"] = len(idx)
    progress(
        f"refitting on {len(idx):,} decision points before the test period "
        f"(train, gap and validation; rounds x {REFIT_ROUNDS_MULTIPLIER})"
    )
    started = time.perf_counter()
    refitted = refit_outcomes(
        X,
        codes,
        {"conversion": y_conv, "churn": y_churn},
        reports,
        rows=idx,
        actions=split_fit[0].actions,
        params=config.lgb_params,
        seed=config.seed,
        feature_names=list(spec.feature_names),
        negative_keep=config.negative_keep,
        offset_features=_offset_features(config, "shared_offset", spec),
        offset_interactions=config.offset_interactions,
        engagement=split_fit[0].engagement,
        offset_scale=split_fit[0].offset_scale,
    )
    for scorer, (target, new) in zip(split_fit, refitted.items(), strict=True):
        new.calibration = scorer.calibration
        trees = {key: booster.num_trees() for key, booster in new.boosters.items()}
        progress(f"  {target}: {trees} trees")
    progress(f"  refit: {time.perf_counter() - started:.1f} s")
    return refitted["conversion"], refitted["churn"]


def _engine(
    conversion: OutcomeScorer,
    churn: OutcomeScorer,
    spec: FeatureSpec,
    catalog: Catalog,
    bundle_dir: Path,
    model_version: str,
    conversion_effect_scale: float,
) -> DecisionEngine:
    from serving.bundle import Bundle

    return DecisionEngine(
        Bundle(
            path=bundle_dir,
            model_version=model_version,
            actions=conversion.actions,
            spec=spec,
            catalog=catalog,
            conversion=conversion,
            churn=churn,
            conversion_effect_scale=conversion_effect_scale,
        )
    )


def policy_effect_scale(
    config: TrainConfig,
    labels: pd.DataFrame,
    codes: np.ndarray,
    train_idx: np.ndarray,
    progress: Progress,
) -> EffectScale:
    """The policy's conversion effect scale: fixed by the config, or estimated on the
    training rows ``train_idx`` of ``labels`` and ``codes`` (training/effect_scale.py).
    ``bench/bench_policy.py`` calls it too."""
    if config.conversion_effect_scale != "auto":
        k = float(config.conversion_effect_scale)
        progress(f"conversion effect scale: {k:g} (fixed)")
        return EffectScale(k, float("nan"), float("nan"), float("nan"), "fixed")
    found = conversion_effect_scale(
        labels["conversion"].to_numpy()[train_idx],
        labels["conversion_before_send"].to_numpy()[train_idx],
        codes[train_idx],
    )
    progress(
        f"conversion effect scale: {found.scale:.3f} (send minus no action on the training "
        f"rows: {found.before_send_difference:+.4f} before the next send, "
        f"{found.logged_difference:+.4f} within the horizon"
        + (f"; {found.note})" if found.note else ")")
    )
    return found


def _cap_rows(idx: np.ndarray, cap: int, seed: int) -> np.ndarray:
    """A seeded random subset of at most ``cap`` training rows (kept in time order)."""
    if len(idx) <= cap:
        return idx
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(idx, size=cap, replace=False))
