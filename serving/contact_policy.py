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
from datetime import datetime
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


@dataclass(frozen=True)
class ContactColumns:
    """Where the contact state sits in a feature row; computed once per model."""

    channels: tuple[str, ...]
    days_since: np.ndarray  # intp column per channel
    unsubscribed: np.ndarray
    sends_in_window: np.ndarray
    consent: np.ndarray  # -1: the spec has no consent flag for the channel (= given)
    total_in_window: int


def contact_columns(
    feature_names: Sequence[str], *, channels: Sequence[str], policy: ContactPolicy
) -> ContactColumns:
    """The feature columns :func:`contact_state` reads (the spec must include the policy's
    window: training adds it)."""
    index = {name: i for i, name in enumerate(feature_names)}
    w = policy.window_days
    total_name = f"n_sent_{w}d"
    if total_name not in index:
        raise ValueError(
            f"the feature spec has no {w}-day window, which contact_policy.window_days needs; "
            "retrain with this catalog"
        )

    def cols(template: str) -> np.ndarray:
        return np.array([index[template.format(c=c)] for c in channels], dtype=np.intp)

    return ContactColumns(
        channels=tuple(channels),
        days_since=cols("ch_{c}_days_since_send"),
        unsubscribed=cols("ch_{c}_unsubscribed"),
        sends_in_window=cols(f"ch_{{c}}_sends_{w}d"),
        consent=np.array([index.get(f"consent_{c}", -1) for c in channels], dtype=np.intp),
        total_in_window=index[total_name],
    )


def contact_state(X: np.ndarray, columns: ContactColumns) -> ContactState:
    """Read the contact state off feature rows.

    The features already count, strictly before the decision time, the sends per channel
    and window, the hours since the last send, consent and unsubscribes; reusing them keeps
    one point-in-time implementation and costs nothing extra per request.
    """
    days_since = X[:, columns.days_since]
    # A channel without a consent column reads column 0 here and is then set to True.
    consent = X[:, np.maximum(columns.consent, 0)] != 0  # NaN (unknown) counts as given
    consent[:, columns.consent < 0] = True
    return ContactState(
        channels=columns.channels,
        consent=consent,
        unsubscribed=X[:, columns.unsubscribed] > 0,
        sends_in_window=X[:, columns.sends_in_window].astype(np.int64),
        hours_since_send=np.where(np.isnan(days_since), np.inf, days_since * 24.0),
        total_in_window=X[:, columns.total_in_window].astype(np.int64),
    )


def in_quiet_hours(
    policy: ContactPolicy, decision_time: pd.Series | pd.Timestamp | int
) -> np.ndarray:
    """True where the decision time falls inside the quiet hours (local to their timezone).

    ``decision_time`` is a Series, one Timestamp, or one time in ns since the epoch (UTC).
    One time (the online case) takes a scalar path: building a Series for one value cost
    milliseconds per request.
    """
    quiet = policy.quiet_hours
    n = len(decision_time) if isinstance(decision_time, pd.Series) else 1
    if quiet is None or quiet.start == quiet.end:
        return np.zeros(n, dtype=bool)
    zone = ZoneInfo(quiet.timezone)
    if isinstance(decision_time, pd.Timestamp):
        ts = decision_time if decision_time.tzinfo else decision_time.tz_localize("UTC")
        hour = np.array([ts.tz_convert(zone).hour])
    elif isinstance(decision_time, pd.Series):
        hour = pd.to_datetime(decision_time, utc=True).dt.tz_convert(zone).dt.hour.to_numpy()
    else:
        seconds = int(decision_time) // 10**9  # floor: the hour of 23:59:59.9 is 23
        hour = np.array([datetime.fromtimestamp(seconds, tz=zone).hour])
    if quiet.start < quiet.end:
        return (hour >= quiet.start) & (hour < quiet.end)
    return (hour >= quiet.start) | (hour < quiet.end)  # wraps past midnight


@dataclass(frozen=True)
class ActionRules:
    """Per action, what the rules compare against; computed once per model."""

    has_channel: np.ndarray  # bool (n_actions,): False for no action
    column: np.ndarray  # intp (n_actions,): the action's channel in ContactState arrays
    cap: np.ndarray  # int (n_actions,): the channel's cap per window
    quiet: np.ndarray  # bool (n_actions,): the channel observes the quiet hours


def action_rules(
    state_channels: Sequence[str], action_channels: Sequence[str | None], policy: ContactPolicy
) -> ActionRules:
    """:class:`ActionRules` of actions on ``action_channels`` (None for no action)."""
    chan_index = {c: j for j, c in enumerate(state_channels)}
    missing = [c for c in action_channels if c is not None and c not in chan_index]
    if missing:
        raise ValueError(f"action channel {missing[0]!r} has no contact state")
    quiet_channels = set(policy.quiet_hours.channels) if policy.quiet_hours else set()
    return ActionRules(
        has_channel=np.array([c is not None for c in action_channels], dtype=bool),
        column=np.array([chan_index[c] if c else 0 for c in action_channels], dtype=np.intp),
        cap=np.array(
            [
                policy.channel_caps.get(c, policy.max_per_channel) if c else 0
                for c in action_channels
            ]
        ),
        quiet=np.array([c in quiet_channels for c in action_channels], dtype=bool),
    )


def suppression_codes(
    state: ContactState,
    action_channels: Sequence[str | None] | ActionRules,
    policy: ContactPolicy,
    quiet_now: np.ndarray,
) -> np.ndarray:
    """``(n_customers, n_actions)`` rule codes: 0 eligible, else ``RULES.index(rule) + 1``.

    ``action_channels[a]`` is the channel of action ``a`` (None for no action), or their
    precomputed :class:`ActionRules`.  Every rule is evaluated for all actions at once,
    filled from the last rule to the first so that the first failing rule wins.
    """
    rules = (
        action_channels
        if isinstance(action_channels, ActionRules)
        else action_rules(state.channels, action_channels, policy)
    )
    n, col = len(state.total_in_window), rules.column
    checks = (
        ~state.consent[:, col],
        state.unsubscribed[:, col],
        state.hours_since_send[:, col] < policy.cooldown_hours,
        state.sends_in_window[:, col] >= rules.cap,
        (state.total_in_window >= policy.max_total)[:, None],
        np.asarray(quiet_now, dtype=bool).reshape(-1, 1) & rules.quiet,
    )
    codes = np.zeros((n, len(col)), dtype=np.int8)
    for rule_code in range(len(checks), 0, -1):
        codes[np.broadcast_to(checks[rule_code - 1], codes.shape)] = rule_code
    codes[:, ~rules.has_channel] = 0  # "no action" is never suppressed
    return codes


def action_channels(actions: Sequence[str], channel_of: dict[str, str]) -> list[str | None]:
    """Channels of the actions in code order (None for no action)."""
    return [None if a == NO_ACTION else channel_of[a] for a in actions]
