"""`FeatureSpec`: everything needed to rebuild the exact feature columns, as plain data.

The spec is learned once at training time (:meth:`FeatureSpec.from_data`), stored in the
model bundle as JSON (:meth:`FeatureSpec.to_dict`) and rebuilt by serving without any
training code (:meth:`FeatureSpec.from_dict`).  Its :attr:`FeatureSpec.feature_names` is the
exact column order of the feature matrix; docs/FEATURES.md defines every column.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from features import schema
from features.stages import StageRules

__all__ = [
    "CLICK_RATE_PRIOR",
    "INBOUND_WINDOW_DAYS",
    "MAX_CATEGORIES",
    "MAX_TOKENS",
    "MIN_NONE_PER_CUSTOMER",
    "MISSING_CODE",
    "OPEN_RATE_PRIOR",
    "RATE_PRIOR_STRENGTH",
    "TRANSITIONS",
    "FeatureSpec",
]

#: Format version of :meth:`FeatureSpec.to_dict`; bumped when the feature definitions change.
SPEC_VERSION = 1
#: Response rates are smoothed towards a prior mean with this many pseudo-sends, so a
#: channel with 1 send and 1 open is not scored as a 100 % opener.
RATE_PRIOR_STRENGTH = 2.0
#: Prior mean of opens per send (``ch_<c>_open_rate``).
OPEN_RATE_PRIOR = 0.2
#: Prior mean of clicks per send (``ch_<c>_click_rate``).
CLICK_RATE_PRIOR = 0.05
#: Window of ``ch_<c>_inbound_30d``.
INBOUND_WINDOW_DAYS = 30
#: Default of :attr:`FeatureSpec.min_none_per_customer`: each customer with a positive span
#: gets at least this many "no action" moments when the budget allows it.  It keeps the
#: models' figures as they were measured; 0 is the unbiased choice (docs/FEATURES.md).
MIN_NONE_PER_CUSTOMER = 2
#: At most this many tokens are learned (the most frequent); the rest map to "other".
MAX_TOKENS = 64
#: String attributes with more distinct values than this are skipped by ``from_data``
#: (they are identifiers, not categories).
MAX_CATEGORIES = 256
#: Code of a missing or unseen categorical value (LightGBM treats negatives as missing).
MISSING_CODE = -1.0
#: Transition features: (name, family of the earlier event, family of the later event).
#: Families: outbound = sent; response = open, click; purchase = purchase; inbound = every
#: other inbound type (visit, support, feedback, review, referral, unsubscribe, churn).
TRANSITIONS: tuple[tuple[str, str, str], ...] = (
    ("trans_outbound_response", "outbound", "response"),
    ("trans_outbound_outbound", "outbound", "outbound"),
    ("trans_response_inbound", "response", "inbound"),
    ("trans_inbound_purchase", "inbound", "purchase"),
    ("trans_outbound_purchase", "outbound", "purchase"),
)


def _str_tuple(values: Iterable[Any], what: str) -> tuple[str, ...]:
    if isinstance(values, str):
        raise ValueError(f"FeatureSpec.{what} must be a list of strings, not a string")
    out = tuple(str(v) for v in values)
    if len(set(out)) != len(out):
        raise ValueError(f"FeatureSpec.{what} has duplicates: {list(out)}")
    return out


@dataclass(frozen=True)
class FeatureSpec:
    """The learned, serializable definition of the feature columns.

    Parameters
    ----------
    channels : tuple of str
        Channel vocabulary (stored sorted). Events on other channels count in totals,
        sequences and stages but get no per-channel columns.
    windows_days : tuple of int, default (7, 30, 90)
        Look-back windows ``[t - d days, t)`` of the windowed counts (stored sorted).
    sequence_length : int, default 5
        How many of the latest events the sequence features describe.
    token_vocabulary : tuple of str
        Known ``"<channel>:<event_type>"`` tokens (stored sorted). Code 0 = no event
        (padding), ``1 + i`` = ``token_vocabulary[i]``, ``len + 1`` = any other token.
    static_numeric : tuple of str
        Numeric customer attributes, used as they are (``attr_<name>``).
    static_categorical : dict of str to tuple of str
        Categorical customer attributes and their vocabularies; a value's code is its index,
        a missing or unseen value is :data:`MISSING_CODE`.
    consent_channels : tuple of str
        Channels (a subset of ``channels``) with ``consent_<c>`` / ``can_contact_<c>``.
    stage_rules : StageRules
        Journey-stage thresholds.
    none_per_send : float, default 1.0
        Sampled "no action" decision points per observed send.
    min_none_per_customer : int, default 2
        "No action" moments every customer with a positive span gets before the rest of
        the budget is spread in proportion to the spans (:data:`MIN_NONE_PER_CUSTOMER`).
        0 samples customer-time uniformly; a floor over-represents short-lived customers,
        who are the churners (docs/FEATURES.md, "Decision points").
    seed : int, default 0
        Seed of the "no action" sampling.
    """

    channels: tuple[str, ...]
    windows_days: tuple[int, ...] = (7, 30, 90)
    sequence_length: int = 5
    token_vocabulary: tuple[str, ...] = ()
    static_numeric: tuple[str, ...] = ()
    static_categorical: dict[str, tuple[str, ...]] = field(default_factory=dict)
    consent_channels: tuple[str, ...] = ()
    stage_rules: StageRules = field(default_factory=StageRules)
    none_per_send: float = 1.0
    min_none_per_customer: int = MIN_NONE_PER_CUSTOMER
    seed: int = 0

    def __post_init__(self) -> None:
        # Normalize so that two specs describing the same columns compare equal.
        set_ = object.__setattr__
        set_(self, "channels", tuple(sorted(_str_tuple(self.channels, "channels"))))
        windows = tuple(self.windows_days)
        if not windows or any(
            not isinstance(w, int | np.integer) or isinstance(w, bool) or w <= 0 for w in windows
        ):
            raise ValueError(f"FeatureSpec.windows_days must be positive integers, got {windows}")
        set_(self, "windows_days", tuple(sorted({int(w) for w in windows})))
        if not isinstance(self.sequence_length, int) or self.sequence_length < 0:
            raise ValueError("FeatureSpec.sequence_length must be an integer >= 0")
        set_(
            self,
            "token_vocabulary",
            tuple(sorted(_str_tuple(self.token_vocabulary, "token_vocabulary"))),
        )
        set_(self, "static_numeric", _str_tuple(self.static_numeric, "static_numeric"))
        cats = {
            str(k): _str_tuple(v, f"static_categorical[{k!r}]")
            for k, v in dict(self.static_categorical).items()
        }
        overlap = sorted(set(cats) & set(self.static_numeric))
        if overlap:
            raise ValueError(f"attributes both numeric and categorical: {overlap}")
        set_(self, "static_categorical", cats)
        consent = _str_tuple(self.consent_channels, "consent_channels")
        unknown = sorted(set(consent) - set(self.channels))
        if unknown:
            raise ValueError(f"FeatureSpec.consent_channels not in channels: {unknown}")
        set_(self, "consent_channels", tuple(sorted(consent)))
        if isinstance(self.stage_rules, Mapping):
            set_(self, "stage_rules", StageRules.from_dict(self.stage_rules))
        if not isinstance(self.stage_rules, StageRules):
            raise ValueError("FeatureSpec.stage_rules must be a StageRules or a mapping")
        if not np.isfinite(self.none_per_send) or self.none_per_send < 0:
            raise ValueError("FeatureSpec.none_per_send must be a finite number >= 0")
        set_(self, "none_per_send", float(self.none_per_send))
        floor = self.min_none_per_customer
        if not isinstance(floor, int | np.integer) or isinstance(floor, bool) or floor < 0:
            raise ValueError("FeatureSpec.min_none_per_customer must be an integer >= 0")
        set_(self, "min_none_per_customer", int(floor))
        set_(self, "seed", int(self.seed))

    # ------------------------------------------------------------------ learning
    @classmethod
    def from_data(
        cls,
        events: pd.DataFrame,
        customers: pd.DataFrame | None,
        *,
        channels: Iterable[str],
        **overrides: Any,
    ) -> FeatureSpec:
        """Learn the vocabularies from a training log.

        Parameters
        ----------
        events : DataFrame
            Canonical event table.
        customers : DataFrame or None
            Customers table (``customer_id``, attributes, ``consent_<channel>``).
        channels : iterable of str
            The channel vocabulary (typically the catalog's channels).
        **overrides
            Any other field of the spec (e.g. ``windows_days=(7, 28)``, ``stage_rules=...``
            as a :class:`StageRules` or a plain mapping); an explicit value wins over the
            learned one.

        Returns
        -------
        FeatureSpec

        Notes
        -----
        Learned: ``token_vocabulary`` (the :data:`MAX_TOKENS` most frequent tokens of the
        log), ``static_numeric`` (numeric and boolean attribute columns),
        ``static_categorical`` (string/categorical columns with at most
        :data:`MAX_CATEGORIES` distinct values, vocabulary sorted), and
        ``consent_channels`` (= ``channels``).
        """
        known = {f.name for f in fields(cls)} - {"channels"}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown FeatureSpec field(s): {unknown}")
        chans = tuple(sorted({str(c) for c in channels}))
        learned: dict[str, Any] = {
            "token_vocabulary": _learn_tokens(events),
            "consent_channels": chans,
        }
        numeric, categorical = _learn_statics(customers)
        learned["static_numeric"] = numeric
        learned["static_categorical"] = categorical
        learned.update(overrides)
        return cls(channels=chans, **learned)

    # ------------------------------------------------------------------ columns
    @cached_property
    def feature_groups(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """The feature columns grouped as the pipeline writes them, in output order."""
        n = self.sequence_length
        types = schema.EVENT_TYPE_ORDER
        wins = [f"{w}d" for w in self.windows_days]
        chans = self.channels
        groups: list[tuple[str, tuple[str, ...]]] = [
            ("seq_token", tuple(f"seq_token_{k}" for k in range(1, n + 1))),
            ("seq_gap", tuple(f"seq_gap_hours_{k}" for k in range(1, n + 1))),
            ("transitions", tuple(t[0] for t in TRANSITIONS)),
            (
                "recency",
                (
                    "days_since_first_event",
                    "days_since_last_event",
                    "days_since_last_inbound",
                    "days_since_last_purchase",
                ),
            ),
            ("type_counts_total", tuple(f"n_{t}_total" for t in types)),
        ]
        groups += [(f"type_counts_{w}", tuple(f"n_{t}_{w}" for t in types)) for w in wins]
        groups.append(
            ("purchase_value", ("purchase_value_total", *(f"purchase_value_{w}" for w in wins)))
        )
        groups.append(("journey_stage", ("journey_stage",)))
        groups.append(("ch_sends_total", tuple(f"ch_{c}_sends_total" for c in chans)))
        groups += [(f"ch_sends_{w}", tuple(f"ch_{c}_sends_{w}" for c in chans)) for w in wins]
        groups += [
            ("ch_days_since_send", tuple(f"ch_{c}_days_since_send" for c in chans)),
            ("ch_open_rate", tuple(f"ch_{c}_open_rate" for c in chans)),
            ("ch_click_rate", tuple(f"ch_{c}_click_rate" for c in chans)),
            (
                "ch_inbound",
                tuple(f"ch_{c}_inbound_{INBOUND_WINDOW_DAYS}d" for c in chans),
            ),
            ("ch_unsubscribed", tuple(f"ch_{c}_unsubscribed" for c in chans)),
            ("consent", tuple(f"consent_{c}" for c in self.consent_channels)),
            ("can_contact", tuple(f"can_contact_{c}" for c in self.consent_channels)),
            ("static_numeric", tuple(f"attr_{a}" for a in self.static_numeric)),
            ("static_categorical", tuple(f"attr_{a}" for a in self.static_categorical)),
        ]
        return tuple(groups)

    @cached_property
    def feature_slices(self) -> dict[str, slice]:
        """Column range of each group of :attr:`feature_groups`."""
        out: dict[str, slice] = {}
        start = 0
        for name, cols in self.feature_groups:
            out[name] = slice(start, start + len(cols))
            start += len(cols)
        return out

    @cached_property
    def feature_names(self) -> tuple[str, ...]:
        """The exact column order of the feature matrix."""
        names = tuple(c for _, cols in self.feature_groups for c in cols)
        if len(set(names)) != len(names):
            dupes = sorted({c for c in names if names.count(c) > 1})
            raise ValueError(f"feature names collide: {dupes}")
        return names

    @cached_property
    def _cache(self) -> dict[Any, Any]:
        """Memo of derived lookup tables (not part of the spec's value)."""
        return {}

    @cached_property
    def columns(self) -> pd.Index:
        """:attr:`feature_names` as a pandas Index (reused by every output frame)."""
        return pd.Index(self.feature_names)

    @property
    def n_features(self) -> int:
        """Number of feature columns."""
        return len(self.feature_names)

    @property
    def other_token_code(self) -> int:
        """Code of tokens outside :attr:`token_vocabulary`."""
        return len(self.token_vocabulary) + 1

    def token_code(self, channel: str, event_type: str) -> int:
        """Integer code of the token ``"<channel>:<event_type>"`` (0 is padding)."""
        token = f"{channel}:{event_type}"
        pos = int(np.searchsorted(np.asarray(self.token_vocabulary, dtype=object), token))
        if pos < len(self.token_vocabulary) and self.token_vocabulary[pos] == token:
            return pos + 1
        return self.other_token_code

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping; :meth:`from_dict` rebuilds an equal spec."""
        return {
            "version": SPEC_VERSION,
            "channels": list(self.channels),
            "windows_days": list(self.windows_days),
            "sequence_length": self.sequence_length,
            "token_vocabulary": list(self.token_vocabulary),
            "static_numeric": list(self.static_numeric),
            "static_categorical": {k: list(v) for k, v in self.static_categorical.items()},
            "consent_channels": list(self.consent_channels),
            "stage_rules": self.stage_rules.to_dict(),
            "none_per_send": self.none_per_send,
            "min_none_per_customer": self.min_none_per_customer,
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureSpec:
        """Rebuild a spec from :meth:`to_dict` output (unknown keys raise ``ValueError``)."""
        payload = dict(data)
        version = payload.pop("version", SPEC_VERSION)
        if version != SPEC_VERSION:
            raise ValueError(
                f"unsupported FeatureSpec version {version!r} (expected {SPEC_VERSION})"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(payload) - known)
        if unknown:
            raise ValueError(f"unknown FeatureSpec key(s): {unknown}")
        if "stage_rules" in payload:
            payload["stage_rules"] = StageRules.from_dict(payload["stage_rules"])
        return cls(**payload)

    def with_overrides(self, **changes: Any) -> FeatureSpec:
        """A copy with some fields replaced (validated like the constructor)."""
        return replace(self, **changes)


def _learn_tokens(events: pd.DataFrame) -> tuple[str, ...]:
    if len(events) == 0:
        return ()
    counts = (
        pd.DataFrame(
            {
                "channel": events["channel"].astype(str).to_numpy(),
                "event_type": events["event_type"].astype(str).to_numpy(),
            }
        )
        .value_counts()
        .reset_index(name="n")
    )
    counts["token"] = counts["channel"] + ":" + counts["event_type"]
    # Most frequent first, ties by name, so the cap is deterministic.
    counts = counts.sort_values(["n", "token"], ascending=[False, True]).head(MAX_TOKENS)
    return tuple(sorted(counts["token"]))


def _learn_statics(
    customers: pd.DataFrame | None,
) -> tuple[tuple[str, ...], dict[str, tuple[str, ...]]]:
    if customers is None:
        return (), {}
    numeric: list[str] = []
    categorical: dict[str, tuple[str, ...]] = {}
    for col in customers.columns:
        if col == "customer_id" or str(col).startswith(schema.CONSENT_PREFIX):
            continue
        series = customers[col]
        if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
            numeric.append(str(col))
            continue
        if pd.api.types.is_datetime64_any_dtype(series):
            continue  # no meaningful encoding without a reference time
        values = series.dropna().astype(str).unique()
        if len(values) <= MAX_CATEGORIES:
            categorical[str(col)] = tuple(sorted(values))
    return tuple(numeric), categorical
