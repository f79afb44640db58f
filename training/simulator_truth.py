"""The simulator's ground truth: closed-form outcome probabilities under each action.

Given the state at ``as_of`` and one send (or none), the daily hazards over the horizon
are deterministic, so P(conversion) and P(churn) have a closed form; it is computed with
the same hazard and state-update functions that drive :func:`training.simulator.simulate`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.schema import NO_ACTION
from training.simulator_world import (
    State,
    World,
    apply_send_now,
    churn_hazard,
    end_of_day,
    purchase_hazard,
)

#: Columns of the ground-truth table (long format, one row per held-out customer and action).
GROUND_TRUTH_COLUMNS = ("customer_id", "as_of", "action", "p_conversion", "p_churn", "eligible")


def _horizon_probabilities(
    world: World, state: State, idx: np.ndarray, action: int | None, conv_days: int, churn_days: int
) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form P(purchase within ``conv_days``) and P(churn within ``churn_days``).

    With no further sends the hazards are deterministic, so with churn drawn first each
    day (as in :func:`simulate`) and ``S_d = prod_{j<=d} (1 - hc_j)``:
    ``p_conv = sum_d S_d * prod_{j<d} (1 - hp_j) * hp_d`` and ``p_churn = 1 - S_{H-1}``.
    """
    st = state.take(idx)
    if action is not None:
        apply_send_now(world, st, idx, np.full(idx.size, action))
    survive = np.ones(idx.size)
    no_buy = np.ones(idx.size)
    p_conv = np.zeros(idx.size)
    p_churn = np.zeros(idx.size)
    for d in range(max(conv_days, churn_days)):
        survive *= 1.0 - churn_hazard(world, st, idx)
        if d < conv_days:
            hp = purchase_hazard(world, st, idx)
            p_conv += survive * no_buy * hp
            no_buy *= 1.0 - hp
        if d == churn_days - 1:
            p_churn = 1.0 - survive
        end_of_day(world, st)
    return p_conv, p_churn


def _ground_truth(
    world: World,
    state: State,
    heldout: np.ndarray,
    eligible_actions: np.ndarray,
    customer_ids: np.ndarray,
    as_of: pd.Timestamp,
    conv_days: int,
    churn_days: int,
) -> pd.DataFrame:
    names = [NO_ACTION, *world.action_ids]
    frames = []
    for a, name in enumerate(names):
        action = None if a == 0 else a - 1
        p_conv, p_churn = _horizon_probabilities(
            world, state, heldout, action, conv_days, churn_days
        )
        # Consent given and the channel not unsubscribed during the history.
        eligible = (
            np.ones(heldout.size, dtype=bool)
            if action is None
            else eligible_actions[heldout, action]
        )
        frames.append(
            pd.DataFrame(
                {
                    "customer_id": customer_ids[heldout].astype(str),
                    "action": name,
                    "p_conversion": p_conv,
                    "p_churn": p_churn,
                    "eligible": eligible,
                    "_order": a,
                }
            )
        )
    gt = pd.concat(frames, ignore_index=True)
    gt = gt.sort_values(["customer_id", "_order"], kind="stable").drop(columns="_order")
    gt.insert(
        1, "as_of", pd.Series(pd.DatetimeIndex([as_of] * len(gt)).as_unit("ns"), index=gt.index)
    )
    return gt.reset_index(drop=True)[list(GROUND_TRUTH_COLUMNS)]
