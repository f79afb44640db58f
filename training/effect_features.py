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
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["EFFECT_HISTORY", "effect_features", "offset_contributions"]

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
    names = list(feature_names)
    unknown = sorted(set(allowed) - set(names))
    if unknown:
        raise ValueError(f"offset features not in the feature spec: {unknown}")
    keep = set(allowed)
    return [1.0 if name in keep else 0.0 for name in names] + [1.0]  # the action: always
