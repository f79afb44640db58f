"""Read touchpoint logs and customer tables into the canonical, typed tables (CONTRACT §1–2).

Nothing is silently dropped: a row that breaks the contract goes to the *quarantine* with
its 1-based data-row number (the first row after the header is row 1) and every reason it
was rejected, joined by ``"; "``, and ingestion goes on with the valid rows.  A row whose
``event_id`` was already seen is a duplicate: skipped and counted, not quarantined, so
ingesting the same file twice is harmless.  ``strict=True`` turns any bad row into an
:class:`IngestError`.  File-level problems (missing file, not a table, no rows, missing
required columns) always raise :class:`IngestError` with a one-line message.

All checks are vectorized.  String columns are factorized once and cleaned / parsed on
their distinct values, which is what makes a 10-million-row log ingest in seconds; Parquet
string columns are read dictionary-encoded for the same reason.  The implemented contract
is documented in ``docs/DATA.md``.
"""

from __future__ import annotations

import gzip
import re
import warnings
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features.mapping import MappingError, VocabularyMapping
from features.schema import (
    CONSENT_PREFIX,
    EVENT_COLUMNS,
    EVENT_TYPES,
    REQUIRED_EVENT_COLUMNS,
)

__all__ = [
    "CustomersResult",
    "IngestError",
    "IngestResult",
    "normalize_customers",
    "normalize_events",
    "read_customers",
    "read_events",
    "write_quarantine",
]

_TRUE: Final = frozenset({"true", "1", "yes", "y"})
_FALSE: Final = frozenset({"false", "0", "no", "n"})
#: Event-log columns read from Parquet as plain strings.  They are (nearly) unique per row,
#: or, for ``customer_id``, so many-valued that unifying the per-row-group dictionaries
#: costs more than one hash-factorize of the plain strings.
_UNIQUE_COLUMNS: Final = frozenset({"customer_id", "timestamp", "event_id", "decision_id"})


class IngestError(ValueError):
    """A file or frame that cannot be ingested at all (or, under ``strict``, has bad rows)."""


# ---------------------------------------------------------------------------------------
# Reading files.  Every pandas / pyarrow exception is turned into a one-line IngestError.
# ---------------------------------------------------------------------------------------
_CSV_SUFFIXES: Final = (".csv", ".csv.gz")
_PARQUET_SUFFIXES: Final = (".parquet", ".pq")
_BAD_LINE = re.compile(r"line (\d+): (expected \d+ fields, saw \d+)")


@dataclass(frozen=True)
class _Table:
    frame: pd.DataFrame
    rows: np.ndarray  # 1-based data-row number of each frame row
    parse_errors: list[tuple[int, str]]  # rows the CSV parser could not split


def _read_table(path: str | Path, *, dictionary: Callable[[str], bool]) -> _Table:
    p = Path(path)
    name = p.name.lower()
    if not p.exists():
        raise IngestError(f"{p}: file not found")
    if p.is_dir():
        raise IngestError(f"{p}: is a directory, expected a CSV or Parquet file")
    if name.endswith(_CSV_SUFFIXES):
        table = _read_csv(p)
    elif name.endswith(_PARQUET_SUFFIXES):
        table = _read_parquet(p, dictionary)
    else:
        raise IngestError(
            f"{p}: unsupported file type {''.join(p.suffixes) or '(no extension)'}; "
            "expected .csv, .csv.gz, .parquet or .pq"
        )
    if len(table.frame) == 0 and not table.parse_errors:
        raise IngestError(f"{p}: no rows (only a header)")
    return table


def _read_csv(p: Path) -> _Table:
    gz = p.name.lower().endswith(".gz")
    try:
        with gzip.open(p, "rb") if gz else p.open("rb") as fh:
            head = fh.read(65536)
    except (OSError, EOFError) as exc:
        raise IngestError(f"{p}: cannot read ({'not a gzip file' if gz else exc})") from None
    if not head.strip():
        raise IngestError(f"{p}: empty file")
    if b"\x00" in head:
        raise IngestError(f"{p}: not a text table (binary content)")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", pd.errors.ParserWarning)
            frame = pd.read_csv(
                p,
                dtype=str,
                keep_default_na=False,
                na_filter=False,
                encoding="utf-8-sig",  # strips a BOM
                on_bad_lines="warn",
                compression="gzip" if gz else None,
            )
    except pd.errors.EmptyDataError:
        raise IngestError(f"{p}: empty file") from None
    except UnicodeDecodeError:
        raise IngestError(f"{p}: not a text table (not UTF-8 text)") from None
    except (pd.errors.ParserError, ValueError, OSError, EOFError) as exc:
        raise IngestError(f"{p}: cannot parse as CSV: {' '.join(str(exc).split())}") from None
    parse_errors: list[tuple[int, str]] = []
    for w in caught:
        for line, what in _BAD_LINE.findall(str(w.message)):
            # The C parser counts records with the header as line 1.
            parse_errors.append((int(line) - 1, f"wrong number of fields ({what})"))
    n = len(frame)
    rows = np.arange(1, n + 1, dtype=np.int64)
    if parse_errors:
        skipped = np.array([r for r, _ in parse_errors], dtype=np.int64)
        candidate = np.setdiff1d(np.arange(1, n + len(skipped) + 1, dtype=np.int64), skipped)
        if len(candidate) == n:
            rows = candidate
    return _Table(frame, rows, parse_errors)


def _read_parquet(p: Path, dictionary: Callable[[str], bool]) -> _Table:
    try:
        schema = pq.read_schema(p)
        strings = [
            f.name
            for f in schema
            if (pa.types.is_string(f.type) or pa.types.is_large_string(f.type))
            and dictionary(f.name)
        ]
        table = pq.read_table(p, read_dictionary=strings)
        frame = table.to_pandas()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise IngestError(
            f"{p}: not a readable Parquet file ({' '.join(str(exc).split())[:200]})"
        ) from None
    frame.columns = [str(c) for c in frame.columns]
    return _Table(frame.reset_index(drop=True), np.arange(1, len(frame) + 1, dtype=np.int64), [])


# ---------------------------------------------------------------------------------------
# _Reasons: one boolean mask per check, messages built only for the bad rows.
# ---------------------------------------------------------------------------------------
class _Reasons:
    def __init__(self, n: int) -> None:
        self.n = n
        self.checks: list[tuple[str, np.ndarray, np.ndarray | None]] = []

    def add(
        self,
        mask: np.ndarray,
        kind: str,
        *,
        values: pd.Series | None = None,
        detail: np.ndarray | None = None,
        sep: str = ": ",
    ) -> None:
        """Record ``kind`` for the rows in ``mask``; quote the raw ``values`` or add ``detail``."""
        mask = np.asarray(mask, dtype=bool)
        if not mask.any():
            return
        text: np.ndarray | None = None
        idx = np.flatnonzero(mask)
        if values is not None:
            text = (_text(values.iloc[idx]).radd(f"{kind}{sep}'") + "'").to_numpy(dtype=object)
        elif detail is not None:
            shown = pd.Series(detail[idx], dtype="str")
            text = (shown.radd(f"{kind} (") + ")").to_numpy(dtype=object)
        self.checks.append((kind, mask, text))

    def any(self) -> np.ndarray:
        bad = np.zeros(self.n, dtype=bool)
        for _, mask, _ in self.checks:
            bad |= mask
        return bad

    def messages(self, idx: np.ndarray) -> np.ndarray:
        """The joined reasons of rows ``idx`` (sorted positions of bad rows)."""
        out = np.full(len(idx), "", dtype=object)
        for kind, mask, text in self.checks:
            here = mask[idx]
            if not here.any():
                continue
            if text is None:
                part = np.full(int(here.sum()), kind, dtype=object)
            else:
                # text is aligned with flatnonzero(mask); pick the ones among idx
                pos = np.searchsorted(np.flatnonzero(mask), idx[here])
                part = text[pos]
            prev = out[here]
            out[here] = np.where(prev == "", part, prev + "; " + part)
        return out

    def counts(self, extra: int = 0) -> dict[str, int]:
        out = {kind: int(mask.sum()) for kind, mask, _ in self.checks}
        if extra:
            out["wrong number of fields"] = extra
        return out


def _text(s: pd.Series) -> pd.Series:
    """Values as strings ('' for missing), vectorized; datetimes in ISO format."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        s = s.astype(object)
    return s.astype("str").where(s.notna(), "").reset_index(drop=True)


def _quarantine_frame(
    raw: pd.DataFrame, reasons: _Reasons, rows: np.ndarray, parse_errors: list[tuple[int, str]]
) -> pd.DataFrame:
    idx = np.flatnonzero(reasons.any())
    cols = [str(c) for c in raw.columns]
    names = [f"source_{c}" if c in ("row", "reason") else c for c in cols]
    parts = {"row": rows[idx], "reason": reasons.messages(idx)}
    sub = raw.iloc[idx]
    for name, c in zip(names, raw.columns, strict=True):
        parts[name] = _text(sub[c]).to_numpy(dtype=object)
    frame = pd.DataFrame(parts, columns=["row", "reason", *names])
    if parse_errors:
        extra = pd.DataFrame(
            {"row": [r for r, _ in parse_errors], "reason": [m for _, m in parse_errors]}
        )
        for name in names:
            extra[name] = ""
        frame = pd.concat([frame, extra], ignore_index=True).sort_values("row", kind="stable")
    frame["row"] = frame["row"].astype(np.int64)
    for name in ["reason", *names]:
        frame[name] = frame[name].astype("str")
    return frame.reset_index(drop=True)


def _strict_error(
    source: str, reasons: _Reasons, rows: np.ndarray, parse_errors: list[tuple[int, str]]
) -> IngestError:
    idx = np.flatnonzero(reasons.any())
    listed = sorted(
        [(int(r), str(m)) for r, m in zip(rows[idx], reasons.messages(idx), strict=True)]
        + parse_errors
    )
    lines = "; ".join(f"row {r}: {m}" for r, m in listed[:20])
    more = f" (and {len(listed) - 20} more)" if len(listed) > 20 else ""
    return IngestError(f"{source}: {len(listed)} bad row(s) under --strict: {lines}{more}")


# ---------------------------------------------------------------------------------------
# Column parsers.  Strings are factorized once and cleaned on their distinct values.
# ---------------------------------------------------------------------------------------
def _str_series(values: Any) -> pd.Series:
    """Values as pandas' Arrow-backed ``str`` dtype, so string ops run in Arrow, not Python."""
    return pd.Series(pd.Index(values).astype("str"), copy=False)


def _arrow_codes(s: pd.Series) -> tuple[np.ndarray, pa.Array] | None:
    """Dictionary-encode an Arrow-backed string column in Arrow: (codes, -1 = null; uniques).

    Hashing in Arrow directly is markedly faster than pandas' factorize on the same data.
    """
    if not isinstance(s.dtype, pd.StringDtype) or s.dtype.storage != "pyarrow":
        return None
    chunked = s.array.__arrow_array__()
    arr = chunked.combine_chunks() if isinstance(chunked, pa.ChunkedArray) else chunked
    if pa.types.is_large_string(arr.type):
        arr = arr.cast(pa.string())
    enc = pc.dictionary_encode(arr)
    return enc.indices.fill_null(-1).to_numpy().astype(np.int32), enc.dictionary


def _categorical(s: pd.Series) -> pd.Categorical:
    """The column as a Categorical, hashing in Arrow when the column is Arrow-backed."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        return pd.Categorical(s)
    encoded = _arrow_codes(s)
    if encoded is None:
        return pd.Categorical(s)
    codes, uniques = encoded
    out: pd.Categorical = pd.Categorical.from_codes(
        codes, categories=pd.Index(pd.array(uniques, dtype="str"))
    )
    return out


def _clean_categorical(s: pd.Series, *, lower: bool) -> pd.Categorical:
    """A Categorical of stripped (and lower-cased) strings; empty or missing -> code -1.

    The column is factorized once; cleaning runs on its distinct values only.
    """
    cat = _categorical(s)
    new = _str_series(cat.categories).str.strip()
    if lower:
        new = new.str.lower()
    new = new.where(new != "")
    inverse, uniques = pd.factorize(new, use_na_sentinel=True)
    mapped = _per_row(np.asarray(inverse, dtype=np.int64), np.asarray(cat.codes), -1)
    out: pd.Categorical = pd.Categorical.from_codes(
        mapped.astype(np.int32), categories=pd.Index(uniques, dtype="str")
    )
    return out


def _clean_text(s: pd.Series) -> pd.Series:
    """Mostly-unique ids (``event_id``): stripped ``str`` values, NaN when empty."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        s = s.astype("str")
    t = s.reset_index(drop=True).astype("str").str.strip()
    return t.where(t != "")


def _per_row(per_cat: np.ndarray, codes: np.ndarray, fill: Any) -> np.ndarray:
    """``per_cat[codes]`` with ``fill`` where the code is -1 (missing); safe when empty."""
    ext = np.empty(len(per_cat) + 1, dtype=per_cat.dtype)
    ext[:-1] = per_cat
    ext[-1] = fill
    return ext[codes]  # code -1 picks the trailing fill


def _finalize_categorical(cat: pd.Categorical, idx: np.ndarray) -> pd.Categorical:
    """Rows ``idx`` of ``cat`` with only the used categories, sorted (stable across inputs)."""
    codes = np.asarray(cat.codes)[idx]
    used = np.zeros(len(cat.categories), dtype=bool)
    used[codes[codes >= 0]] = True
    kept = pd.Index(cat.categories, dtype="str")[used]
    order = np.asarray(kept.argsort())  # an Arrow sort: fast even for millions of ids
    remap = np.full(len(cat.categories), -1, dtype=np.int32)
    remap[np.flatnonzero(used)[order]] = np.arange(len(kept), dtype=np.int32)
    new_codes = _per_row(remap, codes, -1).astype(np.int32)
    out: pd.Categorical = pd.Categorical.from_codes(new_codes, categories=kept.take(order))
    return out


def _object_strings(text: pd.Series, idx: np.ndarray) -> np.ndarray:
    """Rows ``idx`` of a cleaned text column as an object array of str, None where missing."""
    sub = text.iloc[idx]
    arr = sub.to_numpy(dtype=object)
    arr[sub.isna().to_numpy()] = None
    return arr


@dataclass(frozen=True)
class _Numeric:
    values: np.ndarray  # float64, NaN where absent or bad
    present: np.ndarray  # a non-empty value was given
    bad: np.ndarray  # given but not a finite number


def _parse_numeric(s: pd.Series) -> _Numeric:
    if pd.api.types.is_numeric_dtype(s.dtype):
        v = s.to_numpy(dtype=np.float64, na_value=np.nan)
        present = ~np.isnan(v)
        bad = present & ~np.isfinite(v)
    else:
        cat = _clean_categorical(s, lower=False)
        per_cat = pd.to_numeric(
            pd.Series(np.asarray(cat.categories, dtype=object), dtype=object), errors="coerce"
        ).to_numpy(dtype=np.float64, na_value=np.nan)
        codes = cat.codes
        v = _per_row(per_cat, codes, np.nan)
        present = codes >= 0
        bad = present & ~np.isfinite(v)
    v = np.where(bad, np.nan, v).astype(np.float64)
    return _Numeric(v, present, bad)


@dataclass(frozen=True)
class _Stamps:
    values: np.ndarray  # datetime64[ns] in UTC (naive), NaT where absent or bad
    present: np.ndarray
    unparseable: np.ndarray
    out_of_range: np.ndarray


_NS_MIN: Final = pd.Timestamp.min.tz_localize("UTC")
_NS_MAX: Final = pd.Timestamp.max.tz_localize("UTC")


def _parse_timestamps(s: pd.Series, fmt: str | None) -> _Stamps:
    n = len(s)
    if isinstance(s.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(s.dtype):
        parsed = pd.DatetimeIndex(s)
        parsed = parsed.tz_convert("UTC") if parsed.tz is not None else parsed.tz_localize("UTC")
        present = np.asarray(parsed.notna())
        unparseable = np.zeros(n, dtype=bool)
    else:
        # Text: parse each distinct string once.  No offset means UTC; offsets convert.
        cat = _clean_categorical(s, lower=False)
        texts = pd.Index(np.asarray(cat.categories, dtype=object))
        per_cat = pd.to_datetime(texts, utc=True, format=fmt or "ISO8601", errors="coerce")
        codes = cat.codes
        present = codes >= 0
        per_cat_ns = per_cat.tz_convert(None).to_numpy()
        parsed = pd.DatetimeIndex(
            _per_row(per_cat_ns, codes, np.datetime64("NaT", "ns").astype(per_cat_ns.dtype))
        )
        if parsed.tz is None:
            parsed = parsed.tz_localize("UTC")
        parsed = pd.DatetimeIndex(parsed.where(present))
        unparseable = present & np.asarray(parsed.isna())
    # pandas 3 may parse at µs/s resolution, which reaches years the ns type cannot hold.
    out_of_range = np.asarray((parsed < _NS_MIN) | (parsed > _NS_MAX)) & present
    parsed = pd.DatetimeIndex(parsed.where(~out_of_range))
    values = parsed.tz_convert(None).as_unit("ns").to_numpy()
    return _Stamps(values, present, unparseable, out_of_range)


@dataclass(frozen=True)
class IngestResult:
    """The outcome of ingesting an event log.

    Attributes
    ----------
    events : DataFrame
        The canonical event table (``features/schema.py``).
    quarantine : DataFrame
        ``row``, ``reason``, then the source columns as strings; one row per bad row.
    n_input : int
        Data rows in the source (including bad rows and duplicates).
    n_duplicates : int
        Rows skipped because their ``event_id`` was already seen.
    source : str
        The file name, or ``"<frame>"``.
    warnings : tuple of str
        Non-fatal notes (ignored columns, ...).
    reason_counts : Mapping[str, int]
        Bad rows per kind of reason (a row with two reasons counts twice).
    """

    events: pd.DataFrame
    quarantine: pd.DataFrame
    n_input: int
    n_duplicates: int
    source: str = "<frame>"
    warnings: tuple[str, ...] = ()
    reason_counts: Mapping[str, int] = field(default_factory=dict)

    @property
    def n_valid(self) -> int:
        """Rows in :attr:`events`."""
        return len(self.events)

    @property
    def n_quarantined(self) -> int:
        """Rows in :attr:`quarantine`."""
        return len(self.quarantine)

    def summary(self) -> dict[str, Any]:
        """Counts, reasons and warnings as a JSON-ready dict."""
        return {
            "source": self.source,
            "rows_in": self.n_input,
            "rows_valid": self.n_valid,
            "rows_quarantined": self.n_quarantined,
            "duplicates_skipped": self.n_duplicates,
            "customers": int(self.events["customer_id"].nunique()),
            "reasons": dict(self.reason_counts),
            "warnings": list(self.warnings),
        }

    def summary_text(self) -> str:
        """The summary as a few human-readable lines."""
        return _summary_text(self.summary(), "events")

    def __str__(self) -> str:
        return self.summary_text()


@dataclass(frozen=True)
class CustomersResult:
    """The outcome of ingesting a customers table (see :func:`read_customers`)."""

    customers: pd.DataFrame
    quarantine: pd.DataFrame
    n_input: int
    source: str = "<frame>"
    warnings: tuple[str, ...] = ()
    reason_counts: Mapping[str, int] = field(default_factory=dict)

    @property
    def n_valid(self) -> int:
        """Rows in :attr:`customers`."""
        return len(self.customers)

    @property
    def n_quarantined(self) -> int:
        """Rows in :attr:`quarantine`."""
        return len(self.quarantine)

    @property
    def consent_channels(self) -> tuple[str, ...]:
        """Channels with a ``consent_<channel>`` column, sorted."""
        n = len(CONSENT_PREFIX)
        return tuple(sorted(c[n:] for c in self.customers.columns if c.startswith(CONSENT_PREFIX)))

    def summary(self) -> dict[str, Any]:
        """Counts, reasons and warnings as a JSON-ready dict."""
        return {
            "source": self.source,
            "rows_in": self.n_input,
            "rows_valid": self.n_valid,
            "rows_quarantined": self.n_quarantined,
            "consent_channels": list(self.consent_channels),
            "reasons": dict(self.reason_counts),
            "warnings": list(self.warnings),
        }

    def summary_text(self) -> str:
        """The summary as a few human-readable lines."""
        return _summary_text(self.summary(), "customers")

    def __str__(self) -> str:
        return self.summary_text()


def _summary_text(s: Mapping[str, Any], what: str) -> str:
    lines = [
        f"{s['source']}: {s['rows_in']} rows in, {s['rows_valid']} valid {what}, "
        f"{s['rows_quarantined']} quarantined"
        + (f", {s['duplicates_skipped']} duplicates skipped" if "duplicates_skipped" in s else "")
    ]
    lines += [f"  {n} x {reason}" for reason, n in s["reasons"].items()]
    lines += [f"  warning: {w}" for w in s["warnings"]]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------------------
def read_events(
    path: str | Path,
    *,
    mapping: VocabularyMapping | None = None,
    strict: bool = False,
    known_event_ids: Collection[str] | None = None,
) -> IngestResult:
    """Read an event log (``.csv``, ``.csv.gz``, ``.parquet``, ``.pq``) into the canonical table.

    Parameters
    ----------
    path : str or Path
        The log.  CSV is read as text (UTF-8, optional BOM) so nothing is lost in parsing.
    mapping : VocabularyMapping, optional
        Applied to the raw columns before validation (see ``features/mapping.py``).
    strict : bool
        Raise on the first bad row instead of quarantining (the error lists up to 20).
    known_event_ids : collection of str, optional
        Ids already ingested; rows carrying them are skipped as duplicates.

    Returns
    -------
    IngestResult

    Raises
    ------
    IngestError
        For file-level problems, and under ``strict`` for any bad row.
    """
    source = str(path)
    dict_columns = _dictionary_columns(mapping)
    table = _read_table(path, dictionary=dict_columns)
    return _normalize_events(
        table.frame,
        rows=table.rows,
        parse_errors=table.parse_errors,
        mapping=mapping,
        strict=strict,
        known_event_ids=known_event_ids,
        source=source,
    )


def normalize_events(
    df: pd.DataFrame,
    *,
    mapping: VocabularyMapping | None = None,
    strict: bool = False,
    known_event_ids: Collection[str] | None = None,
    source: str = "<frame>",
) -> IngestResult:
    """Validate and type an in-memory frame of events, exactly as :func:`read_events` does.

    Row numbers in the quarantine are 1-based positions in ``df``.  Bad rows never raise
    unless ``strict``; an empty frame gives an empty result.

    Raises
    ------
    IngestError
        When a required column is missing, or under ``strict`` for any bad row.
    """
    return _normalize_events(
        df,
        rows=np.arange(1, len(df) + 1, dtype=np.int64),
        parse_errors=[],
        mapping=mapping,
        strict=strict,
        known_event_ids=known_event_ids,
        source=source,
    )


def _dictionary_columns(mapping: VocabularyMapping | None) -> Any:
    """Which Parquet string columns to read dictionary-encoded: all but the unique ones."""
    rename = dict(mapping.rename) if mapping is not None else {}
    return lambda name: rename.get(name, name) not in _UNIQUE_COLUMNS


def _normalize_events(
    raw: pd.DataFrame,
    *,
    rows: np.ndarray,
    parse_errors: list[tuple[int, str]],
    mapping: VocabularyMapping | None,
    strict: bool,
    known_event_ids: Collection[str] | None,
    source: str,
) -> IngestResult:
    raw = raw.rename(columns=lambda c: c.strip() if isinstance(c, str) else c)
    df = raw
    if mapping is not None:
        try:
            df = mapping.apply(raw)
        except MappingError as exc:
            raise IngestError(f"{source}: {exc}") from None
    missing = [c for c in REQUIRED_EVENT_COLUMNS if c not in df.columns]
    if missing:
        raise IngestError(
            f"{source}: missing required column(s) {', '.join(missing)}; "
            f"found: {', '.join(map(str, df.columns)) or '(none)'}"
            + ("" if mapping else " (use a mapping file for other vocabularies)")
        )
    warnings: list[str] = []
    unknown = [str(c) for c in df.columns if c not in EVENT_COLUMNS]
    if unknown:
        warnings.append(f"ignored unknown column(s): {', '.join(unknown)}")
    if parse_errors:
        warnings.append(f"{len(parse_errors)} line(s) with a wrong number of fields")

    n = len(df)
    reasons = _Reasons(n)
    fmt = mapping.timestamp_format if mapping is not None else None

    def col(name: str) -> pd.Series:
        return df[name] if name in df.columns else pd.Series(np.full(n, np.nan), index=df.index)

    # Required categories: strip (ids) or strip + lower-case (vocabularies).
    customer = _clean_categorical(col("customer_id"), lower=False)
    reasons.add(customer.codes < 0, "missing customer_id")
    channel = _clean_categorical(col("channel"), lower=True)
    reasons.add(channel.codes < 0, "missing channel")
    etype = _clean_categorical(col("event_type"), lower=True)
    reasons.add(etype.codes < 0, "missing event_type")
    known_type = np.asarray(pd.Index(etype.categories).isin(sorted(EVENT_TYPES)), dtype=bool)
    unknown_type = ~_per_row(known_type, etype.codes, True)
    reasons.add(unknown_type, "unknown event_type", values=col("event_type"))
    action = _clean_categorical(col("action"), lower=True)
    is_sent = _is(etype, "sent")
    reasons.add(is_sent & (action.codes < 0), "sent without action")

    ts = _parse_timestamps(col("timestamp"), fmt)
    reasons.add(~ts.present, "missing timestamp")
    reasons.add(ts.unparseable, "unparseable timestamp", values=col("timestamp"))
    reasons.add(ts.out_of_range, "timestamp out of range", values=col("timestamp"))

    value = _parse_numeric(col("value"))
    reasons.add(value.bad, "value is not a number", values=col("value"))
    prop = _parse_numeric(col("propensity"))
    reasons.add(prop.bad, "propensity is not a number", values=col("propensity"))
    out_of_unit = prop.present & ~prop.bad & ~((prop.values > 0) & (prop.values <= 1))
    reasons.add(out_of_unit, "propensity must be in (0, 1]", values=col("propensity"), sep=", got ")

    event_id = _clean_text(col("event_id"))
    decision_id = _clean_text(col("decision_id"))

    bad = reasons.any()
    if strict and (bad.any() or parse_errors):
        raise _strict_error(source, reasons, rows, parse_errors)

    # Duplicates among the valid rows: first occurrence (in input order) wins.
    has_id = ~bad & event_id.notna().to_numpy()
    dup = np.zeros(n, dtype=bool)
    sel = np.flatnonzero(has_id)
    if len(sel):
        ids = event_id.iloc[sel]
        encoded = _arrow_codes(ids)
        if encoded is None:
            dup[sel] = ids.duplicated(keep="first").to_numpy()
        elif len(encoded[1]) < len(sel):  # all-unique ids (the usual case) need no more work
            dup[sel] = pd.Series(encoded[0]).duplicated(keep="first").to_numpy()
        if known_event_ids is not None and len(known_event_ids):
            dup[sel] |= ids.isin(pd.Index(list(known_event_ids), dtype="str")).to_numpy()
    keep = np.flatnonzero(~bad & ~dup)

    # Sort by (customer_id, timestamp).  Arrow's sort is stable (input order breaks ties)
    # and about 1.5x faster than np.lexsort on 10M rows.
    cust = _finalize_categorical(customer, keep)
    stamps = ts.values[keep]
    key = pa.table({"c": np.asarray(cust.codes), "t": stamps.view(np.int64)})
    order = pc.sort_indices(key, sort_keys=[("c", "ascending"), ("t", "ascending")]).to_numpy()
    idx = keep[order]
    events = pd.DataFrame(
        {
            "customer_id": cust[order],
            "timestamp": pd.DatetimeIndex(stamps[order]).tz_localize("UTC"),
            "channel": _finalize_categorical(channel, idx),
            "event_type": _finalize_categorical(etype, idx),
            "action": _finalize_categorical(action, idx),
            "value": value.values[idx],
            "propensity": prop.values[idx],
            # object dtype on purpose: pandas 3 would infer its `str` dtype otherwise
            "event_id": pd.Series(_object_strings(event_id, idx), dtype=object),
            "decision_id": pd.Series(_object_strings(decision_id, idx), dtype=object),
        },
        columns=list(EVENT_COLUMNS),
    )
    quarantine = _quarantine_frame(raw, reasons, rows, parse_errors)
    return IngestResult(
        events=events,
        quarantine=quarantine,
        n_input=n + len(parse_errors),
        n_duplicates=int(dup.sum()),
        source=source,
        warnings=tuple(warnings),
        reason_counts=reasons.counts(extra=len(parse_errors)),
    )


def _is(cat: pd.Categorical, value: str) -> np.ndarray:
    hits = np.flatnonzero(np.asarray(cat.categories) == value)
    if not len(hits):
        return np.zeros(len(cat), dtype=bool)
    return np.asarray(cat.codes == hits[0])


# ---------------------------------------------------------------------------------------
# Customers
# ---------------------------------------------------------------------------------------
def read_customers(path: str | Path, *, strict: bool = False) -> CustomersResult:
    """Read a customers table (``customer_id``, attributes, ``consent_<channel>`` flags).

    Consent values are booleans written ``true/false/1/0/yes/no/y/n`` (any case); an
    empty value means consent given.  Attribute columns become float64 when every
    non-empty value is a number, else ``category`` of lower-cased stripped strings.

    Returns
    -------
    CustomersResult

    Raises
    ------
    IngestError
        For file-level problems, a missing ``customer_id`` column, and under ``strict``
        for any bad row.
    """
    table = _read_table(path, dictionary=lambda name: name != "customer_id")
    return _normalize_customers(
        table.frame,
        rows=table.rows,
        parse_errors=table.parse_errors,
        strict=strict,
        source=str(path),
    )


def normalize_customers(
    df: pd.DataFrame, *, strict: bool = False, source: str = "<frame>"
) -> CustomersResult:
    """Validate and type an in-memory customers frame, exactly as :func:`read_customers`."""
    rows = np.arange(1, len(df) + 1, dtype=np.int64)
    return _normalize_customers(df, rows=rows, parse_errors=[], strict=strict, source=source)


def _normalize_customers(
    raw: pd.DataFrame,
    *,
    rows: np.ndarray,
    parse_errors: list[tuple[int, str]],
    strict: bool,
    source: str,
) -> CustomersResult:
    raw = raw.rename(columns=lambda c: c.strip() if isinstance(c, str) else c)
    if "customer_id" not in raw.columns:
        raise IngestError(
            f"{source}: missing required column customer_id; "
            f"found: {', '.join(map(str, raw.columns)) or '(none)'}"
        )
    n = len(raw)
    reasons = _Reasons(n)
    cid = _clean_categorical(raw["customer_id"], lower=False)
    reasons.add(cid.codes < 0, "missing customer_id")
    # Later rows of an id are quarantined, naming the row that was kept.
    present = np.flatnonzero(cid.codes >= 0)
    codes = cid.codes[present]
    uniq, first_pos = np.unique(codes, return_index=True)
    first_of = np.zeros(len(cid.categories), dtype=np.int64)
    first_of[uniq] = present[first_pos]
    dup = np.zeros(n, dtype=bool)
    dup[present] = first_of[codes] != present
    first_row = None
    if dup.any():
        kept_rows = pd.Series(rows[_per_row(first_of, cid.codes, 0)]).astype("str")
        first_row = kept_rows.radd("first at row ").to_numpy(dtype=object)
    reasons.add(dup, "duplicate customer_id", detail=first_row)

    consents: dict[str, np.ndarray] = {}
    attributes: list[str] = []
    for name in raw.columns:
        if name == "customer_id":
            continue
        key = str(name)
        if key.lower().startswith(CONSENT_PREFIX):
            channel = key[len(CONSENT_PREFIX) :].strip().lower().replace(" ", "_")
            flags, invalid = _parse_consent(raw[name])
            reasons.add(invalid, f"{key} is not a boolean", values=raw[name])
            consents[f"{CONSENT_PREFIX}{channel}"] = flags
        else:
            attributes.append(key)

    bad = reasons.any()
    if strict and (bad.any() or parse_errors):
        raise _strict_error(source, reasons, rows, parse_errors)
    keep = np.flatnonzero(~bad)
    ids = np.asarray(cid.categories.astype(str), dtype=object)[cid.codes[keep]]
    order = np.argsort(ids, kind="stable")
    idx = keep[order]
    out: dict[str, Any] = {"customer_id": pd.array(ids[order], dtype="str")}
    for key in attributes:
        out[key] = _attribute(raw[key].iloc[idx])
    for key, flags in consents.items():
        out[key] = flags[idx]
    customers = pd.DataFrame(out)
    return CustomersResult(
        customers=customers,
        quarantine=_quarantine_frame(raw, reasons, rows, parse_errors),
        n_input=n + len(parse_errors),
        source=source,
        reason_counts=reasons.counts(extra=len(parse_errors)),
    )


def _parse_consent(s: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(flags, invalid): empty means consent given (True)."""
    if pd.api.types.is_bool_dtype(s.dtype):
        return s.to_numpy(dtype=bool), np.zeros(len(s), dtype=bool)
    cat = _clean_categorical(s, lower=True)
    cats = pd.Index(cat.categories.astype(str))
    if pd.api.types.is_numeric_dtype(s.dtype):
        # 1.0 / 0.0 from a float column read as text
        cats = pd.Index([c[:-2] if c.endswith(".0") else c for c in cats])
    is_true = np.asarray(cats.isin(sorted(_TRUE)), dtype=bool)
    is_false = np.asarray(cats.isin(sorted(_FALSE)), dtype=bool)
    codes = cat.codes
    flags = _per_row(is_true, codes, True)  # empty: consent given
    invalid = ~_per_row(is_true | is_false, codes, True)
    return flags.astype(bool), invalid


def _attribute(s: pd.Series) -> pd.Series | pd.Categorical | np.ndarray:
    """float64 when every non-empty value is a number, else lower-cased categories."""
    if pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        return s.to_numpy(dtype=np.float64, na_value=np.nan)
    num = _parse_numeric(s)
    if not num.bad.any():
        return num.values
    cat = _clean_categorical(s, lower=True)
    return _finalize_categorical(cat, np.arange(len(cat)))


# ---------------------------------------------------------------------------------------
# Quarantine file
# ---------------------------------------------------------------------------------------
def write_quarantine(quarantine: pd.DataFrame, out_path: str | Path) -> Path | None:
    """Write ``quarantine`` to ``<out stem>.quarantine.csv`` next to ``out_path``.

    ``out/features.parquet`` -> ``out/features.quarantine.csv``.  Nothing is written (and
    ``None`` returned) when the quarantine is empty.
    """
    if quarantine is None or quarantine.empty:
        return None
    out = Path(out_path)
    name = out.name
    for suffix in (".csv.gz", ".parquet", ".csv", ".pq", ".gz"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    else:
        name = out.stem
    target = out.with_name(f"{name}.quarantine.csv")
    target.parent.mkdir(parents=True, exist_ok=True)
    quarantine.to_csv(target, index=False)
    return target
