"""The marketers' HTML report: self-contained, every section present, graceful when inputs
are missing.  Built from small hand-made data, without MLflow."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from features.catalog import load_catalog
from features.schema import EVENT_COLUMNS
from features.spec import FeatureSpec
from training import report_sections as rs
from training.report import (
    ChampionInfo,
    QuarantineSummary,
    ReportInputs,
    build_report,
)

ACTIONS = ("email_promo", "sms_offer")


def _events(n_customers: int = 60, days: int = 120, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2026-01-01", tz="UTC")
    rows: list[tuple[str, pd.Timestamp, str, str, str | None]] = []
    for c in range(n_customers):
        cid = f"c{c:03d}"
        for _ in range(int(rng.integers(5, 15))):
            t = start + pd.Timedelta(hours=float(rng.uniform(0, days * 24)))
            kind = rng.choice(["visit", "sent", "sent", "purchase"], p=[0.5, 0.2, 0.2, 0.1])
            if kind == "sent":
                action = ACTIONS[int(rng.integers(0, 2))]
                channel = "email" if action == "email_promo" else "sms"
                rows.append((cid, t, channel, "sent", action))
                if rng.random() < 0.4:
                    rows.append((cid, t + pd.Timedelta(hours=1), channel, "open", action))
                if rng.random() < 0.1:
                    rows.append((cid, t + pd.Timedelta(hours=2), channel, "click", action))
            else:
                rows.append((cid, t, "web", str(kind), None))
    frame = pd.DataFrame(
        rows, columns=["customer_id", "timestamp", "channel", "event_type", "action"]
    )
    frame["value"] = np.nan
    frame["propensity"] = np.nan
    frame["event_id"] = None
    frame["decision_id"] = None
    for col in ("customer_id", "channel", "event_type", "action"):
        frame[col] = frame[col].astype("category")
    frame["timestamp"] = frame["timestamp"].astype("datetime64[ns, UTC]")
    frame = frame.sort_values(["customer_id", "timestamp"], kind="stable")
    return frame[list(EVENT_COLUMNS)].reset_index(drop=True)


def _catalog() -> dict:
    data = load_catalog(None).to_dict()
    data["actions"] = [
        {"id": "email_promo", "channel": "email", "cost": 0.01},
        {"id": "sms_offer", "channel": "sms", "cost": 0.05},
    ]
    return data


def _policy_table() -> pd.DataFrame:
    rows = []
    for i, policy in enumerate(["model", "logging", "best_single (sms_offer)", "no_action"]):
        for est in ("ips", "snips", "dr"):
            v = 1.0 - 0.2 * i
            rows.append((policy, est, v, v - 0.3, v + 0.3, 0.1, 100.0, 500))
    return pd.DataFrame(
        rows, columns=["policy", "estimator", "value", "ci_low", "ci_high", "std_error", "ess", "n"]
    )


def _png(title: str) -> bytes:
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.set_title(title)
    return rs.fig_png(fig, dpi=30)


@pytest.fixture(scope="module")
def events() -> pd.DataFrame:
    return _events()


@pytest.fixture(scope="module")
def full_inputs(events: pd.DataFrame) -> ReportInputs:
    customers = pd.DataFrame(
        {
            "customer_id": [f"c{c:03d}" for c in range(60)],
            "segment": np.where(np.arange(60) % 3 == 0, "gold", "standard"),
        }
    )
    ids = [f"c{c:03d}" for c in range(60)]
    recommendations = pd.DataFrame(
        {
            "customer_id": ids,
            "rank": 1,
            "action": np.where(np.arange(60) % 2 == 0, "email_promo", "none"),
            "suppressed": np.where(
                np.arange(60) % 4 == 0,
                "sms_offer:consent",
                np.where(np.arange(60) % 4 == 1, "sms_offer:cooldown;email_promo:cooldown", ""),
            ),
        }
    )
    spec = FeatureSpec.from_data(events, None, channels=("email", "sms"))
    metrics = {
        "conversion.auc": 0.7,
        "conversion.brier": 0.1,
        "conversion.ece": 0.02,
        "conversion.rate": 0.1,
        "churn.auc": 0.8,
        "churn.brier": 0.05,
        "churn.ece": 0.01,
        "conversion.email_promo.auc": 0.65,
        "uplift.email_promo.qini": 0.03,
        "policy.model.dr": 1.0,
        "policy.model.dr.ci_low": 0.7,
        "policy.model.dr.ci_high": 1.3,
        "policy.logging.dr": 0.8,
        "policy.logging.dr.ci_low": 0.5,
        "policy.logging.dr.ci_high": 1.1,
        "truth.value.model": 2.0,
        "truth.value.no_action": 1.0,
        "truth.value.oracle": 3.0,
        "truth.oracle_fraction.model": 0.5,
        "truth.customers": 60.0,
        "truth.violations": 0.0,
    }
    return ReportInputs(
        events=events,
        customers=customers,
        catalog=_catalog(),
        metrics=metrics,
        tags={"promotion.decision": "promoted", "promotion.reason": "no champion yet"},
        params={"data.sha256": "abc"},
        run_id="run-this",
        policy_table=_policy_table(),
        recommendations=recommendations,
        recommendations_time=pd.Timestamp("2026-05-02 12:00", tz="UTC"),
        plots={
            "plots/calibration.png": _png("Calibration"),
            "plots/qini_curves.png": _png("Qini"),
        },
        quarantine=QuarantineSummary(
            n_input=1000, n_quarantined=12, reason_counts={"unknown event_type": 12}
        ),
        feature_spec=spec.to_dict(),
        champion=ChampionInfo(
            version="3", run_id="run-champ", metrics={"conversion.auc": 0.68}, params={}
        ),
    )


@pytest.fixture(scope="module")
def full_html(full_inputs: ReportInputs, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = build_report(full_inputs, tmp_path_factory.mktemp("report") / "r.html")
    assert path.is_file()
    return path.read_text(encoding="utf-8")


def _sections(html: str) -> dict[str, str]:
    found = re.findall(r'<section id="[^"]+"><h2>([^<]+)</h2>(.*?)</section>', html, flags=re.S)
    return dict(found)


def test_every_section_heading_is_present(full_html: str) -> None:
    sections = _sections(full_html)
    assert list(sections) == list(rs.SECTION_TITLES)
    assert "could not be built" not in full_html


def test_html_is_self_contained(full_html: str) -> None:
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", full_html)
    assert "http://" not in full_html and "https://" not in full_html
    assert "<link" not in full_html and "<script" not in full_html
    images = re.findall(r'<img src="([^"]+)"', full_html)
    assert len(images) >= 7
    for src in images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_plot_has_a_title_and_a_how_to_read(full_html: str) -> None:
    figures = re.findall(r"<figure.*?</figure>", full_html, flags=re.S)
    assert figures
    for fig in figures:
        title = re.search(r'<figcaption class="plot-title">([^<]+)</figcaption>', fig)
        assert title and title.group(1).strip()
        assert re.search(r'alt="[^"]+"', fig)
        assert "How to read this:" in fig


def test_drawn_figures_have_titles_and_axis_labels(events: pd.DataFrame) -> None:
    figures = [
        rs.channel_area_figure(rs.weekly_rates(events, "channel")),
        rs.event_type_figure(rs.weekly_rates(events, "event_type")),
        rs.policy_dots(_policy_table()),
    ]
    for fig in figures:
        ax = fig.axes[0]
        assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel() is not None
        plt.close(fig)


def test_full_report_content(full_html: str) -> None:
    s = _sections(full_html)
    assert "12 of 1,000 input rows" in s["Data overview"]
    assert "unknown event_type" in s["Data overview"]
    assert "Purchase lift vs no action" in s["Per touchpoint"]
    assert "email promo" in s["Per touchpoint"]
    assert "Markov" in s["Attribution per channel"]
    assert "0.700" in s["Model quality"]
    assert "New policy (the model)" in s["Policy comparison"]
    assert "By segment (segment)" in s["Policy comparison"]
    assert "gold" in s["Policy comparison"]
    assert "Oracle" in s["Policy comparison"]
    assert "Champion (v3)" in s["Run comparison"]
    assert "In short." in full_html


def test_suppression_counts_per_rule() -> None:
    counts = rs.suppression_counts(
        pd.Series(["sms_offer:consent;phone_call:cooldown", "", "sms_offer:consent", None])
    ).set_index("rule")
    assert counts.loc["consent", "pairs"] == 2
    assert counts.loc["consent", "customers"] == 2
    assert counts.loc["cooldown", "pairs"] == 1
    assert counts.loc["quiet_hours", "pairs"] == 0
    assert list(counts.index) == list(rs.RULES)


def test_bootstrap_difference_brackets_the_estimate() -> None:
    d, lo, hi = rs.bootstrap_difference(1000, 200, 1000, 100)
    assert d == pytest.approx(0.1)
    assert lo < d < hi and lo > 0.05 and hi < 0.15
    assert np.isnan(rs.bootstrap_difference(0, 0, 10, 1)[0])


def test_missing_optional_inputs_say_not_available(events: pd.DataFrame, tmp_path: Path) -> None:
    html = build_report(ReportInputs(events=events), tmp_path / "bare.html").read_text("utf-8")
    s = _sections(html)
    assert list(s) == list(rs.SECTION_TITLES)
    assert "could not be built" not in html
    assert "Not available" in s["Data overview"]  # quarantine unknown
    assert "Not available" in s["Per touchpoint"]  # no spec: no intervals
    assert "Not available" in s["Model quality"]
    assert "Not available" in s["Policy comparison"]
    assert "Not available" in s["Contact policy"]
    assert "Not available" in s["Run comparison"]
    assert "https://" not in html


def test_no_rows_quarantined_is_said(events: pd.DataFrame, tmp_path: Path) -> None:
    inputs = ReportInputs(events=events, quarantine=QuarantineSummary(n_input=10, n_quarantined=0))
    html = build_report(inputs, tmp_path / "q.html").read_text("utf-8")
    assert "No rows quarantined" in html


def test_this_run_is_the_champion(events: pd.DataFrame, tmp_path: Path) -> None:
    inputs = ReportInputs(
        events=events, run_id="r1", champion=ChampionInfo(version="1", run_id="r1", metrics={})
    )
    html = build_report(inputs, tmp_path / "c.html").read_text("utf-8")
    assert "This run is the current champion" in html


def test_a_failing_section_does_not_lose_the_report(events: pd.DataFrame, tmp_path: Path) -> None:
    bad = _policy_table().drop(columns=["ci_low"])
    html = build_report(ReportInputs(events=events, policy_table=bad), tmp_path / "b.html")
    text = html.read_text("utf-8")
    assert list(_sections(text)) == list(rs.SECTION_TITLES)
    assert "could not be built" in _sections(text)["Policy comparison"]


def test_the_header_says_when_the_model_was_refit(events: pd.DataFrame, tmp_path: Path) -> None:
    refit = ReportInputs(events=events, metrics={"count.rows_refit": 477316.0})
    html = build_report(refit, tmp_path / "refit.html").read_text("utf-8")
    assert "refit on the 477,316 decision points before the test period" in html
    plain = build_report(ReportInputs(events=events), tmp_path / "plain.html").read_text("utf-8")
    assert "refit on the" not in plain


def test_the_policy_section_warns_when_the_propensities_look_off(
    events: pd.DataFrame, tmp_path: Path
) -> None:
    """``propensity.none_weight`` is 1 when the propensities weigh "no action" right."""
    table = _policy_table()
    html = {
        weight: build_report(
            ReportInputs(
                events=events, policy_table=table, metrics={"propensity.none_weight": weight}
            ),
            tmp_path / f"w{weight}.html",
        ).read_text("utf-8")
        for weight in (1.01, 1.08, 0.9)
    }
    assert "look off" not in html[1.01]
    assert "look off (their check is 1.08; it is 1 when they are right)" in html[1.08]
    assert "their check is 0.90" in html[0.9]


def test_the_policy_section_says_how_much_the_policy_scales_the_purchase_effects(
    events: pd.DataFrame, tmp_path: Path
) -> None:
    table = _policy_table()
    html = {
        scale: build_report(
            ReportInputs(
                events=events,
                policy_table=table,
                metrics={"policy.conversion_effect_scale": scale},
            ),
            tmp_path / f"k{scale}.html",
        ).read_text("utf-8")
        for scale in (1.0, 1.38)
    }
    assert "times what the purchase labels show" not in html[1.0]
    assert "effect on purchases 1.38 times what the purchase labels show" in html[1.38]
