"""Contact rules: which candidate actions a customer may receive right now, and why not.

Rules, checked in this order (the first one that fails names the suppression):

1. ``consent``: the customer's ``consent_<channel>`` is false;
2. ``unsubscribed``: the customer sent an ``unsubscribe`` on the channel before now;
3. ``cooldown``: a send on the channel less than ``cooldown_hours`` ago;
4. ``channel_cap``: ``max_per_channel`` (or the channel's override) sends on the channel in
   the last ``window_days``;
5. ``total_cap``: ``max_total`` sends over all channels in the last ``window_days``;
6. ``quiet_hours``: the decision time falls in the quiet hours, for the listed channels.

"No action" is never suppressed.  The state is computed from the events strictly before
the decision time: it is read off the feature row, so it follows the same point-in-time
rule as the features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from features.catalog import ContactPolicy
from features.schema import NO_ACTION

#: Rule names, in the order they are checked; code = index + 1 (0 = eligible).
RULES: tuple[str, ...] = (
    "consent",
    "unsubscribed",
    "cooldown",
    "channel_cap",
    "total_cap",
    "quiet_hours",
)


@dataclass(frozen=True)
class ContactState:
    """What the contact rules need to know about each customer, per channel.

    Arrays are ``(n_customers, n_channels)`` unless noted; ``channels`` names the columns.
    """

    channels: tuple[str, ...]
    consent: np.ndarray  # bool
    unsubscribed: np.ndarray  # bool
    sends_in_window: np.ndarray  # int
    hours_since_send: np.ndarray  # float, inf when never
    total_in_window: np.ndarray  # (n_customers,) int


def contact_state_from_features(
    X: np.ndarray,
    feature_names: Sequence[str],
    *,
    channels: Sequence[str],
    policy: ContactPolicy,
) -> ContactState:
    """Read the contact state off feature rows (``spec.feature_names`` order).

    The features already count, strictly before the decision time, the sends per channel
    and window, the hours since the last send, consent and unsubscribes; reusing them keeps
    one point-in-time implementation and costs nothing extra per request.  The feature
    spec must include the contact policy's window (training adds it).
    """
    index = {name: i for i, name in enumerate(feature_names)}
    w = policy.window_days
    total_name = f"n_sent_{w}d"
    if total_name not in index:
        raise ValueError(
            f"the feature spec has no {w}-day window, which contact_policy.window_days needs; "
            "retrain with this catalog"
        )

    def cols(template: str) -> np.ndarray:
        return X[:, [index[template.format(c=c)] for c in channels]]

    days_since = cols("ch_{c}_days_since_send")
    consent_cols = [index.get(f"consent_{c}") for c in channels]
    consent = np.ones((len(X), len(channels)), dtype=bool)
    for j, col in enumerate(consent_cols):
        if col is not None:
            consent[:, j] = X[:, col] != 0  # NaN (unknown) counts as consent given
    return ContactState(
        channels=tuple(channels),
        consent=consent,
        unsubscribed=cols("ch_{c}_unsubscribed") > 0,
        sends_in_window=cols(f"ch_{{c}}_sends_{w}d").astype(np.int64),
        hours_since_send=np.where(np.isnan(days_since), np.inf, days_since * 24.0),
        total_in_window=X[:, index[total_name]].astype(np.int64),
    )


def in_quiet_hours(policy: ContactPolicy, decision_time: pd.Series | pd.Timestamp) -> np.ndarray:
    """True where the decision time falls inside the quiet hours (local to their timezone).

    A single timestamp (the online case) takes a scalar path: building a Series for one
    value cost milliseconds per request.
    """
    quiet = policy.quiet_hours
    n = 1 if isinstance(decision_time, pd.Timestamp) else len(decision_time)
    if quiet is None or quiet.start == quiet.end:
        return np.zeros(n, dtype=bool)
    zone = ZoneInfo(quiet.timezone)
    if isinstance(decision_time, pd.Timestamp):
        ts = decision_time if decision_time.tzinfo else decision_time.tz_localize("UTC")
        hour = np.array([ts.tz_convert(zone).hour])
    else:
        hour = pd.to_datetime(decision_time, utc=True).dt.tz_convert(zone).dt.hour.to_numpy()
    if quiet.start < quiet.end:
        return (hour >= quiet.start) & (hour < quiet.end)
    return (hour >= quiet.start) | (hour < quiet.end)  # wraps past midnight


def suppression_codes(
    state: ContactState,
    action_channels: Sequence[str | None],
    policy: ContactPolicy,
    quiet_now: np.ndarray,
) -> np.ndarray:
    """``(n_customers, n_actions)`` rule codes: 0 eligible, else ``RULES.index(rule) + 1``.

    ``action_channels[a]`` is the channel of action ``a`` (None for no action).
    """
    n = len(state.total_in_window)
    codes = np.zeros((n, len(action_channels)), dtype=np.int8)
    chan_index = {c: j for j, c in enumerate(state.channels)}
    quiet_channels = set(policy.quiet_hours.channels) if policy.quiet_hours else set()
    total_full = state.total_in_window >= policy.max_total
    for a, channel in enumerate(action_channels):
        if channel is None:
            continue
        j = chan_index.get(channel)
        if j is None:
            raise ValueError(f"action channel {channel!r} has no contact state")
        cap = policy.channel_caps.get(channel, policy.max_per_channel)
        checks = (
            ~state.consent[:, j],
            state.unsubscribed[:, j],
            state.hours_since_send[:, j] < policy.cooldown_hours,
            state.sends_in_window[:, j] >= cap,
            total_full,
            quiet_now if channel in quiet_channels else np.zeros(n, dtype=bool),
        )
        # Fill from the last rule to the first, so the first failing rule wins.
        for rule_code in range(len(checks), 0, -1):
            codes[checks[rule_code - 1], a] = rule_code
    return codes


def action_channels(actions: Sequence[str], channel_of: dict[str, str]) -> list[str | None]:
    """Channels of the actions in code order (None for no action)."""
    return [None if a == NO_ACTION else channel_of[a] for a in actions]
