"""Plots for MLflow and the report, drawn for people who do not read code.

Every plot has a title, plain-word axis labels with units, and a legend where it has more
than one series.  Figures are returned (not shown) so callers can save or embed them.
"""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib

matplotlib.use("Agg")  # headless: CI and servers have no display

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from training import uplift_metrics


def calibration_figure(curves: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> Figure:
    """Predicted vs. observed rates, one line per target (equal-count bins)."""
    fig, ax = plt.subplots(figsize=(6, 5))
    top = 0.0
    for name, (y, p) in curves.items():
        order = np.argsort(p, kind="stable")
        bins = [b for b in np.array_split(order, 10) if len(b)]
        mean_p = np.array([p[b].mean() for b in bins])
        rate = np.array([y[b].mean() for b in bins])
        ax.plot(mean_p * 100, rate * 100, marker="o", label=name)
        top = max(top, float(mean_p.max()), float(rate.max()))
    lim = top * 105
    ax.plot([0, lim], [0, lim], linestyle="--", color="grey", label="perfectly calibrated")
    ax.set_xlabel("Predicted probability (%)")
    ax.set_ylabel("Observed rate (%)")
    ax.set_title("Calibration on the test period: are the probabilities honest?")
    ax.legend()
    fig.tight_layout()
    return fig


def qini_figure(curves: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> Figure:
    """Qini curves per action against no action (x scaled to a share of customers)."""
    fig, ax = plt.subplots(figsize=(9, 5))
    scaled = {
        name: (x / max(float(x[-1]), 1.0), q) for name, (x, q) in curves.items() if len(x) > 1
    }
    uplift_metrics.plot_qini(ax, scaled)
    # With ten actions an inside legend covers the curves: put it beside the plot.
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    fig.tight_layout()
    return fig


def importance_figure(names: list[str], gains: np.ndarray, title: str, top: int = 20) -> Figure:
    """Horizontal bars of the features that the model relies on most (share of total gain)."""
    order = np.argsort(gains)[::-1][:top][::-1]
    share = gains[order] / max(float(gains.sum()), 1e-12) * 100
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(order) + 1.5))
    ax.barh([names[i] for i in order], share, color="#4C72B0")
    ax.set_xlabel("Share of the model's total split gain (%)")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def policy_figure(table: pd.DataFrame, estimator: str = "dr") -> Figure:
    """Estimated value per customer decision of each policy, with 95% intervals."""
    rows = table[table["estimator"] == estimator].reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(rows) + 1.5))
    errors = np.vstack([rows["value"] - rows["ci_low"], rows["ci_high"] - rows["value"]])
    colors = ["#DD8452" if p == "model" else "#4C72B0" for p in rows["policy"]]
    ax.barh(rows["policy"], rows["value"], xerr=errors, color=colors, capsize=4)
    ax.axvline(0, color="grey", linewidth=0.8)
    ax.set_xlabel("Estimated value per decision (currency units, 95% interval)")
    ax.set_title(f"Policy comparison on the test period ({estimator.upper()} estimate)")
    ax.invert_yaxis()
    fig.tight_layout()
    return fig
