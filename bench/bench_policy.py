"""How close each model formulation gets to the oracle, by the simulator's ground truth.

Usage::

    python bench/bench_policy.py --customers 10000 --days 300 --seed 0 \
        --formulations shared_offset,single,offset,per_action

Simulates a world (or reuses ``--data DIR`` from ``touchpoint simulate``), builds the
decision-point table once, then for each formulation fits the conversion and churn models
on the training part of the time split and lets the serving engine recommend for the
held-out customers at the end of the history (the ``touchpoint recommend`` path).  It
prints, per formulation, the oracle fraction ``(V(policy) - V(none)) / (V(oracle) -
V(none))``, the seconds spent fitting, and the action mix, next to the best single action
and the attribute policy computed from the ground truth itself; then, per action, the mean
estimated and true effect on P(conversion) and P(churn) against no action and their
correlation across customers, and the oracle fraction the policy would reach with some
of its effects taken from the truth (where it loses value).  ``--conversion-label before_send`` (and ``--churn-label``)
fit the models on the labels stopped at the next send (``training/labels.py``);
``--offset-features`` says what the shared offset booster may split on (by default, as in
``touchpoint train``, only ``training.effect_features``; ``all``: every feature),
``--offset-interactions`` how its trees may combine them (by default, as in ``touchpoint
train``, ``pairwise``: the action and one other feature per branch; ``free``),
``--offset-members`` how many boosters its bag averages (``training/offset_bagging.py``),
``--engagement off`` leaves out its engagement column (``serving/engagement.py``; by
default, as in ``touchpoint train``, ``on``), ``--offset-scale`` says whether the offset
adds to the base's probability or to its log-odds (``serving/scoring.py``; by default as
in ``touchpoint train``, ``training.train.OFFSET_SCALE``),
``--conversion-effect-scale`` how many times the model's conversion uplift the policy
weighs (by default, as in ``touchpoint train``, estimated on the training rows:
``training/effect_scale.py``; the "effects taken from the truth" lines weigh the model's
conversion effects the same way and the truth's at 1, and the last of them score the
model's unscaled conversion uplift resized by each factor of ``CONVERSION_SWEEP``), and
``--refit all`` (or ``--refit-all``) refits it on every labelled row and ``--refit pre-test``
on the rows before the test period, as ``touchpoint train --refit pre-test`` does
(``training/refit.py``).  The measurements are in docs/TRAINING.md, "What limits the
policy".
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from features.catalog import load_catalog  # noqa: E402
from features.ingest import read_customers, read_events  # noqa: E402
from features.pipeline import build_feature_table  # noqa: E402
from features.schema import NO_ACTION  # noqa: E402
from features.spec import MIN_NONE_PER_CUSTOMER  # noqa: E402
from serving.batch import BatchResult, recommend_batch  # noqa: E402
from serving.bundle import Bundle  # noqa: E402
from serving.engine import DecisionEngine  # noqa: E402
from serving.policy import expected_values as action_values  # noqa: E402
from serving.policy import greedy  # noqa: E402
from touchpoint.cli import effect_scale  # noqa: E402
from training.datasets import make_time_split  # noqa: E402
from training.effect_features import effect_features  # noqa: E402
from training.engagement import engagement_labels, fit_engagement  # noqa: E402
from training.labels import (  # noqa: E402
    CHURN_LABELS,
    CONVERSION_LABELS,
    LabelWindows,
    label_decisions,
)
from training.models import fit_outcome_model  # noqa: E402
from training.offset_bagging import OFFSET_MEMBERS  # noqa: E402
from training.refit import pre_test_rows, refit_shared_offset  # noqa: E402
from training.simulator import (  # noqa: E402
    attribute_policy_choices,
    best_single_action_choices,
    oracle_fraction,
    simulate,
    write_simulation,
)
from training.simulator_eval import expected_values  # noqa: E402
from training.train import (  # noqa: E402
    OFFSET_SCALE,
    TrainConfig,
    feature_spec_for,
    policy_effect_scale,
)
from training.truth import campaign_moment, simulated_truth  # noqa: E402

#: The sizes of the model's conversion uplift the "effects" lines also score (docs/TRAINING.md,
#: "One send's own effect").
CONVERSION_SWEEP = (1.0, 1.25, 1.5, 2.0, 2.5, 3.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="a folder written by touchpoint simulate")
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--formulations", default="shared_offset,single,offset,per_action")
    parser.add_argument(
        "--none-per-send", type=float, default=1.0, help="sampled no-send moments per send"
    )
    parser.add_argument(
        "--min-none-per-customer",
        type=int,
        default=MIN_NONE_PER_CUSTOMER,
        help="no-send moments every customer gets before the rest are spread by span "
        f"(default {MIN_NONE_PER_CUSTOMER}, as in touchpoint train; 0: customer-time uniformly)",
    )
    parser.add_argument(
        "--conversion-label",
        choices=sorted(CONVERSION_LABELS),
        default="logged",
        help="label of the conversion model: logged (purchase within the horizon, default) "
        "or before_send (stopped at the next send); see training/labels.py",
    )
    parser.add_argument(
        "--churn-label",
        choices=sorted(CHURN_LABELS),
        default="logged",
        help="label of the churn model: logged (default) or before_send",
    )
    parser.add_argument(
        "--offset-features",
        choices=("all", "effects"),
        default="effects",
        help="what the shared offset booster may split on besides the action: "
        "training.effect_features (attributes, channel rates, fatigue, presence; the default, "
        "as in touchpoint train) or every feature",
    )
    parser.add_argument(
        "--offset-interactions",
        choices=("pairwise", "free"),
        default="pairwise",
        help="shared_offset: each branch of an offset tree splits on the action and one "
        "other feature (pairwise, the default, as in touchpoint train) or on any (free)",
    )
    parser.add_argument(
        "--offset-scale",
        choices=("probability", "log_odds"),
        default=OFFSET_SCALE,
        help="shared_offset: the offset adds an action's effect to the base's probability "
        f"or to its log-odds (default {OFFSET_SCALE}, as in touchpoint train)",
    )
    parser.add_argument(
        "--conversion-effect-scale",
        type=effect_scale,
        default="auto",
        help="how many times the model's conversion uplift the policy weighs (default auto, "
        "as in touchpoint train: estimated on the training rows, training/effect_scale.py; "
        "1: the model's uplift as it is)",
    )
    parser.add_argument(
        "--engagement",
        choices=("on", "off"),
        default="on",
        help="shared_offset: the offset also reads the candidate's engagement, its chance to "
        "be opened or clicked (on, the default, as in touchpoint train; serving/engagement.py)",
    )
    parser.add_argument(
        "--offset-members",
        type=int,
        default=OFFSET_MEMBERS,
        help="shared_offset: boosters averaged in the offset (default, as in touchpoint "
        f"train: {OFFSET_MEMBERS}; 1: the early-stopped booster alone; "
        "training/offset_bagging.py)",
    )
    parser.add_argument(
        "--refit",
        choices=("none", "all", "pre-test"),
        default="none",
        help="shared_offset: refit on every labelled row (all) or on the rows whose labels "
        "end before the test period (pre-test), with the split's rounds x "
        "training.refit.REFIT_ROUNDS_MULTIPLIER (training/refit.py)",
    )
    parser.add_argument(
        "--refit-all",
        action="store_true",
        help="shared_offset: refit on every labelled row with the split's rounds x "
        "training.refit.REFIT_ROUNDS_MULTIPLIER (training/refit.py)",
    )
    args = parser.parse_args()

    data = Path(args.data) if args.data else Path(tempfile.mkdtemp(prefix="bench-policy-"))
    if not (data / "events.parquet").exists():
        print(f"simulating {args.customers} customers x {args.days} days (seed {args.seed})")
        sim = simulate(n_customers=args.customers, days=args.days, seed=args.seed)
        write_simulation(sim, data)
    events = read_events(data / "events.parquet").events
    customers = read_customers(data / "customers.parquet").customers
    catalog = load_catalog(data / "catalog.yaml")
    truth = pd.read_parquet(data / "ground_truth.parquet")

    config = TrainConfig(
        seed=args.seed,
        none_per_send=args.none_per_send,
        min_none_per_customer=args.min_none_per_customer,
        conversion_effect_scale=args.conversion_effect_scale,
    )
    spec = feature_spec_for(events, customers, catalog, config)
    started = time.perf_counter()
    table = build_feature_table(events, customers, spec)
    labels = label_decisions(events, table, LabelWindows.from_catalog(catalog))
    keep = ~labels["censored"].to_numpy()
    table, labels = table.loc[keep].reset_index(drop=True), labels.loc[keep].reset_index(drop=True)
    actions = (NO_ACTION, *catalog.action_ids)
    table = table[table["action"].astype(str).isin(actions)]
    labels = labels.loc[table.index]
    split = make_time_split(
        table["decision_time"], gap_days=LabelWindows.from_catalog(catalog).lookahead_days
    )
    part = split.assign(table["decision_time"]).to_numpy()
    codes = pd.Categorical(table["action"].astype(str), categories=actions).codes.astype(np.int64)
    X = table[list(spec.feature_names)].to_numpy(dtype=np.float64)
    tr, va = part == "train", part == "valid"
    k = policy_effect_scale(config, labels, codes, np.flatnonzero(tr), print).scale
    print(
        f"{len(events):,} events, {len(table):,} labelled decision points "
        f"({tr.sum():,} train, {va.sum():,} valid) in {time.perf_counter() - started:.0f}s"
    )

    engagement = None
    if args.engagement == "on" and "shared_offset" in args.formulations.split(","):
        engaged = engagement_labels(events, table, {a.id: a.channel for a in catalog.actions})
        engagement = fit_engagement(
            X[tr], codes[tr], engaged[tr], X[va], codes[va], engaged[va],
            feature_names=list(spec.feature_names), actions=actions, catalog=catalog,
            seed=args.seed, progress=print,
        )  # fmt: skip
    cat = catalog.to_dict()
    for name, choices in (
        ("best single action (from truth)", best_single_action_choices(truth, cat)),
        ("attribute policy (from truth)", attribute_policy_choices(truth, customers, cat)),
    ):
        print(f"{name:34s} oracle fraction {oracle_fraction(truth, choices, cat):.3f}")
    rows = []
    for formulation in args.formulations.split(","):
        started = time.perf_counter()
        scorers = []
        targets = (CONVERSION_LABELS[args.conversion_label], CHURN_LABELS[args.churn_label])
        names = list(spec.feature_names)
        restrict = args.offset_features == "effects" and formulation == "shared_offset"
        offset_features = effect_features(names) if restrict else None
        shared = formulation == "shared_offset"
        interactions = args.offset_interactions if shared else "free"
        with_engagement = engagement if shared else None
        for target in targets:
            y = labels[target].to_numpy(dtype=np.float64)
            scorer, report = fit_outcome_model(
                X[tr], codes[tr], y[tr], X[va], codes[va], y[va],
                actions=actions, formulation=formulation,  # type: ignore[arg-type]
                feature_names=names, seed=args.seed, offset_features=offset_features,
                offset_members=args.offset_members, offset_interactions=interactions,
                engagement=with_engagement,
                offset_scale=args.offset_scale if shared else "log_odds",
            )  # fmt: skip
            refit = "all" if args.refit_all else args.refit
            if refit != "none" and formulation == "shared_offset":
                rows_ = (
                    slice(None) if refit == "all"
                    else pre_test_rows(table["decision_time"], split)
                )  # fmt: skip
                refitted = refit_shared_offset(
                    X[rows_], codes[rows_], y[rows_], report, actions=actions, seed=args.seed,
                    feature_names=names, offset_features=offset_features,
                    offset_interactions=interactions, engagement=with_engagement,
                    offset_scale=scorer.offset_scale,
                )  # fmt: skip
                if refit == "pre-test":  # as touchpoint train --refit pre-test does
                    refitted.calibration = scorer.calibration
                scorer = refitted
            scorers.append(scorer)
        fit_s = time.perf_counter() - started
        engine = DecisionEngine(
            Bundle(path=data, model_version=formulation, actions=actions, spec=spec,
                   catalog=catalog, conversion=scorers[0], churn=scorers[1],
                   conversion_effect_scale=k)
        )  # fmt: skip
        metrics, chosen = simulated_truth(
            engine, events, customers, truth, catalog, best_single=NO_ACTION
        )
        mix = chosen["action"].value_counts(normalize=True).head(4)
        batch = _campaign_batch(engine, events, customers, truth)
        effect_table = _effects(engine, batch, truth)
        values = _TruthValues.of(engine, truth, catalog.to_dict())
        swaps = _swapped_effects(engine, batch, truth, values)
        losses = _loss_by_oracle_action(engine, batch, values)
        rows.append((formulation, metrics["truth.oracle_fraction.model"], fit_s))
        print(
            f"{formulation:34s} oracle fraction {metrics['truth.oracle_fraction.model']:.3f}"
            f"  fit {fit_s:.0f}s  violations {metrics['truth.violations']:.0f}  mix "
            + ", ".join(f"{a} {p:.0%}" for a, p in mix.items())
        )
        print("  mean effect on P(conversion) and P(churn) against no action, estimated vs true:")
        print(effect_table.to_string(float_format=lambda v: f"{v:+.4f}"))
        print(
            "  oracle fraction if the policy chose with some effects taken from the truth "
            "(or its conversion uplift resized):"
        )
        for label, fraction in swaps.items():
            print(f"    {label:62s} {fraction:.3f}")
        print("  value lost by the action the oracle chooses (shares of the customers and of")
        print("  the oracle's uplift), and what the engine chose most often for them instead:")
        print(losses.to_string(float_format=lambda v: f"{v:.3f}"))
    print("\nformulation      oracle_fraction  fit_seconds")
    for formulation, fraction, fit_s in rows:
        print(f"{formulation:16s} {fraction:15.3f}  {fit_s:11.0f}")


def _campaign_batch(
    engine: DecisionEngine, events: pd.DataFrame, customers: pd.DataFrame, truth: pd.DataFrame
) -> BatchResult:
    """The engine's scores of the held-out customers at the truth's campaign moment (as
    ``training.truth.simulated_truth`` scores them), in the truth's customer order."""
    ids = list(pd.unique(truth["customer_id"].astype(str)))
    moment = campaign_moment(truth)
    return recommend_batch(engine, events, customers, moment, ids=ids, top_k=1)


def _true_effects(truth: pd.DataFrame, actions: tuple[str, ...], outcome: str) -> np.ndarray:
    """``(customers, actions)``: the truth's P(outcome) of each action minus no action's, in
    the truth's customer order (NaN where the truth has no value)."""
    ids = list(pd.unique(truth["customer_id"].astype(str)))
    wide = truth.assign(customer_id=truth["customer_id"].astype(str)).pivot(
        index="customer_id", columns="action", values=f"p_{outcome}"
    )
    p = wide.reindex(index=ids, columns=list(actions)).to_numpy(dtype=np.float64)
    return p - p[:, [0]]


def _effects(engine: DecisionEngine, batch: BatchResult, truth: pd.DataFrame) -> pd.DataFrame:
    """Per action: the model's and the truth's mean change in P(conversion) vs no action,
    and how well the model ranks customers by it (correlation across customers); the same
    for P(churn) (``churn_*`` columns)."""
    rows: dict[str, dict[str, float]] = {}
    for outcome, prefix in (("conversion", ""), ("churn", "churn_")):
        estimated = getattr(batch.scored, f"p_{outcome}")
        true_effects = _true_effects(truth, engine.actions, outcome)
        for code, action in enumerate(engine.actions[1:], start=1):
            est = estimated[:, code] - estimated[:, 0]
            true = true_effects[:, code]
            corr = float(np.corrcoef(est, true)[0, 1]) if est.std() > 0 else 0.0
            rows.setdefault(action, {}).update(
                {f"{prefix}estimated": est.mean(), f"{prefix}true": true.mean(),
                 f"{prefix}correlation": corr}
            )  # fmt: skip
    return pd.DataFrame(rows).T


@dataclass(frozen=True)
class _TruthValues:
    """The truth's expected value of every (customer, engine action) of a campaign batch,
    as ``simulated_truth`` scores them: ``worth`` has no action's value where the truth says
    the action cannot be delivered, ``oracle`` is each customer's best deliverable action,
    ``gap`` the oracle's mean uplift."""

    worth: np.ndarray
    oracle: np.ndarray
    none_value: float
    gap: float

    @classmethod
    def of(
        cls, engine: DecisionEngine, truth: pd.DataFrame, catalog: dict[str, Any]
    ) -> _TruthValues:
        raw = (
            expected_values(truth, catalog)
            .reindex(
                index=list(pd.unique(truth["customer_id"].astype(str))),
                columns=list(engine.actions),
            )
            .to_numpy(dtype=np.float64)
        )  # NaN: the truth says it cannot be delivered
        worth = np.where(np.isnan(raw), raw[:, [0]], raw)
        deliverable = np.where(np.isnan(raw), -np.inf, raw)
        none_value = float(worth[:, 0].mean())
        # The oracle chooses among what the truth says can be delivered, as in simulated_truth.
        gap = float(deliverable.max(axis=1).mean() - none_value)
        return cls(worth, deliverable.argmax(axis=1), none_value, gap)

    def fraction(self, chosen: np.ndarray) -> float:
        """Oracle fraction of choosing action index ``chosen[i]`` for customer ``i``."""
        return float(
            (self.worth[np.arange(len(chosen)), chosen].mean() - self.none_value) / self.gap
        )


def _loss_by_oracle_action(
    engine: DecisionEngine, batch: BatchResult, tv: _TruthValues
) -> pd.DataFrame:
    """Where the engine's choice loses value: per action the oracle chooses, its share of
    the customers, the engine's share choosing it, and the value lost on the customers the
    oracle gives it (as a share of the oracle's uplift; the column sums to 1 − the engine's
    oracle fraction), with the action the engine chose most often for them instead."""
    chosen = batch.scored.greedy()
    rows = np.arange(len(chosen))
    lost = (tv.worth[rows, tv.oracle] - tv.worth[rows, chosen]) / tv.gap / len(chosen)
    names = np.asarray(engine.actions, dtype=object)
    frame = pd.DataFrame({"oracle": names[tv.oracle], "engine": names[chosen], "lost": lost})
    table = pd.DataFrame(
        {
            "oracle_share": frame["oracle"].value_counts(normalize=True),
            "engine_share": frame["engine"].value_counts(normalize=True),
            "value_lost": frame.groupby("oracle")["lost"].sum(),
        }
    ).fillna(0.0)
    wrong = frame[frame["oracle"] != frame["engine"]]
    table["engine_chose_instead"] = wrong.groupby("oracle")["engine"].agg(
        lambda s: s.value_counts().index[0]
    )
    return table.sort_values("value_lost", ascending=False)


def _swapped_effects(
    engine: DecisionEngine, batch: BatchResult, truth: pd.DataFrame, tv: _TruthValues
) -> dict[str, float]:
    """Where the policy loses value: its oracle fraction when it chooses, among the actions
    the engine allows and by the engine's own expected values and greedy choice
    (``serving.policy``), with some of the effects (Δ against no action) taken from the
    truth instead of the model.  "Mean" effects are each action's true mean over the
    customers it may go to, the same for everyone.  The first line repeats the engine's
    own figure; a choice the truth says cannot be delivered is worth no action, as in
    ``simulated_truth``."""
    allowed = batch.scored.eligible.copy()
    allowed[:, 0] = True
    scored = batch.scored
    # The model's conversion effects as the engine weighs them (its conversion effect
    # scale); the truth's are one send's own effects already.
    k = engine.bundle.conversion_effect_scale
    unscaled = scored.p_conversion - scored.p_conversion[:, [0]]
    model = {
        "conversion": k * unscaled,
        "churn": scored.p_churn - scored.p_churn[:, [0]],
    }
    true = {o: _true_effects(truth, engine.actions, o) for o in ("conversion", "churn")}
    # Customers the truth has no value for (an action it says cannot be delivered): 0.
    true = {o: np.nan_to_num(t) for o, t in true.items()}

    def per_action_mean(t: np.ndarray) -> np.ndarray:
        """Each action's mean over the customers it may go to (0 if it may go to none)."""
        means = [
            t[allowed[:, j], j].mean() if allowed[:, j].any() else 0.0 for j in range(t.shape[1])
        ]
        return np.broadcast_to(np.array(means), t.shape)

    mean = {o: per_action_mean(t) for o, t in true.items()}

    def fraction(conversion: np.ndarray, churn: np.ndarray) -> float:
        scores = action_values(
            conversion, churn, engine.costs,
            conversion_value=engine.conversion_value, churn_cost=engine.churn_cost,
        )  # fmt: skip
        return tv.fraction(greedy(scores, allowed))

    return {
        "the model's effects (the engine's choice)": fraction(model["conversion"], model["churn"]),
        "true conversion effects, the model's churn effects": fraction(
            true["conversion"], model["churn"]
        ),
        "the model's conversion effects, true churn effects": fraction(
            model["conversion"], true["churn"]
        ),
        "each action's true mean effects, for everyone": fraction(
            mean["conversion"], mean["churn"]
        ),
        "true conversion effects, each action's true mean churn effect": fraction(
            true["conversion"], mean["churn"]
        ),
        # The conversion effect scale's question (training/effect_scale.py): what the
        # model's own conversion uplift would be worth at other sizes, no truth in it.
        **{
            f"the model's unscaled conversion uplift x{c:g}, churn as is": fraction(
                c * unscaled, model["churn"]
            )
            for c in CONVERSION_SWEEP
        },
    }


if __name__ == "__main__":
    main()
