"""Fit the engagement model (serving/engagement.py): ``P(open or click | x, channel)``.

Each logged send is a row: its customer's attributes at the decision, its channel (the
catalog's channel of its action) and whether the customer opened or clicked on that
channel within :data:`ENGAGEMENT_HOURS` of the send.  The match is by channel, not by
action id, because the contract lets responses leave the action out (CONTRACT §1).  The
label is an outcome after the decision, like the conversion label: it is learned from the
training rows and early-stopped on the validation rows, never read at serving time.

The inputs are the customer's attributes only (:func:`engagement_inputs`): what a channel
is to a *kind* of customer, pooled over every send of every channel.  The per-customer
open and click rates are already among the offset's features; measured as inputs here
as well they did not help (docs/TRAINING.md, "Engagement").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.catalog import Catalog
from features.schema import NO_ACTION
from serving.engagement import EngagementModel

__all__ = [
    "ENGAGEMENT_HOURS",
    "ENGAGEMENT_PARAMS",
    "engagement_inputs",
    "engagement_labels",
    "fit_engagement",
]

#: A send counts as engaged when an open or click on its channel follows within this many
#: hours (the simulator's responses come the same day; e-mail opens mostly within a day).
ENGAGEMENT_HOURS = 24.0
#: The response events that count.
RESPONSE_TYPES = ("open", "click")
#: LightGBM parameters of the engagement booster: more rows per leaf than the outcome
#: models' default (a channel's response rate is a smooth function of a few attributes),
#: a patience of 50 rounds (its early stopping is cheap: a few hundred thousand sends).
ENGAGEMENT_PARAMS: dict[str, Any] = {
    "objective": "binary",
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 200,
    "num_threads": 2,
    "verbose": -1,
}
ENGAGEMENT_ROUNDS = 1000
ENGAGEMENT_EARLY_STOPPING = 50


def engagement_inputs(feature_names: Sequence[str]) -> list[str]:
    """The features the engagement model reads: the customer attributes (``attr_*``)."""
    return [name for name in feature_names if name.startswith("attr_")]


def engagement_labels(
    events: pd.DataFrame,
    table: pd.DataFrame,
    channel_of: dict[str, str],
    hours: float = ENGAGEMENT_HOURS,
) -> np.ndarray:
    """Per row of ``table`` (``customer_id``, ``decision_time``, ``action``): whether an
    open or click on the action's channel followed within ``hours`` of the decision
    (at or after it).  False for ``none`` rows and for actions ``channel_of`` lacks."""
    action = table["action"].astype(str)
    channel = action.map(channel_of)
    sent = (action != NO_ACTION).to_numpy() & channel.notna().to_numpy()
    out = np.zeros(len(table), dtype=bool)
    responses = events.loc[
        events["event_type"].isin(RESPONSE_TYPES), ["customer_id", "channel", "timestamp"]
    ]
    if not sent.any() or responses.empty:
        return out
    sends = pd.DataFrame(
        {
            "row": np.flatnonzero(sent),
            "customer_id": table["customer_id"].astype(str).to_numpy()[sent],
            "channel": channel.to_numpy()[sent].astype(str),
            "timestamp": pd.to_datetime(table["decision_time"], utc=True).to_numpy()[sent],
        }
    ).sort_values("timestamp", kind="stable")
    responses = responses.assign(
        customer_id=responses["customer_id"].astype(str),
        channel=responses["channel"].astype(str),
        response_time=pd.to_datetime(responses["timestamp"], utc=True),
    )
    responses = responses[["customer_id", "channel", "response_time"]].sort_values(
        "response_time", kind="stable"
    )
    # The first response on the same customer and channel at or after each send.
    matched = pd.merge_asof(
        sends,
        responses,
        left_on="timestamp",
        right_on="response_time",
        by=["customer_id", "channel"],
        direction="forward",
        allow_exact_matches=True,
    )
    lag = matched["response_time"] - matched["timestamp"]
    engaged = (lag.notna() & (lag <= pd.Timedelta(hours=hours))).to_numpy()
    out[matched["row"].to_numpy()] = engaged
    return out


def fit_engagement(
    X_train: np.ndarray,
    a_train: np.ndarray,
    engaged_train: np.ndarray,
    X_valid: np.ndarray,
    a_valid: np.ndarray,
    engaged_valid: np.ndarray,
    *,
    feature_names: Sequence[str],
    actions: Sequence[str],
    catalog: Catalog,
    seed: int = 0,
    num_threads: int = 2,
    progress: Callable[[str], None] = lambda _msg: None,
) -> EngagementModel | None:
    """The engagement model on the send rows of the training part (``a_* > 0``), early
    stopped on those of the validation part; None (with a progress line saying why) when
    either part has no send, or no send was engaged or all were: there is nothing to
    learn, and the offset then has no engagement column."""
    names = list(feature_names)
    inputs = engagement_inputs(names)
    columns = [names.index(name) for name in inputs]
    channels = tuple(catalog.channels)
    channel_of = {a.id: a.channel for a in catalog.actions}
    action_channels = tuple(
        -1 if a == NO_ACTION else channels.index(channel_of[a]) for a in actions
    )
    codes = np.asarray(action_channels, dtype=np.float64)
    sets = []
    for X, a, y in ((X_train, a_train, engaged_train), (X_valid, a_valid, engaged_valid)):
        sent = np.asarray(a) > 0
        sets.append((np.column_stack([X[sent][:, columns], codes[np.asarray(a)[sent]]]), y[sent]))
    (Xt, yt), (Xv, yv) = sets
    if len(yt) == 0 or len(yv) == 0 or yt.min() == yt.max():
        progress("  engagement model left out: no sends, or no mix of engaged and not")
        return None
    params = {**ENGAGEMENT_PARAMS, "seed": seed, "num_threads": num_threads}
    categorical = [len(inputs)]
    train = lgb.Dataset(Xt, yt.astype(np.float64), categorical_feature=categorical)
    valid = lgb.Dataset(Xv, yv.astype(np.float64), categorical_feature=categorical, reference=train)
    booster = lgb.train(
        params,
        train,
        ENGAGEMENT_ROUNDS,
        valid_sets=[valid],
        callbacks=[lgb.early_stopping(ENGAGEMENT_EARLY_STOPPING, verbose=False)],
    )
    # Keep only the early-stopped trees: serving predicts with all of them.
    booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=booster.best_iteration))
    progress(
        f"  engagement model: {booster.current_iteration()} rounds on {len(yt):,} sends "
        f"({yt.mean():.1%} opened or clicked within {ENGAGEMENT_HOURS:.0f} h)"
    )
    return EngagementModel(
        booster=booster,
        inputs=tuple(inputs),
        input_columns=tuple(columns),
        channels=channels,
        action_channels=action_channels,
    )
