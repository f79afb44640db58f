"""Would grading the formulations on the test period pick the one the truth prefers?

Usage::

    python bench/bench_formulation_grading.py --data WORLD_DIR [--seed S]

``WORLD_DIR`` is the output of ``touchpoint simulate`` (its ground truth included).  Trains
each formulation on its own with ``training.train.fit_and_evaluate`` (default settings
otherwise: the same split, rows and seed), prints its oracle fraction by the simulator's
truth, and grades the four greedy policies on the test decision points by DR with the same
reward estimates, the mean of all four models' (``training.promotion.grade_policies``, what
``--formulation compare`` does on the validation part).  The measurements are in
docs/TRAINING.md, step 5.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.simulated_world import world_and_seed  # noqa: E402
from training.promotion import grade_policies  # noqa: E402
from training.train import COMPARED_FORMULATIONS, TrainConfig, fit_and_evaluate  # noqa: E402
from training.truth import simulated_truth  # noqa: E402


def main() -> None:
    world, seed = world_and_seed((__doc__ or "").splitlines()[0])
    results, fraction = {}, {}
    with tempfile.TemporaryDirectory() as folder:
        for formulation in COMPARED_FORMULATIONS:
            print(f"training {formulation}", flush=True)
            result = fit_and_evaluate(
                world.events,
                world.customers,
                world.catalog,
                TrainConfig(seed=seed, formulation=formulation, n_bootstrap=10),
                bundle_dir=Path(folder) / formulation,
                model_version=formulation,
            )
            truth, _ = simulated_truth(
                result.engine,
                world.events,
                world.customers,
                world.ground_truth,
                world.catalog,
                best_single=result.best_single,
            )
            results[formulation], fraction[formulation] = (
                result,
                truth["truth.oracle_fraction.model"],
            )
    first = results[COMPARED_FORMULATIONS[0]]
    rounds = first.test_rounds  # the same split and propensities in every run
    graded = grade_policies(
        {f: (r.engine, rounds.X) for f, r in results.items()},
        rounds,
        reference=first.engine,
        seed=seed,
    )
    assert graded is not None  # one catalog: the same actions
    print(f"\ntest decision points: {len(rounds.action):,}")
    print(f"{'formulation':16s} {'truth':>7s} {'test DR':>9s}")
    for formulation in sorted(graded, key=graded.__getitem__, reverse=True):
        print(f"{formulation:16s} {fraction[formulation]:7.3f} {graded[formulation]:9.3f}")


if __name__ == "__main__":
    main()
