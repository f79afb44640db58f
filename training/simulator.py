"""A synthetic touchpoint world with known causal effects, and its exact ground truth.

:func:`simulate` draws customers with latent channel affinities, runs a confounded
logging policy and the customers' responses day by day (vectorized over customers), and
returns the canonical event table (``features/schema.py``) together with the ground truth:
for held-out customers, the probability of converting within ``horizons.conversion_days``
and of churning within ``horizons.churn_days`` under every action and under ``none``.
:func:`policy_value` and :func:`oracle_fraction` score a policy against that truth.

The world itself (attributes, hazards, effects, logging policy) is in
:mod:`training.simulator_world`; see ``docs/SIMULATOR.md`` for the full description.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from features.schema import (
    CONSENT_PREFIX,
    EVENT_TYPE_ORDER,
    KNOWN_CHANNELS,
    NO_ACTION,
)
from training.simulator_eval import (
    attribute_policy_choices,
    best_single_action_choices,
    expected_values,
    oracle_choices,
    oracle_fraction,
    policy_value,
)
from training.simulator_events import EventBuffer, build_event_table
from training.simulator_truth import GROUND_TRUTH_COLUMNS, _ground_truth
from training.simulator_world import (
    _GENERIC_RESPONSE,
    CHANNEL_RESPONSES,
    LoggingPolicy,
    State,
    World,
    apply_send_now,
    churn_hazard,
    default_catalog,
    end_of_day,
    make_world,
    purchase_hazard,
)

__all__ = [
    "GROUND_TRUTH_COLUMNS",
    "Simulation",
    "attribute_policy_choices",
    "best_single_action_choices",
    "expected_values",
    "monte_carlo_outcomes",
    "oracle_choices",
    "oracle_fraction",
    "policy_value",
    "simulate",
    "write_simulation",
]

#: Share of churners who say so (an explicit ``churn`` event); the rest go silent.
EXPLICIT_CHURN_SHARE = 0.6
#: Business hours of the logging policy's sends, in UTC: [08:00, 21:00).
SEND_HOURS = (8, 21)
#: Daily decay of the spend average the logging policy uses as "customer value".
SPEND_DECAY = 0.95
_DAY_S = 86_400
_ET = {name: i for i, name in enumerate(EVENT_TYPE_ORDER)}


@dataclass
class Simulation:
    """The output of :func:`simulate`.

    Attributes
    ----------
    events
        The canonical event table (``features/schema.py``), sorted by customer and time.
    customers
        ``customer_id``, the observed static attributes and ``consent_<channel>`` flags.
    catalog
        The catalog (plain dict, as in YAML) the world was simulated with.
    ground_truth
        :data:`GROUND_TRUTH_COLUMNS` for the held-out customers at ``as_of``.
    params
        Parameters of the run (seed, sizes, start, as_of, ...) and summary counts.
    latent
        Per-customer latent truth (churn day, base hazards, initial observations).  Not
        written by :func:`write_simulation`: it is for tests and diagnostics only.
    """

    events: pd.DataFrame
    customers: pd.DataFrame
    catalog: dict[str, Any]
    ground_truth: pd.DataFrame
    params: dict[str, Any]
    latent: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)
    world: World | None = field(default=None, repr=False)
    final_state: State | None = field(default=None, repr=False)


def _check_catalog(catalog: dict[str, Any]) -> dict[str, Any]:
    actions = catalog.get("actions")
    if not actions:
        raise ValueError("catalog has no actions")
    ids = [a.get("id") for a in actions]
    if len(set(ids)) != len(ids) or NO_ACTION in ids or any(not i for i in ids):
        raise ValueError(f"catalog action ids must be unique, non-empty and not {NO_ACTION!r}")
    for a in actions:
        if not a.get("channel"):
            raise ValueError(f"catalog action {a.get('id')!r} has no channel")
    return catalog


def _horizons(catalog: dict[str, Any]) -> tuple[int, int]:
    hz = catalog.get("horizons") or {}
    return int(hz.get("conversion_days", 14)), int(hz.get("churn_days", 30))


def _choose(probs: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF draw of one column per row of ``probs`` (rows sum to 1)."""
    cum = np.cumsum(probs, axis=1)
    choice = (cum < (u * cum[:, -1])[:, None]).sum(axis=1)
    return np.minimum(choice, probs.shape[1] - 1)


def simulate(
    *,
    n_customers: int = 10_000,
    days: int = 300,
    seed: int = 0,
    start: str = "2026-01-01",
    holdout_share: float = 0.1,
    catalog: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Simulation:
    """Simulate ``days`` days of a touchpoint log for ``n_customers`` customers.

    Parameters
    ----------
    n_customers
        Number of customers (all present from day 0; some churn along the way).
    days
        Length of the history; ``as_of = start + days`` is where the ground truth starts.
    seed
        Seed of the only random generator used: the same seed gives identical output.
    start
        First day of the history (UTC midnight).
    holdout_share
        Share of ``n_customers`` drawn at random among the customers still active at
        ``as_of`` (capped by their number) for whom the ground truth is computed.
    catalog
        Catalog as a plain dict (``yaml.safe_load`` of a catalog file); default:
        ``features/default_catalog.yaml``.  Actions outside the default catalog get
        generic effects on their channel.
    progress
        Called with a short message every 30 simulated days and at the end.

    Returns
    -------
    Simulation
        Events, customers, catalog, ground truth, params (and latent truth in memory).
    """
    if n_customers < 1 or days < 1:
        raise ValueError("n_customers and days must be positive")
    if not 0.0 <= holdout_share <= 1.0:
        raise ValueError("holdout_share must be in [0, 1]")
    t0 = time.perf_counter()
    catalog = _check_catalog(copy.deepcopy(catalog) if catalog is not None else default_catalog())
    conv_days, churn_days = _horizons(catalog)
    rng = np.random.default_rng(seed)
    world = make_world(rng, n_customers, catalog["actions"])
    n = world.n
    k = len(world.channels)
    start_ts = pd.Timestamp(start)
    start_ts = (
        start_ts.tz_localize("UTC") if start_ts.tzinfo is None else start_ts.tz_convert("UTC")
    )
    start_ts = start_ts.normalize()
    as_of = start_ts + pd.Timedelta(days=days)

    channel_names = list(KNOWN_CHANNELS) + [c for c in world.channels if c not in KNOWN_CHANNELS]
    ch_code = {c: i for i, c in enumerate(channel_names)}
    action_ch_code = np.array([ch_code[world.channels[j]] for j in world.action_channel])
    responses = [CHANNEL_RESPONSES.get(c, _GENERIC_RESPONSE) for c in world.channels]
    has_open = np.array([r.open_logit is not None for r in responses])
    open_logit = np.array([r.open_logit if r.open_logit is not None else 0.0 for r in responses])
    click_logit = np.array([r.click_logit for r in responses])
    unsub_base = np.array([r.unsubscribe for r in responses])
    policy = LoggingPolicy()

    # Observations the logging policy keys on; the pre-history is drawn, not logged.
    days_since = np.floor(rng.exponential(1.0 / world.visit_rate)).astype(float)
    spend = world.lam0 * np.exp(world.value_mu) / (1 - SPEND_DECAY)
    init_days_since, init_spend = days_since.copy(), spend.copy()

    state = State.zeros(n)
    alive = np.ones(n, dtype=bool)
    # The company only knows about churn it is told about: it keeps contacting customers who
    # left silently (they just never respond), and stops after an explicit churn event.
    reachable = np.ones(n, dtype=bool)
    churn_day = np.full(n, -1, dtype=np.int64)
    unsub = np.zeros((n, k), dtype=bool)
    all_idx = np.arange(n)
    buf = EventBuffer()

    for t in range(days):
        day0 = t * _DAY_S
        # 1. Churn comes first: a customer who churns today does nothing else today.
        churn_now = alive & (rng.random(n) < churn_hazard(world, state, all_idx))
        churn_day[churn_now] = t
        alive &= ~churn_now
        cidx = np.flatnonzero(churn_now)
        cidx = cidx[rng.random(cidx.size) < EXPLICIT_CHURN_SHARE]
        reachable[cidx] = False
        buf.add(
            cidx,
            day0 + rng.integers(0, _DAY_S, cidx.size),
            np.where(rng.random(cidx.size) < 0.7, ch_code["web"], ch_code["phone"]),
            _ET["churn"],
        )

        # 2. The logging policy: whether to send, and which eligible action.
        eligible = (world.consent & ~unsub)[:, world.action_channel]
        p_send, p_act = policy.probabilities(
            days_since, spend, state.fatigue, eligible, world.action_cost
        )
        send = reachable & (rng.random(n) < p_send)
        sidx = np.flatnonzero(send)
        act = _choose(p_act[sidx], rng.random(sidx.size))
        propensity = p_send[sidx] * p_act[sidx, act]
        send_s = rng.integers(SEND_HOURS[0] * 3600, SEND_HOURS[1] * 3600, sidx.size)
        buf.add(sidx, day0 + send_s, action_ch_code[act], _ET["sent"], act, propensity=propensity)
        # From here on, only customers who are still there can react to the send.
        listening = alive[sidx]
        send_all, act_all = sidx, act
        sidx, act, send_s = sidx[listening], act[listening], send_s[listening]

        # 3. Responses on the same channel, later the same day: affinity shows through.
        ch = world.action_channel[act]
        z = world.affinity[sidx, ch]
        fat = state.fatigue[sidx]
        opened = has_open[ch] & (rng.random(sidx.size) < _sig(open_logit[ch] + 1.2 * z - 0.3 * fat))
        open_s = np.minimum(
            send_s + 60 + rng.exponential(1800.0, sidx.size).astype(np.int64), _DAY_S - 1
        )
        clicked = (opened | ~has_open[ch]) & (
            rng.random(sidx.size) < _sig(click_logit[ch] + 1.2 * z)
        )
        click_s = np.minimum(
            np.where(opened, open_s, send_s)
            + 30
            + rng.exponential(600.0, sidx.size).astype(np.int64),
            _DAY_S - 1,
        )
        p_unsub = np.minimum(unsub_base[ch] * np.exp(-0.8 * z) * (1 + 0.5 * fat), 0.5)
        unsubscribed = rng.random(sidx.size) < p_unsub
        unsub_s = np.minimum(np.maximum(open_s, click_s) + 120, _DAY_S - 1)
        for mask, secs, etype in ((opened, open_s, "open"), (clicked, click_s, "click")):
            buf.add(sidx[mask], day0 + secs[mask], action_ch_code[act[mask]], _ET[etype], act[mask])
        buf.add(
            sidx[unsubscribed],
            day0 + unsub_s[unsubscribed],
            action_ch_code[act[unsubscribed]],
            _ET["unsubscribe"],
        )
        unsub[sidx[unsubscribed], ch[unsubscribed]] = True  # effective from tomorrow

        # 4. Organic inbound activity, driven by today's (pre-send) state.
        buy = alive & (rng.random(n) < purchase_hazard(world, state, all_idx))
        bidx = np.flatnonzero(buy)
        buy_s = rng.integers(0, _DAY_S - 3600, bidx.size)
        value = np.round(np.exp(world.value_mu[bidx] + 0.5 * rng.standard_normal(bidx.size)), 2)
        u = rng.random(bidx.size)
        buy_ch = np.where(
            u < 0.12,
            ch_code["store"],
            np.where(rng.random(bidx.size) < world.app_share[bidx], ch_code["app"], ch_code["web"]),
        )
        buf.add(bidx, day0 + buy_s, buy_ch, _ET["purchase"], value=value)
        rating = np.clip(
            np.round(4.4 - 250.0 * world.c0[bidx] + 0.8 * rng.standard_normal(bidx.size)), 1, 5
        )
        after_s = buy_s + rng.integers(60, 3600, bidx.size)
        for etype, share, chan in (
            (
                "feedback",
                0.20,
                np.where(world.app_share[bidx] > 0.5, ch_code["app"], ch_code["web"]),
            ),
            ("review", 0.06, np.full(bidx.size, ch_code["review"])),
            ("referral", 0.04, np.full(bidx.size, ch_code["social"])),
        ):
            m = rng.random(bidx.size) < share
            buf.add(
                bidx[m],
                day0 + after_s[m],
                chan[m],
                _ET[etype],
                value=rating[m] if etype != "referral" else None,
            )
        n_visits = rng.poisson(world.visit_rate) * alive
        vidx = np.repeat(all_idx, n_visits)
        buf.add(
            vidx,
            day0 + rng.integers(0, _DAY_S, vidx.size),
            np.where(rng.random(vidx.size) < world.app_share[vidx], ch_code["app"], ch_code["web"]),
            _ET["visit"],
        )
        sup = alive & (rng.random(n) < world.support_rate)
        supidx = np.flatnonzero(sup)
        buf.add(
            supidx,
            day0 + rng.integers(0, _DAY_S, supidx.size),
            np.asarray([ch_code["chat"], ch_code["phone"], ch_code["email"]])[
                rng.choice(3, size=supidx.size, p=[0.5, 0.3, 0.2])
            ],
            _ET["support"],
        )

        # 5. What the company observes tomorrow, and the latent state at the next midnight.
        active_today = (n_visits > 0) | buy | sup | np.isin(all_idx, sidx[opened | clicked])
        days_since = np.where(active_today, 1.0, days_since + 1.0)
        spend = SPEND_DECAY * spend
        np.add.at(spend, bidx, value)
        end_of_day(world, state, send_all, send_all, act_all)
        if progress is not None and (t + 1) % 30 == 0:
            progress(f"simulated day {t + 1}/{days}: {alive.sum()} active, {buf.size} events")

    # Held-out customers: a random sample of those still active at as_of.
    active_idx = np.flatnonzero(alive)
    n_heldout = min(round(holdout_share * n), int(active_idx.size))
    heldout = np.sort(rng.choice(active_idx, size=n_heldout, replace=False))

    customer_ids = np.array([f"c{i:07d}" for i in range(n)], dtype=object)
    events = build_event_table(buf, customer_ids, start_ts, channel_names, world.action_ids, seed)
    customers = _customers_table(world, customer_ids)
    final_eligible = (world.consent & ~unsub)[:, world.action_channel]
    gt = _ground_truth(
        world, state, heldout, final_eligible, customer_ids, as_of, conv_days, churn_days
    )
    latent = pd.DataFrame(
        {
            "customer_id": customer_ids.astype(str),
            "churn_day": churn_day,
            "heldout": np.isin(all_idx, heldout),
            "lam0": world.lam0,
            "c0": world.c0,
            "visit_rate": world.visit_rate,
            "init_days_since_activity": init_days_since,
            "init_spend": init_spend,
        }
    )
    counts = events["event_type"].value_counts()
    params: dict[str, Any] = {
        "seed": seed,
        "n_customers": n_customers,
        "days": days,
        "start": start_ts.isoformat(),
        "as_of": as_of.isoformat(),
        "holdout_share": holdout_share,
        "conversion_days": conv_days,
        "churn_days": churn_days,
        "summary": {
            "events": len(events),
            "events_by_type": {str(t): int(counts.get(t, 0)) for t in EVENT_TYPE_ORDER},
            "churned": int((churn_day >= 0).sum()),
            "active_at_as_of": int(alive.sum()),
            "heldout_customers": n_heldout,
            "seconds": round(time.perf_counter() - t0, 2),
        },
    }
    if progress is not None:
        progress(f"done: {len(events)} events, {n_heldout} held-out customers")
    return Simulation(events, customers, catalog, gt, params, latent, world, state)


def _sig(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _customers_table(world: World, customer_ids: np.ndarray) -> pd.DataFrame:
    cols: dict[str, Any] = {"customer_id": customer_ids.astype(str)}
    for name in ("age_band", "region", "device"):
        cols[name] = world.attrs[name].astype(str)
    cols["tenure_months"] = world.attrs["tenure_months"].astype(np.int64)
    cols["loyalty_member"] = world.attrs["loyalty_member"].astype(bool)
    for j, ch in enumerate(world.channels):
        cols[f"{CONSENT_PREFIX}{ch}"] = world.consent[:, j].copy()
    return pd.DataFrame(cols)


def monte_carlo_outcomes(
    sim: Simulation,
    customer_ids: Sequence[str],
    action: str,
    *,
    n_draws: int = 20_000,
    seed: int = 0,
) -> pd.DataFrame:
    """Brute-force check of the ground truth: replay the forward dynamics ``n_draws`` times.

    Each held-out customer's state at ``as_of`` is copied ``n_draws`` times, ``action`` is
    sent at ``as_of`` (nothing for ``"none"``), and the days are simulated with random
    churn and purchase draws by the same hazard and state-update functions as
    :func:`simulate`, with no further sends.

    Returns
    -------
    pandas.DataFrame
        ``customer_id, p_conversion, p_churn`` (Monte Carlo frequencies).
    """
    if sim.world is None or sim.final_state is None:
        raise ValueError("this Simulation carries no world state (was it read from disk?)")
    world, state = sim.world, sim.final_state
    conv_days, churn_days = _horizons(sim.catalog)
    index = {cid: i for i, cid in enumerate(sim.latent["customer_id"])}
    cust = np.array([index[c] for c in customer_ids])
    idx = np.repeat(cust, n_draws)
    st = state.take(idx)
    if action != NO_ACTION:
        apply_send_now(world, st, idx, np.full(idx.size, world.action_ids.index(action)))
    rng = np.random.default_rng(seed)
    alive = np.ones(idx.size, dtype=bool)
    converted = np.zeros(idx.size, dtype=bool)
    churned = np.zeros(idx.size, dtype=bool)
    for d in range(max(conv_days, churn_days)):
        churn_now = alive & (rng.random(idx.size) < churn_hazard(world, st, idx))
        if d < churn_days:
            churned |= churn_now
        alive &= ~churn_now
        buy = alive & (rng.random(idx.size) < purchase_hazard(world, st, idx))
        if d < conv_days:
            converted |= buy
        end_of_day(world, st)
    return pd.DataFrame(
        {
            "customer_id": list(customer_ids),
            "p_conversion": converted.reshape(len(cust), n_draws).mean(axis=1),
            "p_churn": churned.reshape(len(cust), n_draws).mean(axis=1),
        }
    )


def write_simulation(sim: Simulation, out_dir: str | Path) -> dict[str, Path]:
    """Write a simulation as the files of ``touchpoint simulate --out DIR``.

    Parameters
    ----------
    sim
        The output of :func:`simulate`.
    out_dir
        Directory (created if needed); existing files of the same names are replaced.

    Returns
    -------
    dict[str, pathlib.Path]
        ``events``, ``customers``, ``catalog``, ``ground_truth``, ``simulation`` → path.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "events": out / "events.parquet",
        "customers": out / "customers.parquet",
        "catalog": out / "catalog.yaml",
        "ground_truth": out / "ground_truth.parquet",
        "simulation": out / "simulation.json",
    }
    sim.events.to_parquet(paths["events"], index=False)
    sim.customers.to_parquet(paths["customers"], index=False)
    sim.ground_truth.to_parquet(paths["ground_truth"], index=False)
    paths["catalog"].write_text(yaml.safe_dump(sim.catalog, sort_keys=False), encoding="utf-8")
    paths["simulation"].write_text(json.dumps(sim.params, indent=2) + "\n", encoding="utf-8")
    return paths
