"""The sections of the HTML report (:mod:`training.report`), one function each.

Every section function takes the :class:`training.report.ReportInputs` and returns a
:class:`Section`; a missing optional input gives a visible "Not available: …" line rather
than an error.  Figures are drawn here with matplotlib and embedded as base64 PNG, each
with a title, axis labels with units and a one-sentence "How to read this".
"""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")  # headless: CI and servers have no display

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from features import schema
from features.stages import StageRules, stage_at
from serving.contact_policy import RULES

if TYPE_CHECKING:
    from training.report import ReportInputs


@dataclass(frozen=True)
class Section:
    """One ``<section>`` of the page: an anchor id, a heading and its HTML body."""

    id: str
    title: str
    body: str


# --------------------------------------------------------------------------- HTML helpers
def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def para(text: str, cls: str = "") -> str:
    return f'<p class="{cls}">{esc(text)}</p>' if cls else f"<p>{esc(text)}</p>"


def not_available(what: str) -> str:
    """The line shown in place of a missing part: says what is missing and why."""
    return f'<p class="na">Not available: {esc(what)}</p>'


def fig_png(fig: Figure, dpi: int = 110) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def figure_html(png: bytes, title: str, how_to_read: str, *, wide: bool = False) -> str:
    """A plot as an embedded PNG with its title above and "How to read this" below."""
    data = base64.b64encode(png).decode("ascii")
    cls = "plot wide" if wide else "plot"
    return (
        f'<figure class="{cls}"><figcaption class="plot-title">{esc(title)}</figcaption>'
        f'<img src="data:image/png;base64,{data}" alt="{esc(title)}">'
        f'<p class="howto"><b>How to read this:</b> {esc(how_to_read)}</p></figure>'
    )


def table_html(
    frame: pd.DataFrame,
    *,
    caption: str | None = None,
    shade: pd.DataFrame | None = None,
    highlight_rows: Sequence[int] = (),
) -> str:
    """A plain table of already formatted cells; ``shade`` (0–1 per cell) tints the cells."""
    head = "".join(f"<th>{esc(c)}</th>" for c in frame.columns)
    rows = []
    for i, row in enumerate(frame.itertuples(index=False)):
        cells = []
        for j, value in enumerate(row):
            style = ""
            if shade is not None:
                level = shade.iat[i, j]
                if isinstance(level, float) and np.isfinite(level) and level > 0:
                    style = (
                        f' style="background: rgba(76,114,176,{0.08 + 0.6 * min(level, 1):.2f})"'
                    )
            cls = ' class="num"' if j > 0 and _NUMERIC.match(str(value)) else ""
            cells.append(f"<td{cls}{style}>{esc(value)}</td>")
        mark = ' class="hl"' if i in highlight_rows else ""
        rows.append(f"<tr{mark}>{''.join(cells)}</tr>")
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


_NUMERIC = re.compile(r"^[-+–<]?[\d.,]+|^–$")


def facts_html(facts: Sequence[tuple[str, str]]) -> str:
    items = "".join(f"<div><dt>{esc(k)}</dt><dd>{esc(v)}</dd></div>" for k, v in facts)
    return f'<dl class="facts">{items}</dl>'


def fmt_int(x: float) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:,.0f}"


def fmt_pct(x: float | None, digits: int = 1) -> str:
    """A fraction as a percentage."""
    return "–" if x is None or not np.isfinite(x) else f"{100 * x:.{digits}f}%"


def fmt_num(x: float | None, digits: int = 3) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:,.{digits}f}"


def fmt_signed(x: float | None, digits: int = 3) -> str:
    """A number rounded to ``digits``, with no "-0.000"."""
    if x is None or not np.isfinite(x):
        return "–"
    r = round(float(x), digits)
    return f"{0.0 if r == 0 else r:.{digits}f}"


def thousands(ax: Any, axis: str = "y") -> None:
    """Plain tick labels with thousands separators (``1,000``, not ``10^3``)."""
    from matplotlib.ticker import FuncFormatter

    fmt = FuncFormatter(lambda v, _pos: f"{v:,.0f}" if v >= 1 else f"{v:g}")
    getattr(ax, f"{axis}axis").set_major_formatter(fmt)


def fmt_ci(value: float, low: float, high: float, digits: int = 2, unit: str = "") -> str:
    if not np.isfinite(value):
        return "–"
    if not (np.isfinite(low) and np.isfinite(high)):
        return f"{value:+.{digits}f}{unit}"
    return f"{value:+.{digits}f}{unit} [{low:+.{digits}f}, {high:+.{digits}f}]"


def pretty(name: Any) -> str:
    """``email_promo`` → ``email promo`` for labels."""
    return str(name).replace("_", " ")


# --------------------------------------------------------------------------- shared data
def catalog_dict(inputs: ReportInputs) -> Mapping[str, Any]:
    return inputs.catalog or {}


def stage_rules(inputs: ReportInputs) -> StageRules:
    try:
        return StageRules.from_dict(dict(catalog_dict(inputs).get("journey") or {}))
    except ValueError:
        return StageRules()


def data_end(events: pd.DataFrame) -> pd.Timestamp:
    """Midnight after the last event's day, so that "strictly before" includes every event."""
    end: pd.Timestamp = events["timestamp"].max().normalize() + pd.Timedelta(days=1)
    return end


def horizons(inputs: ReportInputs) -> tuple[int, int]:
    h = catalog_dict(inputs).get("horizons") or {}
    return int(h.get("conversion_days", 14)), int(h.get("churn_days", 30))


# --------------------------------------------------------------------------- 1. data
def weekly_rates(events: pd.DataFrame, column: str) -> pd.DataFrame:
    """Events per day, averaged over each calendar week (Monday start), per value of ``column``.

    Partial first and last weeks are divided by the days they actually cover, so they are
    not drawn as dips.
    """
    ts = events["timestamp"].dt.tz_convert("UTC").dt.tz_localize(None)
    week = ts.dt.to_period("W-SUN").dt.start_time
    counts = pd.crosstab(week, events[column].astype(str))
    first, last = ts.min().normalize(), ts.max().normalize() + pd.Timedelta(days=1)
    starts = pd.DatetimeIndex(counts.index)
    lo = np.maximum(starts.asi8, first.value)
    hi = np.minimum((starts + pd.Timedelta(days=7)).asi8, last.value)
    days = np.maximum((hi - lo) / 86_400e9, 1.0)
    order = counts.sum().sort_values(ascending=False).index
    return counts[order].div(days, axis=0)


def channel_area_figure(rates: pd.DataFrame) -> Figure:
    fig, ax = plt.subplots(figsize=(11, 4.8))
    colors = [plt.get_cmap("tab20")(i) for i in range(20)]
    ax.stackplot(
        rates.index,
        rates.to_numpy(dtype=float).T,
        labels=[pretty(c) for c in rates.columns],
        colors=colors[: rates.shape[1]],
        alpha=0.9,
    )
    ax.set_title("Events per day by channel (weekly average, stacked)")
    ax.set_xlabel("Week starting (date)")
    ax.set_ylabel("Events per day (count)")
    thousands(ax)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=9, title="Channel")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def event_type_figure(rates: pd.DataFrame) -> Figure:
    fig, ax = plt.subplots(figsize=(11, 4.8))
    colors = [plt.get_cmap("tab20")(i) for i in range(20)]
    for i, col in enumerate(rates.columns):
        ax.plot(rates.index, rates[col], label=pretty(col), color=colors[i % 20], linewidth=2)
    ax.set_yscale("log")
    ax.set_title("Events per day by event type (weekly average, log scale)")
    ax.set_xlabel("Week starting (date)")
    ax.set_ylabel("Events per day (count, log scale)")
    thousands(ax)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=9, title="Event type")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig


def data_overview(inputs: ReportInputs) -> Section:
    ev = inputs.events
    parts: list[str] = []
    if len(ev) == 0:
        return Section("data", "Data overview", not_available("the event log is empty"))
    start, end = ev["timestamp"].min(), ev["timestamp"].max()
    n_cust_events = int(ev["customer_id"].nunique())
    facts = [
        ("Events", fmt_int(len(ev))),
        ("Customers with events", fmt_int(n_cust_events)),
        (
            "Customers in the customer table",
            fmt_int(len(inputs.customers)) if inputs.customers is not None else "not passed",
        ),
        ("First event", f"{start:%Y-%m-%d}"),
        ("Last event", f"{end:%Y-%m-%d}"),
        ("Sends (outbound touches)", fmt_int(int((ev["event_type"] == "sent").sum()))),
        ("Purchases", fmt_int(int((ev["event_type"] == "purchase").sum()))),
    ]
    parts.append(facts_html(facts))
    parts.append(
        figure_html(
            fig_png(channel_area_figure(weekly_rates(ev, "channel"))),
            "Events per day by channel",
            "each coloured band is one channel; the band's thickness is its events per day "
            "that week and the top edge is the total over all channels.",
            wide=True,
        )
    )
    parts.append(
        figure_html(
            fig_png(event_type_figure(weekly_rates(ev, "event_type"))),
            "Events per day by event type",
            "each line is one kind of event (sends, opens, visits, purchases…); the scale is "
            "logarithmic so rare events such as reviews stay visible next to frequent visits.",
            wide=True,
        )
    )
    parts.append("<h3>Rows set aside at ingestion (quarantine)</h3>")
    q = inputs.quarantine
    if q is None:
        parts.append(
            not_available(
                "the ingestion summary was not passed to the report, so the share of "
                "quarantined rows is unknown here"
            )
        )
    elif q.n_quarantined == 0:
        parts.append(
            para(f"No rows quarantined: all {q.n_input:,} input rows met the data contract.")
        )
    else:
        parts.append(
            para(
                f"{q.n_quarantined:,} of {q.n_input:,} input rows ({fmt_pct(q.share, 2)}) broke "
                "the data contract and were set aside; the rest were used. A row with two "
                "problems counts under both."
            )
        )
        reasons = sorted(q.reason_counts.items(), key=lambda kv: -kv[1])
        frame = pd.DataFrame(
            {
                "Reason": [r for r, _ in reasons],
                "Rows": [fmt_int(n) for _, n in reasons],
                "Share of input rows": [fmt_pct(n / max(q.n_input, 1), 2) for _, n in reasons],
            }
        )
        parts.append(table_html(frame))
    if q is not None and q.n_duplicates:
        parts.append(para(f"{q.n_duplicates:,} duplicate rows (same event id) were skipped."))
    return Section("data", "Data overview", "".join(parts))


# --------------------------------------------------------------------------- 2. funnel
def funnel_section(inputs: ReportInputs) -> Section:
    from training.funnel import funnel, funnel_figure, stage_transitions, transitions_figure

    ev = inputs.events
    if len(ev) == 0:
        return Section("funnel", "Journey funnel", not_available("the event log is empty"))
    rules = stage_rules(inputs)
    end = data_end(ev)
    parts = [
        figure_html(
            fig_png(funnel_figure(funnel(ev, end, rules=rules))),
            f"Customers per journey stage at the end of the data ({end:%Y-%m-%d})",
            "each bar counts the customers whose history puts them in that stage; stages run "
            "from first contact (top) to loyal repeat buyers (bottom).",
        )
    ]
    first = ev["timestamp"].min()
    start = max(first + pd.Timedelta(days=1), end - pd.Timedelta(days=90))
    if end - start >= pd.Timedelta(days=1):
        start = start.normalize()
        parts.append(
            figure_html(
                fig_png(transitions_figure(stage_transitions(ev, start, end, rules=rules))),
                f"How customers moved between stages, {start:%Y-%m-%d} to {end:%Y-%m-%d}",
                "each row is where customers were at the start date and each column where they "
                "were at the end; the percentage is the share of the row, so the diagonal is "
                "customers who stayed put.",
            )
        )
    else:
        parts.append(not_available("the log spans less than two days, too short for transitions"))
    return Section("funnel", "Journey funnel", "".join(parts))


# --------------------------------------------------------------------------- 3. touchpoints
def labelled_decisions(inputs: ReportInputs) -> pd.DataFrame | None:
    """Decision points (sends and sampled "no action" moments) with their outcomes.

    The same sampler and seed as training (``features.pipeline.decision_points``), so in
    the test period these are the rows the run evaluated on.  None without a feature spec.
    """
    from features.pipeline import decision_points
    from features.spec import FeatureSpec
    from training.labels import LabelWindows, label_decisions

    if inputs.feature_spec is None or len(inputs.events) == 0:
        return None
    spec = FeatureSpec.from_dict(inputs.feature_spec)
    cat = catalog_dict(inputs)
    conv_days, churn_days = horizons(inputs)
    windows = LabelWindows(
        conversion_days=conv_days,
        churn_days=churn_days,
        inactivity_days=int((cat.get("churn") or {}).get("inactivity_days", 30)),
    )
    dp = decision_points(inputs.events, spec)
    if inputs.test_period is not None:
        lo, hi = inputs.test_period
        dp = dp[(dp["decision_time"] >= lo) & (dp["decision_time"] < hi)].reset_index(drop=True)
    if len(dp) == 0:
        return None
    labels = label_decisions(inputs.events, dp, windows)
    out = pd.DataFrame(
        {
            "action": dp["action"].astype(str).to_numpy(),
            "conversion": labels["conversion"].to_numpy(dtype=float),
            "churn": labels["churn"].to_numpy(dtype=float),
        }
    )
    return out.loc[~labels["censored"].to_numpy()].reset_index(drop=True)


def bootstrap_difference(
    n_a: int, k_a: int, n_0: int, k_0: int, *, n_boot: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """Rate difference ``k_a/n_a - k_0/n_0`` and its 95% bootstrap interval.

    Resampling decision points with replacement within each group is the same as drawing
    each group's count from a binomial with its observed rate; that is what is done here.
    """
    if n_a == 0 or n_0 == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    p_a, p_0 = k_a / n_a, k_0 / n_0
    diff = rng.binomial(n_a, p_a, n_boot) / n_a - rng.binomial(n_0, p_0, n_boot) / n_0
    low, high = np.percentile(diff, [2.5, 97.5])
    return p_a - p_0, float(low), float(high)


def touchpoint_table(inputs: ReportInputs) -> pd.DataFrame:
    """Per action: sends, open and click rates, outcome rates, lifts with intervals, Qini."""
    ev = inputs.events
    etype = ev["event_type"].astype(str)
    action = ev["action"].astype(str) if "action" in ev else pd.Series("nan", index=ev.index)
    sends = action[etype == "sent"].value_counts()
    opens = action[etype == "open"].value_counts()
    clicks = action[etype == "click"].value_counts()
    cat_actions = [a["id"] for a in catalog_dict(inputs).get("actions", [])]
    actions = cat_actions or [a for a in sends.index if a != "nan"]
    channel_of = {a["id"]: a.get("channel", "") for a in catalog_dict(inputs).get("actions", [])}
    decisions = labelled_decisions(inputs)
    m = inputs.metrics
    rows = []
    base: dict[str, tuple[int, int]] = {}
    if decisions is not None:
        none = decisions[decisions["action"] == schema.NO_ACTION]
        base = {t: (len(none), int(none[t].sum())) for t in ("conversion", "churn")}
    for i, a in enumerate([schema.NO_ACTION, *actions]):
        row: dict[str, Any] = {"action": a, "channel": channel_of.get(a, "")}
        n_send = int(sends.get(a, 0))
        row["sends"] = n_send if a != schema.NO_ACTION else float("nan")
        row["open_rate"] = opens.get(a, 0) / n_send if n_send else float("nan")
        row["click_rate"] = clicks.get(a, 0) / n_send if n_send else float("nan")
        sub = decisions[decisions["action"] == a] if decisions is not None else None
        row["n_points"] = len(sub) if sub is not None else float("nan")
        for target in ("conversion", "churn"):
            computed = sub[target].mean() if sub is not None and len(sub) else float("nan")
            row[f"{target}_rate"] = float(m.get(f"{target}.{a}.rate", computed))
            if sub is not None and a != schema.NO_ACTION and base.get(target):
                n_0, k_0 = base[target]
                row[f"{target}_lift"] = bootstrap_difference(
                    len(sub), int(sub[target].sum()), n_0, k_0, seed=i
                )
            else:
                row[f"{target}_lift"] = (float("nan"),) * 3
        row["qini"] = float(m.get(f"uplift.{a}.qini", float("nan")))
        rows.append(row)
    return pd.DataFrame(rows)


def lift_figure(table: pd.DataFrame, conv_days: int) -> Figure:
    rows = table[table["action"] != schema.NO_ACTION].copy()
    rows["d"] = [v[0] for v in rows["conversion_lift"]]
    rows = rows[np.isfinite(rows["d"].to_numpy(dtype=float))].sort_values("d")
    fig, ax = plt.subplots(figsize=(8, 0.42 * len(rows) + 1.6))
    y = np.arange(len(rows))
    d = rows["d"].to_numpy(dtype=float) * 100
    lo = np.array([v[1] for v in rows["conversion_lift"]]) * 100
    hi = np.array([v[2] for v in rows["conversion_lift"]]) * 100
    colors = np.where(lo > 0, "#55A868", np.where(hi < 0, "#C44E52", "#8C8C8C"))
    ax.errorbar(d, y, xerr=[d - lo, hi - d], fmt="none", ecolor="#555555", capsize=3)
    ax.scatter(d, y, c=colors, s=45, zorder=3)
    ax.axvline(0, color="grey", linewidth=1, linestyle="--")
    ax.set_yticks(y, [pretty(a) for a in rows["action"]])
    ax.set_xlabel(f"{conv_days}-day purchase rate minus the no-action rate (percentage points)")
    ax.set_title("Purchases after each touchpoint compared with no action (95% intervals)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def touchpoints_section(inputs: ReportInputs) -> Section:
    conv_days, churn_days = horizons(inputs)
    table = touchpoint_table(inputs)
    have_ci = any(np.isfinite(v[1]) for v in table["conversion_lift"])
    period = (
        f"the test period ({inputs.test_period[0]:%Y-%m-%d} to {inputs.test_period[1]:%Y-%m-%d})"
        if inputs.test_period is not None
        else "the whole log"
    )
    shown = pd.DataFrame(
        {
            "Touchpoint": [
                "no action (baseline)" if a == schema.NO_ACTION else pretty(a)
                for a in table["action"]
            ],
            "Channel": [pretty(c) for c in table["channel"]],
            "Sends (whole log)": [fmt_int(v) for v in table["sends"]],
            "Opened (% of sends)": [fmt_pct(v) for v in table["open_rate"]],
            "Clicked (% of sends)": [fmt_pct(v) for v in table["click_rate"]],
            "Decision points": [fmt_int(v) for v in table["n_points"]],
            f"Bought within {conv_days} days": [fmt_pct(v) for v in table["conversion_rate"]],
            f"Churned within {churn_days} days": [fmt_pct(v) for v in table["churn_rate"]],
            "Purchase lift vs no action (pp, 95% interval)": [
                fmt_ci(*(np.asarray(v) * 100)) for v in table["conversion_lift"]
            ],
            "Churn change vs no action (pp, 95% interval)": [
                fmt_ci(*(np.asarray(v) * 100)) for v in table["churn_lift"]
            ],
            "Qini (model)": [fmt_signed(v, 3) for v in table["qini"]],
        }
    )
    parts = [
        para(
            f"Sends, opens and clicks count the whole log. Decision points, purchase and churn "
            f"rates and the lifts are measured on {period}: every send, and sampled moments "
            "when nothing was sent (the no-action baseline). The lift is the difference of "
            "rates with a 95% bootstrap interval; customers were chosen by the current "
            "policy, not at random, so it describes what happened rather than proving cause. "
            "The Qini coefficient (from the model evaluation) says how well the model finds "
            "the customers who respond to that touchpoint: above 0 is better than random."
        ),
        table_html(shown, highlight_rows=[0]),
    ]
    if have_ci:
        parts.append(
            figure_html(
                fig_png(lift_figure(table, conv_days)),
                "Purchase lift of each touchpoint over no action",
                "a dot right of the dashed line means more purchases than with no action; "
                "green intervals clear zero upwards, red downwards, grey intervals include zero "
                "(no clear difference).",
            )
        )
    else:
        parts.append(
            not_available(
                "no confidence intervals for the lift: the decision points could not be "
                "rebuilt (no feature spec or no no-action baseline); the Qini column is the "
                "only uplift measure here"
            )
        )
    return Section("touchpoints", "Per touchpoint", "".join(parts))


# --------------------------------------------------------------------------- 4. attribution
def attribution_bars(table: pd.DataFrame) -> Figure:
    """Grouped columns: conversions credited to each channel by each method (legend on top)."""
    from training.attribution import METHODS

    t = table.sort_values("markov", ascending=False)
    methods = [m for m in METHODS if m in t.columns]
    fig, ax = plt.subplots(figsize=(11, 4.6))
    x = np.arange(len(t), dtype=float)
    width = 0.8 / max(len(methods), 1)
    colors = ["#4C72B0", "#DD8452", "#55A868", "#8172B3"]
    for i, m in enumerate(methods):
        ax.bar(
            x + (i - (len(methods) - 1) / 2) * width,
            t[m],
            width,
            label=METHODS[m],
            color=colors[i % 4],
        )
    ax.set_xticks(x, [pretty(c) for c in t.index])
    ax.set_xlabel("Channel")
    ax.set_ylabel("Conversions credited (count)")
    ax.set_title("Conversions credited to each channel, by attribution method")
    ax.legend(ncol=len(methods), loc="upper right", fontsize=9)
    ax.margins(y=0.15)
    ax.grid(axis="y", alpha=0.3)
    thousands(ax)
    fig.tight_layout()
    return fig


def attribution_section(inputs: ReportInputs) -> Section:
    from training.attribution import attribute

    try:
        result = attribute(inputs.events)
    except (ValueError, KeyError) as exc:
        return Section("attribution", "Attribution per channel", not_available(str(exc)))
    if result.conversions == 0:
        return Section(
            "attribution",
            "Attribution per channel",
            not_available("no purchase follows a send in this log, so there is nothing to credit"),
        )
    t = result.table.sort_values("markov", ascending=False)
    shown = pd.DataFrame(
        {
            "Channel": [pretty(c) for c in t.index],
            "Removal effect": [fmt_pct(v) for v in t["markov_removal_effect"]],
            "Markov (conversions)": [fmt_num(v, 1) for v in t["markov"]],
            "First touch": [fmt_num(v, 0) for v in t["first_touch"]],
            "Last touch": [fmt_num(v, 0) for v in t["last_touch"]],
            "Linear": [fmt_num(v, 1) for v in t["linear"]],
        }
    )
    parts = [
        para(
            f"{result.conversions:,} first purchases followed at least one send "
            f"({result.n_journeys:,} customer journeys; {result.n_untouched_conversions:,} "
            "customers bought before any send and are not credited). The removal effect is the "
            "share of conversions that would be lost if the channel disappeared from every "
            "journey; the Markov column shares the conversions in proportion to it."
        ),
        figure_html(
            fig_png(attribution_bars(result.table)),
            "Conversions credited to each channel by four attribution methods",
            "taller bars mean more credit; where the blue Markov bar is taller than the green "
            "last-touch bar, the channel helps earlier in journeys more than last-touch credit "
            "shows.",
            wide=True,
        ),
        table_html(shown),
    ]
    return Section("attribution", "Attribution per channel", "".join(parts))


# --------------------------------------------------------------------------- 5. model quality
def quality_table(metrics: Mapping[str, float], actions: Sequence[str]) -> pd.DataFrame:
    """One row per group of decision points, purchase and churn model side by side."""
    rows = []
    groups = [("all decision points", "")] + [(pretty(a), f".{a}") for a in actions]
    for name, suffix in groups:
        if suffix and not any(f"{t}{suffix}.auc" in metrics for t in ("conversion", "churn")):
            continue
        row = {"Decision points": "no action" if suffix == f".{schema.NO_ACTION}" else name}
        for target, label in (("conversion", "Purchase"), ("churn", "Churn")):
            key = f"{target}{suffix}"
            row[f"{label}: AUC"] = fmt_num(metrics.get(f"{key}.auc", float("nan")))
            row[f"{label}: Brier"] = fmt_num(metrics.get(f"{key}.brier", float("nan")), 4)
            row[f"{label}: calibration error (pp)"] = fmt_num(
                100 * metrics.get(f"{key}.ece", float("nan")), 2
            )
            row[f"{label}: observed rate"] = fmt_pct(metrics.get(f"{key}.rate", float("nan")), 1)
        rows.append(row)
    return pd.DataFrame(rows)


def model_quality_section(inputs: ReportInputs) -> Section:
    m = inputs.metrics
    actions = [schema.NO_ACTION, *[a["id"] for a in catalog_dict(inputs).get("actions", [])]]
    parts: list[str] = []
    if any(k in m for k in ("conversion.auc", "churn.auc")):
        parts.append(
            para(
                "Measured on the test period. AUC: how well the model ranks customers "
                "(0.5 = guessing, 1 = perfect). Brier score: mean squared error of the "
                "probabilities (lower is better). Calibration error: the average gap between "
                "predicted and observed rates, in percentage points (lower is better)."
            )
        )
        parts.append(table_html(quality_table(m, actions), highlight_rows=[0]))
    else:
        parts.append(not_available("the run's model metrics (AUC, Brier, ECE) were not passed"))
    plots = []
    for key, title, how in (
        (
            "plots/calibration.png",
            "Calibration: predicted probability against what happened",
            "points on the dashed diagonal mean the predicted probabilities can be taken at "
            "face value; points below it mean the model is too optimistic.",
        ),
        (
            "plots/qini_curves.png",
            "Qini curves: extra purchases when contacting the customers the model ranks first",
            "each curve is one touchpoint; the higher it rises above the dashed random line, "
            "the better the model picks the customers that touchpoint persuades.",
        ),
        (
            "plots/importance_conversion.png",
            "What drives the purchase model",
            "longer bars are customer facts the model leans on more when predicting purchases.",
        ),
        (
            "plots/importance_churn.png",
            "What drives the churn model",
            "longer bars are customer facts the model leans on more when predicting churn.",
        ),
    ):
        png = inputs.plots.get(key)
        if png:
            plots.append(figure_html(png, title, how))
        elif "importance" not in key:
            plots.append(not_available(f"the plot {key} is not in the run"))
    parts.append(f'<div class="grid2">{"".join(plots)}</div>')
    return Section("quality", "Model quality", "".join(parts))


# --------------------------------------------------------------------------- 6. policy
POLICY_NAMES = {
    "model": "New policy (the model)",
    "logging": "Current policy (as logged)",
    "random_eligible": "Random allowed touchpoint",
    "no_action": "No action for anyone",
}


def policy_label(raw: str) -> str:
    if raw.startswith("best_single"):
        inner = raw[raw.find("(") + 1 : raw.rfind(")")] if "(" in raw else ""
        return f"Best single touchpoint for everyone ({pretty(inner)})" if inner else raw
    return POLICY_NAMES.get(raw, pretty(raw))


def policy_dots(table: pd.DataFrame, estimator: str = "dr") -> Figure:
    """Each policy's estimated value per decision as a dot with its 95% interval."""
    rows = table[table["estimator"].astype(str) == estimator].reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(10, 0.55 * len(rows) + 1.6))
    y = np.arange(len(rows))[::-1]
    v = rows["value"].to_numpy(dtype=float)
    lo, hi = rows["ci_low"].to_numpy(dtype=float), rows["ci_high"].to_numpy(dtype=float)
    is_model = (rows["policy"].astype(str) == "model").to_numpy()
    ax.errorbar(v, y, xerr=[v - lo, hi - v], fmt="none", ecolor="#555555", capsize=4)
    ax.scatter(v, y, s=70, zorder=3, c=np.where(is_model, "#DD8452", "#4C72B0"))
    for yi, vi in zip(y, v, strict=True):
        ax.annotate(
            f"{vi:,.2f}",
            (vi, yi),
            xytext=(0, 9),
            textcoords="offset points",
            ha="center",
            fontsize=9,
        )
    ax.set_yticks(y, [policy_label(str(p)) for p in rows["policy"]])
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlabel("Estimated value per decision (currency units; 95% interval)")
    ax.set_title(
        f"What each policy would earn per decision ({estimator.upper()} estimate, test period)"
    )
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def policy_table_html(table: pd.DataFrame) -> str:
    rows = []
    policies = list(dict.fromkeys(table["policy"].astype(str)))
    for p in policies:
        sub = table[table["policy"].astype(str) == p].set_index("estimator")
        row = {"Policy": policy_label(p)}
        for est, label in (("dr", "DR (main)"), ("ips", "IPS"), ("snips", "SNIPS")):
            if est in sub.index:
                v, lo, hi = (
                    float(x)
                    for x in np.asarray(sub.loc[est, ["value", "ci_low", "ci_high"]], dtype=float)
                )
                row[f"{label} value per decision [95% interval]"] = fmt_ci(v, lo, hi)
        if "ess" in sub.columns:
            row["Effective sample size"] = fmt_int(float(sub["ess"].iloc[0]))
        rows.append(row)
    highlight = [i for i, p in enumerate(policies) if p == "model"]
    return table_html(pd.DataFrame(rows), highlight_rows=highlight)


TRUTH_ROWS = (
    ("model", "New policy (the model)"),
    ("best_single", "Best single touchpoint for everyone"),
    ("random_eligible", "Random allowed touchpoint"),
    ("no_action", "No action for anyone"),
    ("oracle", "Oracle (knows every customer's true response)"),
)


def truth_html(m: Mapping[str, float]) -> str:
    rows = []
    for key, label in TRUTH_ROWS:
        if f"truth.value.{key}" not in m:
            continue
        frac = m.get(f"truth.oracle_fraction.{key}")
        if key == "oracle":
            frac = 1.0
        elif key == "no_action":
            frac = 0.0
        rows.append(
            {
                "Policy": label,
                "True value per customer": fmt_num(m[f"truth.value.{key}"], 2),
                "Share of the oracle's gain over no action": fmt_pct(
                    frac if frac is not None else float("nan")
                ),
            }
        )
    intro = para(
        f"The simulator knows each held-out customer's true response "
        f"({fmt_int(m.get('truth.customers', float('nan')))} customers). 0% is leaving everyone "
        f"alone, 100% is the oracle. Recommendations breaking consent or an unsubscribe: "
        f"{fmt_int(m.get('truth.violations', float('nan')))}."
    )
    return intro + table_html(pd.DataFrame(rows), highlight_rows=[0])


def share_table(choice: pd.Series, group: pd.Series, group_label: str) -> str:
    """Action shares (%) per group, shaded; a total column of customers."""
    counts = pd.crosstab(group, choice)
    order = counts.sum().sort_values(ascending=False).index
    counts = counts[order]
    shares = counts.div(counts.sum(axis=1), axis=0)
    shown = pd.DataFrame({group_label: [pretty(g) for g in counts.index]})
    shown["Customers"] = [fmt_int(v) for v in counts.sum(axis=1)]
    for a in order:
        shown["no action" if a == schema.NO_ACTION else pretty(a)] = [
            fmt_pct(v, 0) for v in shares[a]
        ]
    shade = pd.DataFrame(np.nan, index=range(len(shown)), columns=shown.columns)
    shade.iloc[:, 2:] = shares.to_numpy(dtype=float)
    return table_html(shown, shade=shade)


def recommended_choices(inputs: ReportInputs) -> tuple[pd.DataFrame, str] | None:
    """``customer_id, action`` of the new policy's first choice, and where it comes from."""
    recs = inputs.recommendations
    if recs is not None and len(recs):
        first = recs[recs["rank"] == 1] if "rank" in recs else recs
        when = f" on {inputs.recommendations_time:%Y-%m-%d}" if inputs.recommendations_time else ""
        return (
            first[["customer_id", "action"]].astype(str),
            f"a campaign for {len(first):,} customers at the end of the data{when}",
        )
    if inputs.truth_choices is not None and len(inputs.truth_choices):
        return (
            inputs.truth_choices[["customer_id", "action"]].astype(str),
            f"the simulator's {len(inputs.truth_choices):,} held-out customers",
        )
    return None


def segment_column(inputs: ReportInputs) -> str | None:
    cust = inputs.customers
    if cust is None:
        return None
    if inputs.segment_column is not None:
        return inputs.segment_column if inputs.segment_column in cust else None
    candidates = [
        c
        for c in cust.columns
        if c != "customer_id"
        and not str(c).startswith(schema.CONSENT_PREFIX)
        and not pd.api.types.is_float_dtype(cust[c])
        and 2 <= cust[c].nunique() <= 12
    ]
    for preferred in ("segment", "loyalty_member", "region", "age_band"):
        if preferred in candidates:
            return preferred
    return candidates[0] if candidates else None


#: How far ``propensity.none_weight`` (1 for right propensities) may stray before the policy
#: section warns: cross-fitted on the simulator's test periods it was 1.01; the training
#: period's model, which skewed IPS by 4-8, gave 1.08-1.10.
NONE_WEIGHT_TOLERANCE = 0.05


def policy_section(inputs: ReportInputs) -> Section:
    parts: list[str] = []
    objective = catalog_dict(inputs).get("objective") or {}
    if inputs.policy_table is not None and len(inputs.policy_table):
        parts.append(
            para(
                "Off-policy estimates on the test period: what each policy would have earned "
                "per decision, estimated from the logged history without running it. Value = "
                f"{objective.get('conversion_value', 'conversion value')} per purchase − "
                f"{objective.get('churn_cost', 'churn cost')} per churn − the contact cost "
                "(currency units). DR is the most reliable of the three estimators; "
                "overlapping intervals mean no clear winner."
            )
        )
        parts.append(policy_table_html(inputs.policy_table))
        scale = inputs.metrics.get("policy.conversion_effect_scale")
        if scale is not None and scale != 1.0:
            parts.append(
                para(
                    "The model's policy counts each contact's effect on purchases "
                    f"{scale:.2f} times what the purchase labels show: in the history, "
                    "a contact is followed within days by more contacts, which hide part "
                    "of its own effect (measured on the purchases made before the next "
                    "contact). The estimates above score purchases as they were logged."
                )
            )
        weight = inputs.metrics.get("propensity.none_weight")
        if weight is not None and abs(weight - 1.0) > NONE_WEIGHT_TOLERANCE:
            parts.append(
                para(
                    "Caution: the estimated probabilities with which the history chose each "
                    f"contact look off (their check is {weight:.2f}; it is 1 when they are "
                    "right), so IPS and SNIPS are skewed; DR less so.",
                    "na",
                )
            )
    else:
        parts.append(not_available("the policy table (policy_values.csv) was not passed"))
    png = inputs.plots.get("plots/policy_comparison.png")
    if inputs.policy_table is not None and (inputs.policy_table["estimator"] == "dr").any():
        png = fig_png(policy_dots(inputs.policy_table))
    if png:
        parts.append(
            figure_html(
                png,
                "Estimated value per decision of each policy (DR, 95% intervals)",
                "further right is better; the orange dot is the new policy and the whiskers show "
                "the range the true value is likely in; policies whose whiskers overlap are not "
                "clearly different.",
            )
        )
    parts.append("<h3>The simulator's ground truth</h3>")
    if any(k.startswith("truth.value.") for k in inputs.metrics):
        parts.append(truth_html(inputs.metrics))
    else:
        parts.append(not_available("no simulator ground truth (truth.* metrics) for this run"))
    parts.append("<h3>What the new policy recommends</h3>")
    chosen = recommended_choices(inputs)
    if chosen is None:
        parts.append(not_available("no recommendations were passed (no campaign, no truth)"))
    else:
        choices, source = chosen
        when = inputs.recommendations_time or data_end(inputs.events)
        stages = stage_at(inputs.events, when, stage_rules(inputs))
        stage_of = pd.Series(
            stages["stage"].astype(str).to_numpy(), index=stages["customer_id"].astype(str)
        )
        stage = choices["customer_id"].map(stage_of).fillna("pre-awareness")
        stage = pd.Series(
            pd.Categorical(stage, categories=list(schema.STAGES), ordered=True), index=stage.index
        )
        parts.append(
            para(
                f"First choice of the new policy for {source}; each row adds up to 100%. "
                "Darker cells are more common choices."
            )
        )
        parts.append("<h4>By journey stage</h4>")
        parts.append(share_table(choices["action"], stage.cat.remove_unused_categories(), "Stage"))
        seg = segment_column(inputs)
        if seg is not None and inputs.customers is not None:
            cust = inputs.customers.set_index(inputs.customers["customer_id"].astype(str))[seg]
            group = choices["customer_id"].map(cust.astype(str)).fillna("unknown")
            parts.append(f"<h4>By segment ({esc(pretty(seg))})</h4>")
            parts.append(share_table(choices["action"], group, pretty(seg).capitalize()))
        else:
            parts.append(not_available("the breakdown by segment needs the customer table"))
    return Section("policy", "Policy comparison", "".join(parts))


# --------------------------------------------------------------------------- 7. contact policy
RULE_WORDS = {
    "consent": "the customer has not consented to the channel",
    "unsubscribed": "the customer unsubscribed from the channel",
    "cooldown": "the channel was used too recently (cool-down)",
    "channel_cap": "the channel's limit of sends in the window is reached",
    "total_cap": "the limit of sends over all channels in the window is reached",
    "quiet_hours": "the decision falls in the channel's quiet hours",
}


def suppression_counts(suppressed: pd.Series) -> pd.DataFrame:
    """Per rule: blocked (customer, touchpoint) pairs and customers with at least one."""
    pairs = suppressed.fillna("").astype(str).str.split(";").explode()
    pairs = pairs[pairs != ""]
    split = pairs.str.split(":", n=1, expand=True) if len(pairs) else None
    rows = []
    for rule in RULES:
        if split is None:
            n_pairs, n_cust = 0, 0
        else:
            hit = split[1] == rule
            n_pairs, n_cust = int(hit.sum()), int(pairs[hit].index.nunique())
        rows.append({"rule": rule, "pairs": n_pairs, "customers": n_cust})
    return pd.DataFrame(rows)


def contact_policy_section(inputs: ReportInputs) -> Section:
    recs = inputs.recommendations
    if recs is None or "suppressed" not in recs:
        return Section(
            "contact",
            "Contact policy",
            not_available(
                "no recommendations with suppression details were passed, so the rule counts "
                "are unknown"
            ),
        )
    first = recs[recs["rank"] == 1] if "rank" in recs else recs
    first = first.reset_index(drop=True)
    counts = suppression_counts(first["suppressed"])
    n = len(first)
    shown = pd.DataFrame(
        {
            "Rule": counts["rule"],
            "What it means": [RULE_WORDS.get(r, "") for r in counts["rule"]],
            "Touchpoints blocked": [fmt_int(v) for v in counts["pairs"]],
            "Customers affected": [fmt_int(v) for v in counts["customers"]],
            "Share of customers": [fmt_pct(v / max(n, 1)) for v in counts["customers"]],
        }
    )
    when = (
        f" on {inputs.recommendations_time:%Y-%m-%d %H:%M} UTC"
        if inputs.recommendations_time
        else ""
    )
    parts = [
        para(
            f"For the campaign{when} ({n:,} customers), each touchpoint a rule removed from a "
            "customer's options is counted once, under the first rule it broke (rules are "
            "checked in the order listed)."
        ),
        table_html(shown),
    ]
    return Section("contact", "Contact policy", "".join(parts))


# --------------------------------------------------------------------------- 8. run comparison
#: ``(metric, plain name, format, higher is better)`` for the run comparison.
COMPARED: tuple[tuple[str, str, Callable[[float], str], bool], ...] = (
    ("conversion.auc", "Purchase model AUC", lambda v: fmt_num(v, 3), True),
    ("churn.auc", "Churn model AUC", lambda v: fmt_num(v, 3), True),
    (
        "conversion.ece",
        "Purchase model calibration error (pp)",
        lambda v: fmt_num(100 * v, 2),
        False,
    ),
    ("churn.ece", "Churn model calibration error (pp)", lambda v: fmt_num(100 * v, 2), False),
    ("policy.model.dr", "New policy: value per decision (DR)", lambda v: fmt_num(v, 3), True),
    ("policy.logging.dr", "Current policy: value per decision (DR)", lambda v: fmt_num(v, 3), True),
    ("policy.no_action.dr", "No action: value per decision (DR)", lambda v: fmt_num(v, 3), True),
    ("truth.oracle_fraction.model", "Share of the oracle's gain (simulator)", fmt_pct, True),
    ("count.events", "Events used", fmt_int, True),
    ("count.decision_points", "Decision points", fmt_int, True),
)


def run_comparison_section(inputs: ReportInputs) -> Section:
    champ = inputs.champion
    tags = inputs.tags
    parts: list[str] = []
    if "promotion.decision" in tags:
        parts.append(
            para(
                f"When this run was trained, the registry decided: {tags['promotion.decision']} "
                f"({tags.get('promotion.reason', '')})."
            )
        )
    if champ is None:
        parts.append(not_available("there is no champion model in the registry to compare with"))
        return Section("runs", "Run comparison", "".join(parts))
    if inputs.run_id is not None and champ.run_id == inputs.run_id:
        parts.append(para(f"This run is the current champion (version {champ.version})."))
        return Section("runs", "Run comparison", "".join(parts))
    rows = []
    for key, label, fmt, higher in COMPARED:
        mine, theirs = inputs.metrics.get(key), champ.metrics.get(key)
        if mine is None and theirs is None:
            continue
        a = float("nan") if mine is None else float(mine)
        b = float("nan") if theirs is None else float(theirs)
        counts = key.startswith("count.")
        rows.append(
            {
                "Measure": label,
                "This run": fmt(a),
                f"Champion (v{champ.version})": fmt(b),
                "Better when": "–" if counts else ("higher" if higher else "lower"),
                "This run is": "–"
                if counts or not np.isfinite(a - b)
                else ("same" if a == b else ("better" if (a > b) == higher else "worse")),
            }
        )
    same = inputs.params.get("data.sha256") and inputs.params.get(
        "data.sha256"
    ) == champ.params.get("data.sha256")
    parts.append(
        para(
            f"Current champion: version {champ.version}, run {champ.run_id}. "
            + (
                "Both runs were trained on the same data files, so the figures compare directly."
                if same
                else "The two runs did not (or may not) see the same data: policy values are "
                "measured on different test periods and compare only roughly."
            )
        )
    )
    parts.append(table_html(pd.DataFrame(rows)))
    return Section("runs", "Run comparison", "".join(parts))


def summary_html(inputs: ReportInputs) -> str:
    """Three plain sentences at the top: does the new policy beat today's, and how sure."""
    m = inputs.metrics
    lines = []
    if "policy.model.dr" in m and "policy.logging.dr" in m:
        new, old = m["policy.model.dr"], m["policy.logging.dr"]
        lo, hi = m.get("policy.model.dr.ci_low"), m.get("policy.model.dr.ci_high")
        olo, ohi = m.get("policy.logging.dr.ci_low"), m.get("policy.logging.dr.ci_high")
        overlap = None not in (lo, hi, olo, ohi) and not (lo > ohi or hi < olo)  # type: ignore[operator]
        verdict = (
            "the intervals overlap, so the difference is not clear yet"
            if overlap
            else ("clearly better" if new > old else "clearly worse")
        )
        lines.append(
            f"The new policy's estimated value is {new:,.2f} per decision (purchases minus churn "
            f"and contact costs) against {old:,.2f} for the current policy on the test period: "
            f"{verdict}."
        )
    if "truth.oracle_fraction.model" in m:
        lines.append(
            "In the simulator, it captures "
            f"{fmt_pct(m['truth.oracle_fraction.model'])} of the gain a perfect oracle would "
            "make over doing nothing."
        )
    if "promotion.decision" in inputs.tags:
        lines.append(f"Registry decision when trained: {inputs.tags['promotion.decision']}.")
    if not lines:
        return ""
    return '<div class="summary"><b>In short.</b> ' + esc(" ".join(lines)) + "</div>"


#: ``(anchor, heading, builder)`` in page order (the tests check every heading).
SECTIONS: tuple[tuple[str, str, Callable[[ReportInputs], Section]], ...] = (
    ("data", "Data overview", data_overview),
    ("funnel", "Journey funnel", funnel_section),
    ("touchpoints", "Per touchpoint", touchpoints_section),
    ("attribution", "Attribution per channel", attribution_section),
    ("quality", "Model quality", model_quality_section),
    ("policy", "Policy comparison", policy_section),
    ("contact", "Contact policy", contact_policy_section),
    ("runs", "Run comparison", run_comparison_section),
)
SECTION_TITLES = tuple(title for _, title, _ in SECTIONS)
