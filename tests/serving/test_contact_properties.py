"""Property tests of the served decisions: contact rules and exploration propensities.

Over many random histories, ``POST /v1/recommendations`` must never recommend an action
that breaks consent, an unsubscribe, the cool-down, a cap or the quiet hours, and every
action it removes must be reported with the first rule it breaks (docs/CATALOG.md,
docs/SERVING.md).  The expectation comes from an oracle written here in plain Python from
the raw events and the documented rules; it shares no code with ``features`` or
``serving.contact_policy``.  The propensities must be the documented exploration
distribution (epsilon-greedy or softmax, plus the control group) and must match the
empirical frequency of ``chosen`` over many seeded decisions.

The service runs in-process (FastAPI ``TestClient``) on a tiny bundle whose catalog has a
strict contact policy, so that every rule binds often.
"""

from __future__ import annotations

import itertools
import json
import math
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from hypothesis import event, given, note, settings
from hypothesis import strategies as st

from features.catalog import Catalog, catalog_from_dict
from features.spec import FeatureSpec
from serving.app import create_app
from serving.bundle import save_bundle
from serving.scoring import OutcomeScorer
from serving.settings import ServingSettings
from serving.store import SQLiteHistoryStore
from tests.conftest import make_events

# ---------------------------------------------------------------------------- the catalog
# A strict policy: a 5-day window (not the default 7, so a rule reading the wrong window
# column shows), small caps, a 48 h cool-down longer than a day, quiet hours in a time zone
# with daylight saving time, and an ``ads`` channel that is never quiet.
WINDOW_DAYS = 5
COOLDOWN_HOURS = 48
HISTORY_DAYS = 120  # the service's history_days: older events are out of its features
MAX_PER_CHANNEL = 2
CHANNEL_CAPS = {"phone": 1, "ads": 3}
MAX_TOTAL = 4
QUIET_START, QUIET_END, QUIET_TZ = 21, 8, "Europe/Paris"
QUIET_CHANNELS = ("sms", "push", "phone")
ACTION_CHANNEL = {
    "email_promo": "email",
    "email_content": "email",
    "sms_offer": "sms",
    "push_reminder": "push",
    "phone_call": "phone",
    "display_ad": "ads",
}
ACTIONS: tuple[str, ...] = ("none", *ACTION_CHANNEL)
CHANNELS = tuple(sorted(set(ACTION_CHANNEL.values())))

EPSILON, CONTROL = 0.2, 0.1
TEMPERATURE = 0.5


def _catalog(exploration: dict[str, Any]) -> Catalog:
    return catalog_from_dict(
        {
            # Small values keep the scores of the tiny models around 0.1-1, the scale on
            # which a softmax temperature of 0.5 spreads the probability mass.
            "objective": {"conversion_value": 5.0, "churn_cost": 2.0},
            "actions": [
                {"id": a, "channel": c, "cost": 0.01 * (i + 1)}
                for i, (a, c) in enumerate(ACTION_CHANNEL.items())
            ],
            "contact_policy": {
                "window_days": WINDOW_DAYS,
                "max_per_channel": MAX_PER_CHANNEL,
                "channel_caps": CHANNEL_CAPS,
                "max_total": MAX_TOTAL,
                "cooldown_hours": COOLDOWN_HOURS,
                "quiet_hours": {
                    "start": QUIET_START,
                    "end": QUIET_END,
                    "timezone": QUIET_TZ,
                    "channels": list(QUIET_CHANNELS),
                },
            },
            "exploration": exploration,
        }
    )


EPSILON_CATALOG = _catalog({"method": "epsilon", "epsilon": EPSILON, "control_share": CONTROL})
SOFTMAX_CATALOG = _catalog(
    {"method": "softmax", "temperature": TEMPERATURE, "control_share": CONTROL}
)


def _booster(n_cols: int, seed: int) -> lgb.Booster:
    """A few-millisecond LightGBM model whose output depends on the action and feature 0."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(400, n_cols))
    X[:, -1] = rng.integers(0, len(ACTIONS), 400)
    effect = rng.normal(scale=0.8, size=len(ACTIONS))[X[:, -1].astype(int)]
    y = (X[:, 0] + effect + rng.normal(size=400) > 0.3).astype(float)
    params = {"objective": "binary", "num_leaves": 4, "min_data_in_leaf": 10, "verbose": -1}
    return lgb.train(params, lgb.Dataset(X, y), num_boost_round=8)


def _save_bundle(folder: Path, catalog: Catalog) -> Path:
    """A loadable bundle for ``catalog``; its feature spec has the policy's window."""
    spec = FeatureSpec(
        channels=CHANNELS,
        windows_days=(WINDOW_DAYS, 7, 30),
        consent_channels=CHANNELS,
    )
    width = spec.n_features + 1
    return save_bundle(
        folder,
        model_version="props-1",
        spec=spec,
        catalog=catalog,
        conversion=OutcomeScorer("single", ACTIONS, {"all": _booster(width, 1)}),
        churn=OutcomeScorer("single", ACTIONS, {"all": _booster(width, 2)}),
    )


@dataclass
class Service:
    """A running app: its client, its store (to load consent rows) and its decision log."""

    client: TestClient
    store: SQLiteHistoryStore
    decision_log: Path


def _service(root: Path, catalog: Catalog) -> Iterator[Service]:
    settings_ = ServingSettings(
        model=_save_bundle(root / "model", catalog),
        store_path=root / "store.db",
        decision_log_path=root / "decisions.db",
        seed=20240601,
        history_days=HISTORY_DAYS,
    )
    store = SQLiteHistoryStore(settings_.store_path)
    with TestClient(create_app(settings_, store=store)) as client:
        yield Service(client, store, settings_.decision_log_path)


@pytest.fixture(scope="module")
def eps_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    yield from _service(tmp_path_factory.mktemp("eps"), EPSILON_CATALOG)


@pytest.fixture(scope="module")
def softmax_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    yield from _service(tmp_path_factory.mktemp("softmax"), SOFTMAX_CATALOG)


_ids = itertools.count()


def _fresh_customer() -> str:
    """A customer id never used before in this module, so histories never mix."""
    return f"prop-{next(_ids)}"


# ---------------------------------------------------------------------------- histories
US = 1
SEC = 1_000_000 * US
HOUR = 3600 * SEC
DAY = 24 * HOUR
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PARIS = ZoneInfo(QUIET_TZ)


def _dt(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def _iso(us: int) -> str:
    return _dt(us).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Event:
    ts: int  # microseconds since the epoch, UTC
    channel: str
    event_type: str
    action: str | None = None
    value: float | None = None


# (event_type, channel, action) templates; sends of the catalog's actions dominate.
SENDS = [("sent", c, a) for a, c in ACTION_CHANNEL.items()]
OTHERS = [
    ("sent", "social", "social_post"),  # a send outside the catalog: counts for max_total
    ("open", "email", "email_promo"),
    ("click", "email", "email_promo"),
    ("open", "push", "push_reminder"),
    ("visit", "web", None),
    ("purchase", "web", None),
    ("support", "phone", None),
]
UNSUBSCRIBES = [("unsubscribe", c, None) for c in (*CHANNELS, "social")]

# Offsets from as_of, in microseconds.  Besides uniform times over the last 30 days, the
# exact edges of every rule: events at and after as_of (must not count), just before it,
# the window start (docs/FEATURES.md: "in the last d days" means [t - d days, t), so an
# event exactly at t - d counts and one a second earlier does not), and the cool-down
# edge (serving/contact_policy.py: "a send on the channel less than cooldown_hours ago";
# a send exactly 48 h ago no longer blocks).  Decisions read the features in float64, so
# the cool-down is exact to the nanosecond; a send 1 µs short of 48 h still blocks.
EDGES = [
    0,
    1 * US,
    1 * SEC,
    3 * HOUR,
    -1 * US,
    -1 * SEC,
    -WINDOW_DAYS * DAY,
    -WINDOW_DAYS * DAY + SEC,
    -WINDOW_DAYS * DAY - SEC,
    -COOLDOWN_HOURS * HOUR,
    -COOLDOWN_HOURS * HOUR + SEC,
    -COOLDOWN_HOURS * HOUR - SEC,
    -COOLDOWN_HOURS * HOUR + US,
    -COOLDOWN_HOURS * HOUR - US,
]
offsets = st.one_of(
    st.integers(-30 * DAY // SEC, -1).map(lambda s: s * SEC),
    st.integers(-(WINDOW_DAYS + 1) * DAY // SEC, -1).map(lambda s: s * SEC),  # the window
    # In the window but out of the cool-down: where the caps bind on their own.
    st.integers(-WINDOW_DAYS * DAY // SEC, -COOLDOWN_HOURS * HOUR // SEC).map(lambda s: s * SEC),
    st.integers(-8 * DAY // HOUR, 0).map(lambda h: h * HOUR),  # many ties on the hour
    st.sampled_from(EDGES),
)
# Opt-outs also long before the service's history window: they never expire.
opt_out_offsets = st.one_of(
    offsets,
    st.integers(-3 * HISTORY_DAYS * DAY // SEC, -HISTORY_DAYS * DAY // SEC).map(lambda s: s * SEC),
    st.sampled_from([-HISTORY_DAYS * DAY - US, -HISTORY_DAYS * DAY, -HISTORY_DAYS * DAY + US]),
)
# Sends weigh three times more than the other templates, so that the caps bind.
templates = st.sampled_from([*SENDS, *SENDS, *SENDS, *OTHERS])


@st.composite
def as_of_times(draw: st.DrawFn) -> int:
    """A decision time in 2024 (both DST changes included), often at a quiet-hours edge."""
    day = datetime(2024, 1, 1) + timedelta(days=draw(st.integers(0, 365)))
    minute = draw(
        st.one_of(
            st.integers(0, 24 * 60 - 1),
            st.sampled_from(
                [h * 60 + m for h in (QUIET_START, QUIET_END) for m in (-1, 0)]  # 20:59, 21:00…
            ),
        )
    )
    second = draw(st.sampled_from([0, 0, 1, 59]))
    local = (day + timedelta(minutes=minute, seconds=second)).replace(tzinfo=PARIS)
    return (local.astimezone(UTC) - EPOCH) // timedelta(microseconds=1)


CONSENT_VALUES = [True, True, False, None, "no", "yes", "0", "false", 1, 0]


@dataclass(frozen=True)
class Scenario:
    """One customer: a history, a consent row, and the decision times to check."""

    as_of: int  # the main decision (history inline, from the store or via /v1/events)
    events: list[Event]
    consent: dict[str, Any] | None  # None: the customer has no row (consent given)
    more_times: list[int]  # more decisions over the same history (store, batch endpoint)


def _local_us(day: datetime, hour: int, minute: int = 0, second: int = 0, us: int = 0) -> int:
    """A wall-clock time in the quiet-hours zone, as microseconds since the epoch (UTC)."""
    local = day.replace(hour=hour, minute=minute, second=second, microsecond=us, tzinfo=PARIS)
    return (local.astimezone(UTC) - EPOCH) // timedelta(microseconds=1)


def _edge_times(as_of: int, events: list[Event]) -> list[int]:
    """Decision times on the edges of the rules for this history.

    Each event seen from exactly its own time (invisible) and 1 us later (visible), from
    exactly ``cooldown_hours`` later (a send no longer blocks) and 1 s before that, from
    exactly ``window_days`` later (still in the window) and 1 us after that (out); and the
    first and last microsecond of the quiet hours on the local day of ``as_of``.
    """
    day = _dt(as_of).astimezone(PARIS).replace(tzinfo=None)
    times = {
        _local_us(day, QUIET_START),
        _local_us(day, QUIET_START - 1, 59, 59, 999_999),
        _local_us(day, QUIET_END),
        _local_us(day, QUIET_END - 1, 59, 59, 999_999),
    }
    for e in events:
        times |= {e.ts, e.ts + US, e.ts + COOLDOWN_HOURS * HOUR, e.ts + COOLDOWN_HOURS * HOUR - US}
        times |= {e.ts + WINDOW_DAYS * DAY, e.ts + WINDOW_DAYS * DAY + US}
    return sorted(times)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    as_of = draw(as_of_times())
    events = []
    for _ in range(draw(st.integers(0, 36))):
        etype, channel, action = draw(templates)
        value = draw(st.sampled_from([10.0, 42.5])) if etype == "purchase" else None
        events.append(Event(as_of + draw(offsets), channel, etype, action, value))
    # Unsubscribes apart (0-4 of them): mixed in with the rest, they would block most
    # channels of most histories and hide the rules checked after them.
    for etype, channel, _ in draw(st.lists(st.sampled_from(UNSUBSCRIBES), max_size=4)):
        events.append(Event(as_of + draw(opt_out_offsets), channel, etype))
    events = draw(st.permutations(events))  # the order of the rows must not matter
    consent = None
    if draw(st.booleans()):
        consent = {
            f"consent_{c}": draw(st.sampled_from(CONSENT_VALUES))
            for c in CHANNELS
            if draw(st.integers(0, 3))  # sometimes the column is missing altogether
        }
    edges = _edge_times(as_of, events)
    more = draw(st.lists(st.sampled_from(edges), min_size=2, max_size=8, unique=True))
    return Scenario(as_of, events, consent, more)


# ---------------------------------------------------------------------------- the oracle
def _refused(value: Any) -> bool:
    """docs/FEATURES.md: missing = consent given; False, 0, or false/0/no/n/f = refused."""
    if value is None:
        return False
    if isinstance(value, str):
        return value.strip().lower() in {"false", "0", "no", "n", "f"}
    return not value


def _quiet(as_of: int) -> bool:
    """docs/CATALOG.md: [start, end) in local time, wrapping past midnight when start > end."""
    hour = _dt(as_of).astimezone(PARIS).hour
    if QUIET_START < QUIET_END:
        return QUIET_START <= hour < QUIET_END
    return hour >= QUIET_START or hour < QUIET_END


def expected_rules(
    as_of: int, events: list[Event], consent: dict[str, Any] | None
) -> dict[str, str | None]:
    """The first documented rule each action breaks (None = eligible), from raw events.

    Order (docs/SERVING.md, ``suppressed``): consent, unsubscribed, cooldown, channel_cap,
    total_cap, quiet_hours.  Only events strictly before ``as_of`` count; the window is
    ``[as_of - window_days, as_of)``.
    """
    past = [e for e in events if e.ts < as_of]
    in_window = [e for e in past if e.event_type == "sent" and e.ts >= as_of - WINDOW_DAYS * DAY]
    out: dict[str, str | None] = {"none": None}  # never suppressed
    for action, c in ACTION_CHANNEL.items():
        sends_c = [e for e in in_window if e.channel == c]
        if consent is not None and _refused(consent.get(f"consent_{c}")):
            rule: str | None = "consent"
        elif any(e.event_type == "unsubscribe" and e.channel == c for e in past):
            rule = "unsubscribed"
        elif any(
            e.event_type == "sent" and e.channel == c and as_of - e.ts < COOLDOWN_HOURS * HOUR
            for e in past
        ):
            rule = "cooldown"
        elif len(sends_c) >= CHANNEL_CAPS.get(c, MAX_PER_CHANNEL):
            rule = "channel_cap"
        elif len(in_window) >= MAX_TOTAL:
            rule = "total_cap"
        elif c in QUIET_CHANNELS and _quiet(as_of):
            rule = "quiet_hours"
        else:
            rule = None
        out[action] = rule
    return out


def expected_propensities(recs: list[dict[str, Any]], method: str) -> tuple[dict[str, float], str]:
    """The documented exploration distribution over the returned (= all eligible) actions.

    Returns the propensities and the greedy action (best score, ties to the lower action
    code, i.e. ``none`` first).
    """
    greedy = max(recs, key=lambda r: (r["score"], -ACTIONS.index(r["action"])))["action"]
    n = len(recs)
    if method == "epsilon":
        # docs/SERVING.md: (1 - c) * (eps / n + (1 - eps) * [greedy]) + c * [none]
        treated = {r["action"]: EPSILON / n + (1 - EPSILON) * (r["action"] == greedy) for r in recs}
    else:
        # docs/CATALOG.md: probability ∝ exp(score / temperature) over the eligible actions.
        top = max(r["score"] for r in recs)
        w = {r["action"]: math.exp((r["score"] - top) / TEMPERATURE) for r in recs}
        total = sum(w.values())
        treated = {a: v / total for a, v in w.items()}
    probs = {a: (1 - CONTROL) * p + CONTROL * (a == "none") for a, p in treated.items()}
    return probs, greedy


# ---------------------------------------------------------------------------- requests
def _event_rows(customer_id: str, events: list[Event]) -> list[dict[str, Any]]:
    rows = []
    for e in events:
        row: dict[str, Any] = {
            "customer_id": customer_id,
            "timestamp": _iso(e.ts),
            "channel": e.channel,
            "event_type": e.event_type,
        }
        if e.action is not None:
            row["action"] = e.action
        if e.value is not None:
            row["value"] = e.value
        rows.append(row)
    return rows


def _store_history(service: Service, customer_id: str, events: list[Event]) -> None:
    """Write the history straight into the service's store (canonical event table)."""
    if not events:
        return
    rows = [
        (customer_id, _dt(e.ts).replace(tzinfo=None), e.channel, e.event_type, e.action, e.value)
        for e in events
    ]
    accepted, duplicates = service.store.add(make_events(rows))
    assert (accepted, duplicates) == (len(events), 0)


HISTORY_SOURCES = ("inline", "store", "events_api", "inline_but_opt_outs")


def _opt_outs(events: list[Event]) -> tuple[list[Event], list[Event]]:
    """``(unsubscribes, the rest)``."""
    return (
        [e for e in events if e.event_type == "unsubscribe"],
        [e for e in events if e.event_type != "unsubscribe"],
    )


def _decide_all(service: Service, sc: Scenario, source: str) -> list[tuple[int, dict[str, Any]]]:
    """Every decision of the scenario for a fresh customer, k = all: ``(as_of, response)``.

    The main decision reads its history from ``source``: inline in the request, written to
    the store directly, or posted to ``/v1/events`` first; or inline but for the
    unsubscribes, which only the store holds (a client's partial history must not hide a
    stored opt-out).  The other times are decided in one batch call over the store.  The
    consent row always goes to the store.
    """
    cid = _fresh_customer()
    if sc.consent is not None:
        service.store.load_customers(pd.DataFrame([{"customer_id": cid, **sc.consent}]))
    body: dict[str, Any] = {"customer_id": cid, "k": len(ACTIONS), "as_of": _iso(sc.as_of)}
    opt_outs, rest = _opt_outs(sc.events)
    if source == "inline":
        body["events"] = _event_rows(cid, sc.events)
    elif source == "inline_but_opt_outs":
        _store_history(service, cid, opt_outs)
        body["events"] = _event_rows(cid, rest)
    elif source == "store":
        _store_history(service, cid, sc.events)
    elif sc.events:
        r = service.client.post("/v1/events", json={"events": _event_rows(cid, sc.events)})
        assert r.status_code == 200, r.text
        assert r.json()["accepted"] == len(sc.events) and not r.json()["errors"], r.text
    r = service.client.post("/v1/recommendations", json=body)
    assert r.status_code == 200, r.text
    out = [(sc.as_of, r.json())]
    if sc.more_times:
        if source == "inline":
            _store_history(service, cid, sc.events)
        elif source == "inline_but_opt_outs":
            _store_history(service, cid, rest)
        batch = [{"customer_id": cid, "k": len(ACTIONS), "as_of": _iso(t)} for t in sc.more_times]
        r = service.client.post("/v1/recommendations:batch", json={"requests": batch})
        assert r.status_code == 200, r.text
        out += zip(sc.more_times, r.json()["responses"], strict=True)
    return out


def _logged_candidates(service: Service, decision_id: str) -> dict[str, dict[str, Any]]:
    """The decision log's candidates of one decision, by action."""
    conn = sqlite3.connect(f"file:{service.decision_log}?mode=ro", uri=True)
    try:
        row = conn.execute(
            "SELECT candidates FROM decisions WHERE decision_id = ?", (decision_id,)
        ).fetchone()
    finally:
        conn.close()
    assert row is not None, f"decision {decision_id} is not in the decision log"
    return {c["action"]: c for c in json.loads(row[0])}


def _logged_choices(service: Service, decision_ids: list[str]) -> dict[str, tuple[str, float]]:
    """``decision_id -> (action, propensity)`` as the decision log holds them."""
    conn = sqlite3.connect(f"file:{service.decision_log}?mode=ro", uri=True)
    try:
        marks = ",".join("?" * len(decision_ids))
        rows = conn.execute(
            f"SELECT decision_id, action, propensity FROM decisions WHERE decision_id IN ({marks})",
            decision_ids,
        ).fetchall()
    finally:
        conn.close()
    return {d: (a, p) for d, a, p in rows}


def _describe(as_of: int, events: list[Event], consent: dict[str, Any] | None) -> str:
    local = _dt(as_of).astimezone(PARIS)
    lines = [f"as_of={_iso(as_of)} (local {local:%Y-%m-%d %H:%M:%S %Z}), consent={consent}"]
    for e in sorted(events, key=lambda e: e.ts):
        delta = (e.ts - as_of) / HOUR
        lines.append(f"  {_iso(e.ts)} ({delta:+.6f} h) {e.channel} {e.event_type} {e.action}")
    return "\n".join(lines)


def check_decision(
    service: Service,
    out: dict[str, Any],
    as_of: int,
    events: list[Event],
    consent: dict[str, Any] | None,
    method: str,
) -> dict[str, str | None]:
    """Every property of one decision that the rules and the exploration settings imply.

    Returns the rule that removed each action (None = eligible).
    """
    where = _describe(as_of, events, consent)
    recs = out["recommendations"]
    returned = [r["action"] for r in recs]
    removed = {s["action"]: s["rule"] for s in out["suppressed"]}
    # Every candidate exactly once: recommended (k = all) or suppressed, never both.
    assert len(set(returned)) == len(returned), where
    assert len(removed) == len(out["suppressed"]), where
    assert sorted([*returned, *removed]) == sorted(ACTIONS), where
    assert "none" in returned, where
    for r in recs:
        assert r["channel"] == ACTION_CHANNEL.get(r["action"], "none"), r
    # The rules: what is recommended breaks none; what is removed names its first rule.
    expected = expected_rules(as_of, events, consent)
    got = {a: removed.get(a) for a in ACTIONS}
    wrong = {a: (got[a], expected[a]) for a in ACTIONS if got[a] != expected[a]}
    assert not wrong, f"(served, expected) rule per action: {wrong}\n{where}"
    # The propensities: the documented distribution, summing to 1 over the eligible ones.
    want, greedy = expected_propensities(recs, method)
    for r in recs:
        assert r["propensity"] == pytest.approx(want[r["action"]], rel=1e-9, abs=1e-12), (
            r["action"],
            where,
        )
    assert sum(r["propensity"] for r in recs) == pytest.approx(1.0, abs=1e-9)
    assert returned[0] == out["chosen"] and out["explored"] == (out["chosen"] != greedy)
    rest = [r["score"] for r in recs[1:]]
    assert rest == sorted(rest, reverse=True), "after the pick, ranked by score"
    # ... and the suppressed actions get none of the mass (decision log, every candidate).
    logged = _logged_candidates(service, out["decision_id"])
    for a in ACTIONS:
        assert logged[a]["suppressed"] == expected[a], (a, where)
        if expected[a] is not None:
            assert logged[a]["propensity"] == 0.0, (a, where)
        else:
            assert logged[a]["propensity"] == pytest.approx(want[a], rel=1e-9, abs=1e-12)
    return expected


def _record(expected: dict[str, str | None]) -> None:
    """Hypothesis statistics (``--hypothesis-show-statistics``): how often each rule binds."""
    for rule in sorted(set(expected.values()) - {None}):
        event(f"rule {rule}")


# ---------------------------------------------------------------------------- properties
RULES_SETTINGS = settings(derandomize=True, max_examples=150, deadline=None)


@RULES_SETTINGS
@given(scenarios(), st.sampled_from(HISTORY_SOURCES))
def test_no_recommendation_ever_breaks_a_contact_rule(
    eps_service: Service, sc: Scenario, source: str
) -> None:
    """Over random histories (inline, or read from the store), at random times and at the
    edges of every rule (quiet-hours limits, cool-down and window edges, events exactly at
    the decision time), with random consent rows: no recommended action breaks consent,
    an unsubscribe, the cool-down, a cap or the quiet hours; each removed action is
    reported with the first rule it breaks in the documented order; recommendations and
    suppressions cover every action exactly once; events at or after ``as_of`` never
    count; and the propensities are the epsilon-greedy formula, sum to 1 and give
    suppressed actions nothing."""
    note(f"main decision's history from: {source}; more times: {[_iso(t) for t in sc.more_times]}")
    for as_of, out in _decide_all(eps_service, sc, source):
        _record(check_decision(eps_service, out, as_of, sc.events, sc.consent, "epsilon"))


@settings(derandomize=True, max_examples=30, deadline=None)
@given(scenarios())
def test_softmax_propensities_over_random_histories(softmax_service: Service, sc: Scenario) -> None:
    """With softmax exploration, the propensities are ``(1 - c) * softmax(score / T)`` over
    the eligible actions plus ``c`` on ``none``; they sum to 1, suppressed actions get none
    of the mass, and the contact rules hold exactly as with epsilon-greedy."""
    for as_of, out in _decide_all(softmax_service, sc, "store"):
        _record(check_decision(softmax_service, out, as_of, sc.events, sc.consent, "softmax"))


# ---------------------------------------------------------------------------- empirical
# One customer at noon Paris time: the e-mail cool-down and the phone cap bind, so three
# actions are suppressed and four (none included) share the probability mass.
FIXED_AS_OF = (datetime(2024, 5, 14, 12, 0, tzinfo=PARIS).astimezone(UTC) - EPOCH) // timedelta(
    microseconds=1
)
FIXED_EVENTS = [
    Event(FIXED_AS_OF - 10 * HOUR, "email", "sent", "email_promo"),  # email: cooldown
    Event(FIXED_AS_OF - 4 * DAY, "phone", "sent", "phone_call"),  # phone: cap 1 reached
    Event(FIXED_AS_OF - 3 * DAY, "web", "visit"),
    Event(FIXED_AS_OF + HOUR, "sms", "unsubscribe"),  # after as_of: does not count
]
N_DRAWS = 2000


def _empirical_check(service: Service, method: str) -> None:
    cid = _fresh_customer()
    _store_history(service, cid, FIXED_EVENTS)
    body = {"customer_id": cid, "k": len(ACTIONS), "as_of": _iso(FIXED_AS_OF)}
    r = service.client.post("/v1/recommendations", json=body)
    assert r.status_code == 200, r.text
    first = r.json()
    check_decision(service, first, FIXED_AS_OF, FIXED_EVENTS, None, method)
    assert {s["action"] for s in first["suppressed"]} == {
        "email_promo",
        "email_content",
        "phone_call",
    }
    probs = {r["action"]: r["propensity"] for r in first["recommendations"]}
    assert len(probs) == 4 and min(probs.values()) > 0.01  # a non-trivial distribution
    counts = dict.fromkeys(ACTIONS, 0)
    for _ in range(N_DRAWS // 1000):
        r = service.client.post("/v1/recommendations:batch", json={"requests": [body] * 1000})
        assert r.status_code == 200, r.text
        responses = r.json()["responses"]
        for resp in responses:
            counts[resp["chosen"]] += 1
            assert {x["action"]: x["propensity"] for x in resp["recommendations"]} == probs
        # The decision log holds each pick with its propensity (what OPE will weigh by).
        logged = _logged_choices(service, [resp["decision_id"] for resp in responses])
        assert logged == {
            resp["decision_id"]: (resp["chosen"], probs[resp["chosen"]]) for resp in responses
        }
    for a in ACTIONS:
        p = probs.get(a, 0.0)  # a suppressed action: p = 0, so it must never be chosen
        sigma = math.sqrt(N_DRAWS * p * (1 - p))
        assert abs(counts[a] - N_DRAWS * p) <= 5 * sigma, (a, counts[a], N_DRAWS * p, counts)


def test_chosen_frequencies_match_epsilon_propensities(eps_service: Service) -> None:
    """Over 2,000 seeded decisions for one customer at one time, each action is chosen with
    its returned epsilon-greedy propensity (within 5 binomial sigmas), a suppressed action
    is never chosen, and the decision log holds every pick with that propensity."""
    _empirical_check(eps_service, "epsilon")


def test_chosen_frequencies_match_softmax_propensities(softmax_service: Service) -> None:
    """The same with softmax exploration."""
    _empirical_check(softmax_service, "softmax")
