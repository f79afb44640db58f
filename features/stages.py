"""Journey stages inferred from a customer's history (CONTRACT: ``schema.STAGES``).

A customer's stage at time ``t`` is a pure function of the events strictly before ``t``.
The rules are evaluated from the lowest stage to the highest and **the highest stage whose
condition holds wins**:

==================  =========================================================================
stage (code)        condition on the history before ``t`` (defaults of :class:`StageRules`)
==================  =========================================================================
pre-awareness (0)   no events at all
awareness (1)       at least one event (typically only outbound touches and passive opens)
consideration (2)   at least one event of ``consideration_types`` (visit, click, support)
purchase (3)        at least one purchase, and none older than ``recent_purchase_days`` (30):
                    the first purchase happened within the last 30 days
usage (4)           at least one purchase, the first one older than ``recent_purchase_days``
advocacy (5)        an event of ``advocacy_types`` (review, referral) within ``advocacy_days``
                    (180) and at least ``advocacy_min_purchases`` (1) purchases overall
loyalty (6)         at least ``loyalty_min_purchases`` (3) purchases within ``loyalty_days``
                    (365)
==================  =========================================================================

Windows are half-open: "within ``d`` days of ``t``" means ``[t - d days, t)``.

The assignment itself (:func:`assign_stages`) is vectorized over counter arrays, so the
feature pipeline computes it for millions of decision points from its running totals;
:func:`stage_at` is a convenience for reports (every customer's stage at given times).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import pandas as pd

from features import schema

__all__ = ["StageRules", "assign_stages", "stage_at", "stage_names"]


@dataclass(frozen=True)
class StageRules:
    """Thresholds of the journey-stage rules (the catalog's ``journey:`` section).

    Parameters
    ----------
    recent_purchase_days : float, default 30
        A customer whose first purchase is younger than this is in ``purchase``; older
        first purchases mean ``usage``.
    advocacy_days : float, default 180
        An advocacy event (``advocacy_types``) within this many days makes an advocate.
    advocacy_min_purchases : int, default 1
        Advocacy also requires at least this many purchases overall (a review from a
        non-customer is not advocacy).
    loyalty_days : float, default 365
        The window in which ``loyalty_min_purchases`` purchases make a loyal customer.
    loyalty_min_purchases : int, default 3
        Purchases within ``loyalty_days`` needed for ``loyalty``.
    consideration_types : tuple of str, default ("visit", "click", "support")
        Event types that show active interest (``consideration``).
    advocacy_types : tuple of str, default ("review", "referral")
        Event types that count as advocacy.
    """

    recent_purchase_days: float = 30.0
    advocacy_days: float = 180.0
    advocacy_min_purchases: int = 1
    loyalty_days: float = 365.0
    loyalty_min_purchases: int = 3
    consideration_types: tuple[str, ...] = ("visit", "click", "support")
    advocacy_types: tuple[str, ...] = ("review", "referral")

    def __post_init__(self) -> None:
        for name in ("recent_purchase_days", "advocacy_days", "loyalty_days"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"StageRules.{name} must be a positive number, got {value!r}")
            object.__setattr__(self, name, float(value))
        for name in ("advocacy_min_purchases", "loyalty_min_purchases"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"StageRules.{name} must be an integer >= 1, got {value!r}")
        for name in ("consideration_types", "advocacy_types"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise ValueError(f"StageRules.{name} must be a list of event types, not a string")
            types = tuple(value)
            unknown = sorted(set(types) - schema.EVENT_TYPES)
            if unknown:
                raise ValueError(f"StageRules.{name} has unknown event types: {unknown}")
            object.__setattr__(self, name, types)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> StageRules:
        """Build rules from a plain mapping (e.g. the catalog's ``journey:`` section).

        Missing keys keep their defaults; unknown keys raise ``ValueError`` naming them.
        """
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise ValueError(f"journey rules must be a mapping, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown journey stage rule key(s): {unknown}; known keys: {sorted(known)}"
            )
        kwargs: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in data.items()
        }
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping that :meth:`from_dict` turns back into equal rules."""
        out = asdict(self)
        out["consideration_types"] = list(self.consideration_types)
        out["advocacy_types"] = list(self.advocacy_types)
        return out

    @property
    def window_days(self) -> tuple[float, ...]:
        """The look-back windows the rules need (recent purchase, advocacy, loyalty)."""
        return (self.recent_purchase_days, self.advocacy_days, self.loyalty_days)


def stage_names() -> tuple[str, ...]:
    """The stage names, indexed by stage code."""
    return tuple(schema.STAGES)


def assign_stages(
    *,
    n_events: np.ndarray,
    n_consideration: np.ndarray,
    n_purchases: np.ndarray,
    n_purchases_before_recent: np.ndarray,
    n_advocacy_recent: np.ndarray,
    n_purchases_loyalty: np.ndarray,
    rules: StageRules,
) -> np.ndarray:
    """Stage codes from counts of the history before each decision time.

    Parameters
    ----------
    n_events : ndarray
        Events before ``t``.
    n_consideration : ndarray
        Events of ``rules.consideration_types`` before ``t``.
    n_purchases : ndarray
        Purchases before ``t``.
    n_purchases_before_recent : ndarray
        Purchases before ``t - recent_purchase_days`` (0 means the first purchase, if any,
        is recent).
    n_advocacy_recent : ndarray
        Events of ``rules.advocacy_types`` in ``[t - advocacy_days, t)``.
    n_purchases_loyalty : ndarray
        Purchases in ``[t - loyalty_days, t)``.
    rules : StageRules
        The thresholds.

    Returns
    -------
    ndarray of int8
        Codes into :data:`features.schema.STAGES`.
    """
    stage = np.where(np.asarray(n_events) > 0, 1, 0).astype(np.int8)
    # Highest stage whose condition holds wins: apply the rules in ascending order and let
    # each later (higher) rule overwrite.
    stage[np.asarray(n_consideration) > 0] = 2
    purchased = np.asarray(n_purchases) > 0
    recent_first = purchased & (np.asarray(n_purchases_before_recent) == 0)
    stage[recent_first] = 3
    stage[purchased & ~recent_first] = 4
    advocate = (np.asarray(n_advocacy_recent) > 0) & (
        np.asarray(n_purchases) >= rules.advocacy_min_purchases
    )
    stage[advocate] = 5
    stage[np.asarray(n_purchases_loyalty) >= rules.loyalty_min_purchases] = 6
    return stage


def stage_at(
    events: pd.DataFrame,
    times: pd.Timestamp | str | Iterable[pd.Timestamp | str],
    rules: StageRules | None = None,
) -> pd.DataFrame:
    """Every customer's journey stage at each of ``times`` (for reporting).

    Parameters
    ----------
    events : DataFrame
        A canonical event table (``features.schema``).
    times : Timestamp or iterable of Timestamps
        The moments to evaluate; naive times are taken as UTC. Only events strictly before
        each time count.
    rules : StageRules, optional
        Defaults to ``StageRules()``.

    Returns
    -------
    DataFrame
        ``customer_id, time, stage_code, stage``, one row per customer of ``events`` and
        time, ordered by time then customer.
    """
    # Imported here: the pipeline imports this module (assign_stages).
    from features.counters import prepare_events
    from features.pipeline import compute_feature_matrix
    from features.spec import FeatureSpec

    rules = rules or StageRules()
    spec = FeatureSpec(channels=(), sequence_length=0, stage_rules=rules)
    stamp_list = [times] if isinstance(times, pd.Timestamp | str) else list(times)
    stamps = pd.DatetimeIndex([pd.Timestamp(s) for s in stamp_list])
    stamps = (stamps.tz_localize("UTC") if stamps.tz is None else stamps.tz_convert("UTC")).as_unit(
        "ns"
    )
    ev = prepare_events(events, spec)
    order = np.argsort(ev.customer_ids.astype(str), kind="stable")
    n_cust, n_times = len(order), len(stamps)
    query_codes = np.tile(order, n_times)
    query_times = np.repeat(stamps.asi8, n_cust)
    matrix = compute_feature_matrix(ev, query_codes, query_times, spec)
    codes = matrix[:, spec.feature_names.index("journey_stage")].astype(np.int8)
    query_ids = ev.customer_ids[query_codes]
    names = np.asarray(schema.STAGES, dtype=object)[codes]
    return pd.DataFrame(
        {
            "customer_id": query_ids,
            "time": pd.DatetimeIndex(query_times.view("datetime64[ns]")).tz_localize("UTC"),
            "stage_code": codes,
            "stage": pd.Categorical(names, categories=list(schema.STAGES), ordered=True),
        }
    )
