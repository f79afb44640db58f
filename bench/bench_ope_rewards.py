"""Which reward makes the off-policy estimates agree with the simulator's truth?

Usage::

    python bench/bench_ope_rewards.py --data WORLD_DIR [--seed S]

``WORLD_DIR`` is the output of ``touchpoint simulate`` (its ground truth included).  Trains
with ``training.train.fit_and_evaluate`` (default settings) and values the model policy, the
logging policy, the best single action and no action on the run's test decision points by
IPS, SNIPS and DR, with the run's cross-fitted propensities and reward estimates, twice:

- with the reward of the contract's labels (``conversion``, ``churn``): "this action, then
  the business as usual for the label window", what ``touchpoint train`` reports;
- with the ``before_send`` labels (``training/labels.py``): the outcome only if it came
  before the next send, closer to the truth's "this action, then nothing".

The truth's oracle fractions are printed above.  The measurements are in docs/TRAINING.md,
"Off-policy estimates next to the truth".
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
import pandas as pd  # noqa: E402

from bench.simulated_world import world_and_seed  # noqa: E402
from features.pipeline import build_feature_table  # noqa: E402
from training import ope  # noqa: E402
from training.evaluation import baseline_policies, rewards  # noqa: E402
from training.labels import LabelWindows, label_decisions  # noqa: E402
from training.train import TrainConfig, feature_spec_for, fit_and_evaluate  # noqa: E402
from training.truth import simulated_truth  # noqa: E402

KEY = ["customer_id", "decision_time", "action"]


def main() -> None:
    world, seed = world_and_seed((__doc__ or "").splitlines()[0])
    events, customers, catalog = world.events, world.customers, world.catalog
    config = TrainConfig(seed=seed)
    with tempfile.TemporaryDirectory() as folder:
        print("training (default settings)", flush=True)
        result = fit_and_evaluate(
            events, customers, catalog, config, bundle_dir=Path(folder) / "b", model_version="1"
        )
        engine, rounds = result.engine, result.test_rounds
        truth, _ = simulated_truth(
            engine,
            events,
            customers,
            world.ground_truth,
            catalog,
            best_single=result.best_single,
        )

    # The test rows' labels of every kind: the decision table again, matched on its key.
    table = build_feature_table(
        events, customers, feature_spec_for(events, customers, catalog, config)
    )
    table = table[table["action"].astype(str).isin(engine.actions)].reset_index(drop=True)
    labels = label_decisions(events, table, LabelWindows.from_catalog(catalog))
    every = pd.concat([table[KEY], labels], axis=1).loc[~labels["censored"].to_numpy()]
    every["action"] = every["action"].astype(str)
    test = result.test_decisions.assign(action=lambda f: f["action"].astype(str))
    test = test.merge(every, on=KEY, how="left", validate="one_to_one")
    if not np.array_equal(test["conversion"].to_numpy(dtype=np.float64), rounds.conversion):
        raise SystemExit("the test rows did not match the decision table's")

    scored = engine.score(rounds.X, rounds.decision_time)
    q = scored.q_values(engine.conversion_value, engine.churn_cost, engine.costs)
    best = engine.actions.index(result.best_single)
    policies = baseline_policies(scored, rounds.logging_dist, best)
    shown = ("model", "logging", f"best_single ({result.best_single})", "no_action")
    print(
        f"\noracle fraction by the truth: model {truth['truth.oracle_fraction.model']:.3f}, "
        f"best single ({result.best_single}) {truth['truth.oracle_fraction.best_single']:.3f}"
    )
    print(f"test decision points: {len(rounds.action):,}")
    for name, conversion, churn in (
        ("contract labels (what touchpoint train reports)", rounds.conversion, rounds.churn),
        (
            "before_send labels",
            test["conversion_before_send"].to_numpy(dtype=np.float64),
            test["churn_before_send"].to_numpy(dtype=np.float64),
        ),
    ):
        reward = rewards(
            conversion, churn, rounds.action, engine.costs,
            conversion_value=engine.conversion_value, churn_cost=engine.churn_cost,
        )  # fmt: skip
        table_ = ope.evaluate_policies(
            {p: policies[p] for p in shown},
            action=rounds.action,
            reward=reward,
            pscore=rounds.pscore,
            estimated_rewards=q,
            n_bootstrap=200,
            seed=seed,
        )
        wide = table_.pivot(index="policy", columns="estimator", values="value").loc[list(shown)]
        se = table_[table_["estimator"] == "dr"].set_index("policy")["std_error"]
        wide["dr std_error"] = se
        print(f"\nreward from the {name}:")
        print(wide[["ips", "snips", "dr", "dr std_error"]].round(2).to_string())


if __name__ == "__main__":
    main()
