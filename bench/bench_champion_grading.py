"""Does the champion comparison pick the better model?  DR with each model's own reward
estimates against DR with the same estimates for both (training/promotion.py).

Usage::

    python bench/bench_champion_grading.py --data WORLD_DIR [--seed S]

``WORLD_DIR`` is the output of ``touchpoint simulate`` (its ground truth included).  Trains
two models with ``training.train.fit_and_evaluate``: A, the split fit (``--refit none``),
and B, the refit before the test period (``--refit pre-test``), on the same split.  Then
values both greedy policies on A's test decision points by DR, graded four ways: each by
its own model's ``q`` (the rule before the ninth session), both by A's, both by B's, and
both by the mean of the two (what ``touchpoint train``'s champion comparison does now);
and ``training.promotion.compare_with_champion`` itself (B the challenger), next to each
model's oracle fraction by the simulator's truth.  The measurements are in
docs/TRAINING.md, "The champion comparison".
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench.simulated_world import world_and_seed  # noqa: E402
from features.schema import NO_ACTION  # noqa: E402
from training import ope  # noqa: E402
from training.evaluation import one_hot, rewards  # noqa: E402
from training.promotion import compare_with_champion  # noqa: E402
from training.train import TrainConfig, fit_and_evaluate  # noqa: E402
from training.truth import simulated_truth  # noqa: E402


def main() -> None:
    world, seed = world_and_seed((__doc__ or "").splitlines()[0])
    events, customers, catalog = world.events, world.customers, world.catalog

    engines, fraction = {}, {}
    with tempfile.TemporaryDirectory() as folder:
        for name, refit in (("A", "none"), ("B", "pre-test")):
            print(f"training {name} (--refit {refit})", flush=True)
            result = fit_and_evaluate(
                events,
                customers,
                catalog,
                TrainConfig(seed=seed, refit=refit, n_bootstrap=10),  # type: ignore[arg-type]
                bundle_dir=Path(folder) / name,
                model_version=name,
            )
            engines[name] = result.engine
            if name == "A":
                rounds = result.test_rounds  # the same split, so the same rows for B
            metrics, _ = simulated_truth(
                result.engine, events, customers, world.ground_truth, catalog, best_single=NO_ACTION
            )
            fraction[name] = metrics["truth.oracle_fraction.model"]

    # Both engines come from one catalog: the same action order, rewards and costs.
    a = engines["A"]
    scored = {n: e.score(rounds.X, rounds.decision_time) for n, e in engines.items()}
    q = {n: s.q_values(a.conversion_value, a.churn_cost, a.costs) for n, s in scored.items()}
    k = len(a.actions)
    policies = {n: one_hot(s.greedy(), k) for n, s in scored.items()}
    reward = rewards(rounds.conversion, rounds.churn, rounds.action, a.costs,
                     conversion_value=a.conversion_value, churn_cost=a.churn_cost)  # fmt: skip

    def dr(estimates: np.ndarray) -> dict[str, float]:
        table = ope.evaluate_policies(
            policies, action=rounds.action, reward=reward, pscore=rounds.pscore,
            estimated_rewards=estimates, estimators=("dr",), n_bootstrap=10,
        )  # fmt: skip
        return {str(k_): float(v) for k_, v in table.set_index("policy")["value"].items()}

    promotion = compare_with_champion(engines["B"], engines["A"], rounds, rounds.X)
    assert promotion is not None
    rows = [
        ("its own model's q", {"A": dr(q["A"])["A"], "B": dr(q["B"])["B"]}),
        ("A's q for both", dr(q["A"])),
        ("B's q for both", dr(q["B"])),
        ("the mean of both", dr((q["A"] + q["B"]) / 2)),
        ("compare_with_champion", {"A": promotion.champion, "B": promotion.challenger}),
    ]
    print(f"\noracle fraction by the truth: A {fraction['A']:.3f}, B {fraction['B']:.3f}")
    print(f"test decision points: {len(rounds.action):,}")
    print(f"{'graded by':24s} {'DR of A':>10s} {'DR of B':>10s}  higher")
    for label, values in rows:
        higher = "A" if values["A"] > values["B"] else "B"
        print(f"{label:24s} {values['A']:10.4f} {values['B']:10.4f}  {higher}")


if __name__ == "__main__":
    main()
