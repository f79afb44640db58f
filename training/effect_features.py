"""What the action effects may depend on: the inputs of the shared offset booster.

In ``shared_offset`` the base booster learns P(outcome | x) pooled over the actions and
the offset booster how each action shifts its log-odds.  Given every feature, the offset
booster spends its few, strongly regularized trees on whatever predicts the outcome best
in its residuals, much of which is noise about *who* converts, not about *which action*
works on whom.  Restricted to the customer's stable attributes, how each channel lands
with them (open and click rates: where a latent channel affinity shows) and a few signs
of fatigue and presence, its splits are about the effects.

Measured with ``bench/bench_policy.py --offset-features all|effects`` on five simulated
worlds (docs/TRAINING.md, "What limits the policy"): the oracle fraction rose in 7 of 8
(world, LightGBM seed) pairs and tied in the last, by 0.08 on average, and its worst case
rose from 0.32 to 0.45.  So it is the default of ``touchpoint train`` (``TrainConfig.
offset_features``); ``--offset-features all`` gives the offset every feature.  It is a
modelling assumption (the effects depend on who the customer is and how each channel lands
with them, not on everything the history holds), chosen on the simulator.

*Pairwise* interactions (``--offset-interactions pairwise``, the default): every branch of
an offset tree may split on the action and on one other feature only, through LightGBM's
``interaction_constraints``, so the offset is a sum over the effect features of how each
action's effect varies with that feature (an additive model per action).  Free trees of
15 leaves spend their splits on three- and four-way combinations of attributes, rates and
fatigue that each action's training rows cannot pin down (on the default world 2,700 to
27,000 per action, 400 to 4,400 of them conversions), so what they say about *whom* an
action works on is mostly noise: there, their per-customer conversion effects correlated
−0.19 to +0.30 with the truth's, per action (pairwise: −0.16 to +0.49).  Measured with
``bench/bench_policy.py --offset-interactions pairwise|free`` (docs/TRAINING.md): the mean
oracle fraction rose by 0.04 over nine (world, LightGBM seed) pairs and by 0.03 over
fifteen (better on 11), though by only 0.009 on the six of two worlds found afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

__all__ = [
    "EFFECT_HISTORY",
    "OffsetInteractions",
    "effect_features",
    "offset_contributions",
    "offset_interaction_constraints",
    "offset_params",
]

#: How the offset booster's trees may combine features (module docstring).
OffsetInteractions = Literal["pairwise", "free"]

#: History features the effects may depend on: recent sends (fatigue) and whether the
#: customer is still there.
EFFECT_HISTORY: tuple[str, ...] = (
    "n_sent_7d",
    "n_sent_30d",
    "days_since_last_inbound",
    "n_visit_30d",
)


def effect_features(feature_names: Sequence[str]) -> list[str]:
    """The features of ``feature_names`` an action effect may depend on (module docstring):
    ``attr_*``, ``ch_<channel>_open_rate``, ``ch_<channel>_click_rate`` and
    :data:`EFFECT_HISTORY`, in the spec's order."""
    return [
        name
        for name in feature_names
        if name.startswith("attr_")
        or (name.startswith("ch_") and name.endswith(("_open_rate", "_click_rate")))
        or name in EFFECT_HISTORY
    ]


def offset_contributions(feature_names: Sequence[str], allowed: Sequence[str]) -> list[float]:
    """LightGBM's ``feature_contri`` for a booster on ``[X, action]`` that may split only
    on ``allowed`` and the action: a split's gain is multiplied by 0 on every other column,
    so no tree uses them (the model files and serving are unchanged).

    Raises ValueError for an allowed name that is not a feature.
    """
    keep = _allowed(feature_names, allowed)
    return [1.0 if name in keep else 0.0 for name in feature_names] + [1.0]  # the action: always


def offset_interaction_constraints(
    feature_names: Sequence[str], allowed: Sequence[str] | None
) -> list[list[int]]:
    """LightGBM's ``interaction_constraints`` for a booster on ``[X, action]`` whose branches
    may split on the action and one of ``allowed`` (None: any feature) only: one set
    ``[feature, action]`` per allowed feature, by column index.  LightGBM never splits on a
    feature that is in no set.

    Raises ValueError for an allowed name that is not a feature.
    """
    names = list(feature_names)
    keep = set(names) if allowed is None else _allowed(names, allowed)
    action = len(names)  # the action code is the last column
    return [[i, action] for i, name in enumerate(names) if name in keep]


def _allowed(feature_names: Sequence[str], allowed: Sequence[str]) -> set[str]:
    """``allowed`` as a set; ValueError naming those that are not features."""
    unknown = sorted(set(allowed) - set(feature_names))
    if unknown:
        raise ValueError(f"offset features not in the feature spec: {unknown}")
    return set(allowed)


def offset_params(
    feature_names: Sequence[str],
    allowed: Sequence[str] | None,
    interactions: OffsetInteractions,
) -> dict[str, Any]:
    """The LightGBM parameters that restrict the offset booster on ``[X, action]`` to
    ``allowed`` features (None: every feature) combined as ``interactions`` says; added to
    its other parameters by the fit and by the refit alike."""
    if interactions not in ("pairwise", "free"):
        raise ValueError(f"offset interactions must be pairwise or free, got {interactions!r}")
    params: dict[str, Any] = {}
    if allowed is not None:
        params["feature_contri"] = offset_contributions(feature_names, allowed)
    if interactions == "pairwise":
        params["interaction_constraints"] = offset_interaction_constraints(feature_names, allowed)
    return params
