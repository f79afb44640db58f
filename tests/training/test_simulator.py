"""Tests of the synthetic world: contract, logging policy, causal invariants, ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from features.schema import EVENT_COLUMNS, EVENT_TYPES, NO_ACTION
from training.simulator import (
    GROUND_TRUTH_COLUMNS,
    SPEND_DECAY,
    Simulation,
    attribute_policy_choices,
    best_single_action_choices,
    monte_carlo_outcomes,
    oracle_choices,
    oracle_fraction,
    policy_value,
    simulate,
    write_simulation,
)
from training.simulator_world import RHO_FATIGUE, LoggingPolicy

DAY = pd.Timedelta(days=1)


@pytest.fixture(scope="module")
def sim() -> Simulation:
    return simulate(n_customers=600, days=45, seed=3, holdout_share=0.2)


def _day(sim: Simulation, ts: pd.Series) -> np.ndarray:
    start = pd.Timestamp(sim.params["start"])
    return ((ts - start) // DAY).to_numpy()


def test_event_table_follows_the_schema(sim: Simulation) -> None:
    ev = sim.events
    assert tuple(ev.columns) == EVENT_COLUMNS
    for col in ("customer_id", "channel", "event_type", "action"):
        assert isinstance(ev[col].dtype, pd.CategoricalDtype), col
    assert str(ev["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert ev["value"].dtype == np.float64 and ev["propensity"].dtype == np.float64
    assert ev["event_id"].dtype == object and ev["decision_id"].dtype == object
    assert isinstance(ev.index, pd.RangeIndex)
    assert ev["event_id"].is_unique and ev["event_id"].map(type).eq(str).all()
    assert set(ev["event_type"].unique()) <= EVENT_TYPES
    keys = pd.DataFrame({"c": ev["customer_id"].astype(str), "t": ev["timestamp"]})
    assert keys.equals(keys.sort_values(["c", "t"], kind="stable"))
    sent = ev["event_type"] == "sent"
    assert ev.loc[sent, "action"].notna().all()
    assert ev.loc[ev["event_type"] == "purchase", "value"].gt(0).all()
    assert len(ev) / sim.params["n_customers"] > 10


def test_customers_catalog_and_ground_truth_tables(sim: Simulation) -> None:
    cu = sim.customers
    assert cu["customer_id"].is_unique
    assert set(sim.events["customer_id"].astype(str)) <= set(cu["customer_id"])
    for col in ("age_band", "region", "device", "tenure_months", "loyalty_member"):
        assert col in cu.columns
    channels = {a["channel"] for a in sim.catalog["actions"]}
    for ch in channels:
        assert cu[f"consent_{ch}"].dtype == bool
    assert not cu["consent_sms"].all()  # some customers refuse sms

    gt = sim.ground_truth
    assert tuple(gt.columns) == GROUND_TRUTH_COLUMNS
    assert str(gt["as_of"].dtype) == "datetime64[ns, UTC]"
    assert (gt["as_of"] == pd.Timestamp(sim.params["as_of"])).all()
    n_actions = len(sim.catalog["actions"]) + 1
    assert gt.groupby("customer_id").size().eq(n_actions).all()
    assert set(gt["action"]) == {NO_ACTION} | {a["id"] for a in sim.catalog["actions"]}
    for col in ("p_conversion", "p_churn"):
        assert gt[col].between(0, 1).all()
    assert gt.loc[gt["action"] == NO_ACTION, "eligible"].all()
    assert gt["customer_id"].nunique() == round(0.2 * 600)
    # Held-out customers are alive at as_of.
    latent = sim.latent.set_index("customer_id")
    assert (latent.loc[gt["customer_id"].unique(), "churn_day"] == -1).all()


def test_same_seed_same_world_other_seed_other_world() -> None:
    a = simulate(n_customers=150, days=20, seed=11)
    b = simulate(n_customers=150, days=20, seed=11)
    c = simulate(n_customers=150, days=20, seed=12)
    pd.testing.assert_frame_equal(a.events, b.events)
    pd.testing.assert_frame_equal(a.customers, b.customers)
    pd.testing.assert_frame_equal(a.ground_truth, b.ground_truth)
    assert a.params == {
        **b.params,
        "summary": {**b.params["summary"], "seconds": a.params["summary"]["seconds"]},
    }
    assert not a.events["timestamp"].equals(c.events["timestamp"])


def test_propensities_are_exactly_the_logging_policy(sim: Simulation) -> None:
    """Recompute every send's propensity from the log alone (plus the drawn pre-history)."""
    ev = sim.events
    sent = ev[ev["event_type"] == "sent"]
    assert sent["propensity"].gt(0).all() and sent["propensity"].le(1).all()
    assert ev.loc[ev["event_type"] != "sent", "propensity"].isna().all()

    ids = list(sim.customers["customer_id"])
    pos = {c: i for i, c in enumerate(ids)}
    actions = [a["id"] for a in sim.catalog["actions"]]
    a_channel = [a["channel"] for a in sim.catalog["actions"]]
    cost = np.array([a["cost"] for a in sim.catalog["actions"]], dtype=float)
    consent = sim.customers[[f"consent_{c}" for c in a_channel]].to_numpy()
    n, days = len(ids), sim.params["days"]
    cust = ev["customer_id"].astype(str).map(pos).to_numpy()
    day = _day(sim, ev["timestamp"])
    etype = ev["event_type"].astype(str).to_numpy()
    channel = ev["channel"].astype(str).to_numpy()

    latent = sim.latent.set_index("customer_id").loc[ids]
    days_since = latent["init_days_since_activity"].to_numpy().copy()
    spend = latent["init_spend"].to_numpy().copy()
    fatigue = np.zeros(n)
    unsubscribed = np.zeros((n, len(actions)), dtype=bool)
    policy = LoggingPolicy()
    checked = 0
    for t in range(days):
        today = day == t
        eligible = consent & ~unsubscribed
        p_send, p_act = policy.probabilities(days_since, spend, fatigue, eligible, cost)
        s = today & (etype == "sent")
        a_idx = np.array([actions.index(a) for a in ev.loc[s, "action"].astype(str)], dtype=int)
        expected = p_send[cust[s]] * p_act[cust[s], a_idx]
        np.testing.assert_allclose(ev.loc[s, "propensity"].to_numpy(), expected, rtol=1e-9)
        checked += int(s.sum())
        # What the company observes by the next morning.
        active = np.zeros(n, dtype=bool)
        act_types = ("visit", "purchase", "support", "open", "click")
        active[cust[today & np.isin(etype, act_types)]] = True
        days_since = np.where(active, 1.0, days_since + 1.0)
        spend = SPEND_DECAY * spend
        buys = today & (etype == "purchase")
        np.add.at(spend, cust[buys], ev.loc[buys, "value"].to_numpy())
        sent_today = np.zeros(n)
        sent_today[cust[s]] = 1.0
        fatigue = fatigue * RHO_FATIGUE + sent_today
        u = today & (etype == "unsubscribe")
        for c, ch in zip(cust[u], channel[u], strict=True):
            unsubscribed[c, [j for j, x in enumerate(a_channel) if x == ch]] = True
    assert checked == len(sent) > 100


def test_sends_respect_consent_unsubscribes_and_business_hours(sim: Simulation) -> None:
    ev = sim.events
    cu = sim.customers.set_index("customer_id")
    sent = ev[ev["event_type"] == "sent"]
    for ch, grp in sent.groupby("channel", observed=True):
        assert cu.loc[grp["customer_id"].astype(str), f"consent_{ch}"].all(), ch
    hours = sent["timestamp"].dt.hour
    assert hours.between(8, 20).all()
    assert sent["timestamp"].dt.second.nunique() > 1  # random minute and second
    # At most one send per customer per day.
    assert (
        not pd.DataFrame({"c": sent["customer_id"], "d": _day(sim, sent["timestamp"])})
        .duplicated()
        .any()
    )
    unsub = ev[ev["event_type"] == "unsubscribe"]
    assert len(unsub) > 0
    first_unsub = unsub.groupby(["customer_id", "channel"], observed=True)["timestamp"].min()
    joined = sent.join(first_unsub.rename("unsub_at"), on=["customer_id", "channel"], how="inner")
    assert (joined["timestamp"] < joined["unsub_at"]).all()


def test_responses_follow_a_send_on_the_same_channel(sim: Simulation) -> None:
    ev = sim.events
    sent = ev[ev["event_type"] == "sent"].assign(d=lambda x: _day(sim, x["timestamp"]))
    for kind in ("open", "click"):
        resp = ev[ev["event_type"] == kind].assign(d=lambda x: _day(sim, x["timestamp"]))
        assert len(resp) > 0
        m = resp.merge(sent, on=["customer_id", "d"], suffixes=("", "_s"), how="left")
        assert len(m) == len(resp)
        assert (m["channel"].astype(str) == m["channel_s"].astype(str)).all()
        assert (m["action"].astype(str) == m["action_s"].astype(str)).all()
        assert (m["timestamp"] > m["timestamp_s"]).all()


def test_nothing_happens_after_churn(sim: Simulation) -> None:
    ev = sim.events
    churn_day = sim.latent.set_index("customer_id")["churn_day"]
    cd = ev["customer_id"].astype(str).map(churn_day).to_numpy()
    day = _day(sim, ev["timestamp"])
    churners = cd >= 0
    is_churn = (ev["event_type"] == "churn").to_numpy()
    # Silent churners may still be sent to (the company cannot know), but nobody who has
    # churned ever responds or comes back.
    is_send = (ev["event_type"] == "sent").to_numpy()
    reacts = churners & ~is_churn & ~is_send
    assert (day[reacts] < cd[reacts]).all()
    explicit = ev.loc[is_churn, "customer_id"].astype(str)
    told = ev["customer_id"].astype(str).isin(set(explicit)).to_numpy()
    assert (day[told & is_send] < cd[told & is_send]).all()
    assert (is_send & churners & (day > cd)).any(), "silent churners are still contacted"
    assert (day[is_churn] == cd[is_churn]).all()
    n_churners = int((churn_day >= 0).sum())
    assert 0.3 < is_churn.sum() / n_churners < 0.9  # ~60% say so, the rest go silent
    assert set(ev.loc[is_churn, "channel"].astype(str)) <= {"web", "phone"}


def test_ground_truth_matches_monte_carlo_of_the_forward_dynamics(sim: Simulation) -> None:
    gt = sim.ground_truth.set_index(["customer_id", "action"])
    customers = list(sim.ground_truth["customer_id"].unique()[:4])
    n_draws = 40_000
    for action in (NO_ACTION, "phone_call", "push_reminder", "store_invitation"):
        mc = monte_carlo_outcomes(sim, customers, action, n_draws=n_draws, seed=5)
        for row in mc.itertuples():
            exact = gt.loc[(row.customer_id, action)]
            for col in ("p_conversion", "p_churn"):
                p = float(exact[col])
                se = max(np.sqrt(p * (1 - p) / n_draws), 1e-4)
                assert abs(getattr(row, col) - p) < 5 * se + 1e-3, (row.customer_id, action, col)


def test_policy_value_and_oracle_fraction(sim: Simulation) -> None:
    gt, cat = sim.ground_truth, sim.catalog
    oracle = oracle_choices(gt, cat)
    none = pd.Series(NO_ACTION, index=oracle.index)
    assert oracle_fraction(gt, oracle, cat) == pytest.approx(1.0)
    assert oracle_fraction(gt, none, cat) == pytest.approx(0.0)
    assert oracle_fraction(gt, pd.Series(dtype=object), cat) == pytest.approx(0.0)
    assert policy_value(gt, oracle, cat) > policy_value(gt, none, cat)
    # The oracle never picks an ineligible action.
    elig = gt.set_index(["customer_id", "action"])["eligible"]
    assert all(elig[(c, a)] for c, a in oracle.items())
    with pytest.raises(ValueError, match="unknown actions"):
        policy_value(gt, pd.Series("teleport", index=oracle.index), cat)


def test_heterogeneity_is_learnable_from_attributes() -> None:
    sim = simulate(n_customers=4000, days=60, seed=1, holdout_share=0.5)
    gt, cat = sim.ground_truth, sim.catalog
    best_single = oracle_fraction(gt, best_single_action_choices(gt, cat), cat)
    by_attributes = oracle_fraction(gt, attribute_policy_choices(gt, sim.customers, cat), cat)
    assert best_single < by_attributes
    assert 0.1 < best_single < 0.7
    assert by_attributes > 0.8
    none = gt[gt["action"] == NO_ACTION]
    assert 0.03 < none["p_conversion"].mean() < 0.3
    assert 0.01 < none["p_churn"].mean() < 0.15


def test_write_simulation_round_trips(sim: Simulation, tmp_path: Path) -> None:
    paths = write_simulation(sim, tmp_path / "out")
    assert set(paths) == {"events", "customers", "catalog", "ground_truth", "simulation"}
    ev = pd.read_parquet(paths["events"])
    assert tuple(ev.columns) == EVENT_COLUMNS and len(ev) == len(sim.events)
    assert str(ev["timestamp"].dtype) == "datetime64[ns, UTC]"
    gt = pd.read_parquet(paths["ground_truth"])
    assert tuple(gt.columns) == GROUND_TRUTH_COLUMNS
    assert yaml.safe_load(paths["catalog"].read_text())["actions"] == sim.catalog["actions"]
    meta = json.loads(paths["simulation"].read_text())
    assert meta["seed"] == 3 and meta["summary"]["events"] == len(sim.events)


def test_custom_catalog_and_progress() -> None:
    catalog = {
        "objective": {"conversion_value": 30.0, "churn_cost": 100.0},
        "horizons": {"conversion_days": 7, "churn_days": 10},
        "actions": [
            {"id": "email_promo", "channel": "email", "cost": 0.01},
            {"id": "carrier_pigeon", "channel": "pigeon", "cost": 0.5},
        ],
    }
    messages: list[str] = []
    sim = simulate(n_customers=200, days=31, seed=0, catalog=catalog, progress=messages.append)
    assert messages and "day 30/31" in messages[0]
    assert "consent_pigeon" in sim.customers.columns
    assert sim.ground_truth.groupby("customer_id").size().eq(3).all()
    assert "pigeon" in set(sim.events["channel"].astype(str))
    with pytest.raises(ValueError):
        simulate(n_customers=10, days=5, catalog={"actions": [{"id": "none", "channel": "x"}]})
