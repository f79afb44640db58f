"""The shared offset as a bag of boosters, each fit on its own negative subsample (an
option: ``touchpoint train --offset-members K``; one booster by default).

In ``shared_offset`` the offset booster learns how each action shifts the log-odds of the
outcome: the action effects the policy ranks by.  It trains on every positive row and a
random share (:data:`training.models.NEGATIVE_KEEP`, 0.3) of the negative ones, and with
its strong regularization and early stopping it keeps few trees (42 for conversion on the
default world).  Which negatives it drew decides much of what those trees say: on the
default world one fit's oracle fraction ranged 0.565–0.677 over five LightGBM seeds.  Five
offsets on one base with the same negatives and other LightGBM seeds averaged to 0.568;
each with its own negatives, to 0.686 (a prototype; docs/TRAINING.md).

With ``K`` members the offset is ``K`` boosters on one base: member 0 is the booster early
stopping chose (on the base's own negative sample), members 1… train for the same number
of rounds on negative samples of their own, with their own LightGBM seeds.  Their raw
scores are averaged (bagging) and written as one booster (``training/booster_average.py``),
so the bundle and serving see one offset booster as before, ``K`` times the trees.

Not the default, by measurement (docs/TRAINING.md, "What limits the policy";
docs/BENCHMARKS.md): a bag of five gained ~0.02 of the oracle's uplift on average (0.609
against 0.586 on nine (world, seed) pairs), but its trees cost every request (in process,
the decision 79 → 198 µs and the SHAP reasons 136 → 564 µs, where two workers need ≤ ~0.9
ms of CPU per request in all for the serving target) and training four more offset fits
(1M decision points: 41.5 → 108 s).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["OFFSET_MEMBERS", "member_params", "member_seed"]

#: Boosters in the shared offset's bag by default: one, the early-stopped booster (see the
#: module docstring for why).
OFFSET_MEMBERS = 1
#: Member ``j``'s seed is ``seed + j * _SEED_STRIDE``: distinct from member 0 (the run's
#: own seed) and from the members of nearby run seeds (seed 1's member 1 is not seed 2's).
_SEED_STRIDE = 1_000_003


def member_seed(seed: int, member: int) -> int:
    """The seed of member ``member`` (its negative sample and its LightGBM seed);
    member 0 keeps the run's ``seed``."""
    return (seed + member * _SEED_STRIDE) % 2**31


def member_params(params: Mapping[str, Any], seed: int, member: int) -> dict[str, Any]:
    """LightGBM parameters of member ``member``: ``params`` with the member's seed (from
    which LightGBM derives its bagging and feature-sampling seeds)."""
    return {**params, "seed": member_seed(seed, member)}
