"""The Hillstrom e-mail test example (training/hillstrom.py) on the real file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.schema import EVENT_COLUMNS, NO_ACTION
from training.hillstrom import (
    ACTIONS,
    ATTRIBUTE_COLUMNS,
    PROPENSITY,
    T0,
    HillstromResult,
    format_report,
    hillstrom_to_contract,
    load_hillstrom,
    run_hillstrom,
)

DATA = Path(__file__).parents[2] / ".." / "shared" / "data" / "hillstrom.csv"
needs_data = pytest.mark.skipif(
    not DATA.is_file(),
    reason=f"Hillstrom data not available at {DATA.resolve()} (MineThatData e-mail test CSV)",
)


@pytest.fixture(scope="module")
def raw() -> pd.DataFrame:
    return load_hillstrom(DATA)


@pytest.fixture(scope="module")
def contract(raw: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return hillstrom_to_contract(raw)


@pytest.fixture(scope="module")
def result() -> HillstromResult:
    return run_hillstrom(DATA, n_bootstrap=200)


def test_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="Hillstrom data not found"):
        run_hillstrom(tmp_path / "nope.csv")


@needs_data
def test_mapping_arms_and_propensities(
    raw: pd.DataFrame, contract: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]
) -> None:
    events, customers, decisions = contract
    assert len(customers) == len(decisions) == len(raw) == 64_000
    assert list(customers.columns) == ["customer_id", *ATTRIBUTE_COLUMNS]
    assert "channel" not in customers.columns  # renamed to purchase_channel
    assert customers["customer_id"].tolist()[:3] == ["0", "1", "2"]

    # One decision per customer, all at t0, with the test's own arm counts.
    assert decisions["customer_id"].is_unique
    assert (decisions["decision_time"] == T0).all()
    counts = decisions["action"].astype(str).value_counts().to_dict()
    assert counts == {"womens_email": 21_387, "mens_email": 21_307, NO_ACTION: 21_306}
    assert np.allclose(decisions["propensity"], 1 / 3, rtol=0, atol=0)
    assert PROPENSITY == 1 / 3


@needs_data
def test_mapping_event_log_matches_outcomes(
    raw: pd.DataFrame, contract: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]
) -> None:
    events, _, decisions = contract
    assert tuple(events.columns) == EVENT_COLUMNS
    types = events["event_type"].astype(str)
    sent = events[types == "sent"]
    assert len(sent) == int((decisions["action"] != NO_ACTION).sum()) == 42_694
    assert (sent["propensity"] == PROPENSITY).all()
    assert set(sent["channel"].astype(str)) == {"email"}
    assert (sent["timestamp"] == T0).all()
    # The send carries the arm's action for the same customer.
    by_customer = decisions.set_index("customer_id")["action"].astype(str)
    assert (
        sent["action"].astype(str).to_numpy()
        == by_customer[sent["customer_id"].astype(str)].to_numpy()
    ).all()

    assert int((types == "visit").sum()) == int(raw["visit"].sum())
    purchases = events[types == "purchase"]
    assert len(purchases) == int(raw["conversion"].sum())
    assert purchases["value"].sum() == pytest.approx(raw["spend"].sum(), abs=1e-6)
    # Responses come after the decision, so they can never leak into its features.
    assert (events.loc[types != "sent", "timestamp"] > T0).all()


@needs_data
def test_missing_column_raises_value_error_naming_it(raw: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'spend'"):
        hillstrom_to_contract(raw.drop(columns=["spend"]))
    path = tmp_path / "hillstrom.csv"
    raw.drop(columns=["history_segment"]).head(100).to_csv(path, index=False)
    with pytest.raises(ValueError, match="'history_segment'"):
        run_hillstrom(path)


def _tiny_file() -> pd.DataFrame:
    """Four valid rows in the MineThatData layout (no real data needed)."""
    return pd.DataFrame(
        {
            "recency": [10, 6, 7, 9],
            "history_segment": ["2) $100 - $200", "3) $200 - $350", "1) $0 - $100", "1) $0 - $100"],
            "history": [142.44, 329.08, 50.0, 75.5],
            "mens": [1, 1, 0, 1],
            "womens": [0, 1, 1, 0],
            "zip_code": ["Surburban", "Rural", "Urban", "Urban"],
            "newbie": [0, 1, 1, 0],
            "channel": ["Phone", "Web", "Web", "Multichannel"],
            "segment": ["Womens E-Mail", "No E-Mail", "Mens E-Mail", "No E-Mail"],
            "visit": [0, 0, 1, 0],
            "conversion": [0, 0, 1, 0],
            "spend": [0.0, 0.0, 29.99, 0.0],
        }
    )


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("history", "abc", "'history' must be a number >= 0"),
        ("recency", None, "'recency' must be a number >= 0"),
        ("mens", "yes", "'mens' must be 0/1"),
        ("newbie", 2, "'newbie' must be 0/1"),
    ],
)
def test_a_bad_value_is_refused_with_its_column_and_row(
    column: str, value: object, message: str, tmp_path: Path
) -> None:
    """A stray value must not turn a numeric attribute into a categorical one silently."""
    frame = _tiny_file().astype({column: object})
    frame.loc[2, column] = value
    path = tmp_path / "hillstrom.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(ValueError, match=f"{message}.*; bad at row 4$"):
        load_hillstrom(path)
    load_hillstrom(_write(_tiny_file(), tmp_path / "ok.csv"))  # the valid file passes


def _write(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path


@needs_data
@pytest.mark.slow
def test_full_run(result: HillstromResult) -> None:
    r = result
    assert r.n_test == 32_000 and sum(r.test_arm_counts.values()) == r.n_test
    assert r.conversion_value > 0

    # The model policy has a finite estimate and interval.
    ips = r.policy_value(r.model_policy, "ips")
    assert np.isfinite([ips["value"], ips["ci_low"], ips["ci_high"]]).all()
    assert ips["ci_low"] <= ips["value"] <= ips["ci_high"]

    for reward in ("spend_minus_cost", "conversion"):
        arms = r.arm_means[r.arm_means["reward"] == reward].set_index("action")
        for action in ACTIONS:
            n_arm, mean = int(arms.loc[action, "n"]), float(arms.loc[action, "mean"])
            static_ips = float(r.policy_value(f"all_{action}", "ips", reward)["value"])
            static_snips = float(r.policy_value(f"all_{action}", "snips", reward)["value"])
            # IPS of a static arm with p = 1/3 is 3 * (sum of the arm's rewards) / n, i.e.
            # the arm's observed mean times n_arm / (n / 3): equal to the mean only when
            # the arm holds exactly a third of the held-out half.  SNIPS divides by the
            # sum of the weights (3 * n_arm) instead, so it IS the arm's observed mean.
            assert static_ips == pytest.approx(mean * n_arm / (r.n_test / 3), abs=1e-9)
            assert static_snips == pytest.approx(mean, abs=1e-9)
        # The random logging policy has all weights 1: every estimator gives the mean.
        overall = float((arms["mean"] * arms["n"]).sum() / r.n_test)
        assert float(r.policy_value("random_logging", "ips", reward)["value"]) == pytest.approx(
            overall, abs=1e-9
        )

    # Visit uplift@30%, Womens vs No E-Mail, near scikit-uplift's published 0.066.
    u = r.uplift_at_k
    assert set(u["strategy"]) == {"overall", "by_group"}
    assert ((u["value"] > 0.03) & (u["value"] < 0.10)).all(), u
    q = r.qini
    assert np.isfinite(q["qini"]).all()
    womens_visit = q[(q["target"] == "visit") & (q["action"] == "womens_email")]
    assert (womens_visit["qini"] > 0).all()

    text = format_report(r)
    assert r.model_policy in text and "uplift@30%" in text and "Qini" in text
