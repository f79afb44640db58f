"""Map another vocabulary onto the event contract, by configuration (CONTRACT §1).

A log exported from an ad server, a CDP or a CRM rarely speaks the contract's language:
``time`` instead of ``timestamp``, ``impression`` instead of ``sent``.  A mapping file says
how to translate it, so the source file is never edited by hand.  The steps, in order:

1. ``drop``: remove source columns (by source name);
2. ``rename``: source column -> contract column;
3. ``values``: per contract column, source value -> contract value (matched after strip,
   case-insensitively; unmatched values pass through unchanged);
4. ``fill``: where a contract column is empty, take the value of another column
   (optionally only on rows of some event types, e.g. ``action`` from ``channel`` on sends);
5. ``missing``: values that mean "absent" in the source (e.g. ``value`` 0 on impressions),
   optionally except on some event types;
6. ``slugify``: lower-case, strip, and turn runs of spaces / hyphens into ``_``
   (``Paid Search`` -> ``paid_search``).

Everything is vectorized and works on the unique values of a column (as a categorical), so
a 10-million-row log maps in about the time it takes to factorize its columns.  The file
format is documented in ``docs/DATA.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import numpy as np
import pandas as pd
import yaml

__all__ = ["MappingError", "MissingRule", "VocabularyMapping", "load_mapping", "mapping_from_dict"]

_KEYS: Final = ("rename", "values", "fill", "missing", "drop", "slugify", "timestamp_format")


class MappingError(ValueError):
    """A mapping file that cannot be used, or a frame it cannot be applied to."""


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True)
class MissingRule:
    """Source values of a column that mean "absent", except on rows of some event types."""

    values: tuple[str, ...]
    except_event_types: tuple[str, ...] = ()


@dataclass(frozen=True)
class VocabularyMapping:
    """How to turn a foreign log into the event contract.  See the module docstring.

    Attributes
    ----------
    rename : Mapping[str, str]
        Source column -> contract column.
    values : Mapping[str, Mapping[str, str]]
        Contract column -> {source value -> contract value}; keys are matched after
        stripping, case-insensitively.
    fill : Mapping[str, str]
        Contract column -> the column whose value fills it where it is empty.
    drop : tuple of str
        Source columns to remove before anything else.
    timestamp_format : str or None
        A ``strftime`` format for the timestamps when they are not ISO-8601.
    fill_event_types : Mapping[str, tuple of str]
        Contract column -> event types (contract vocabulary) on which ``fill`` applies;
        a column absent here is filled on every row.
    missing : Mapping[str, MissingRule]
        Contract column -> values that mean "absent" (set to empty).
    slugify : tuple of str
        Contract columns whose values become lower-case with ``_`` for spaces and hyphens.
    """

    rename: Mapping[str, str] = field(default_factory=_empty)
    values: Mapping[str, Mapping[str, str]] = field(default_factory=_empty)
    fill: Mapping[str, str] = field(default_factory=_empty)
    drop: tuple[str, ...] = ()
    timestamp_format: str | None = None
    fill_event_types: Mapping[str, tuple[str, ...]] = field(default_factory=_empty)
    missing: Mapping[str, MissingRule] = field(default_factory=_empty)
    slugify: tuple[str, ...] = ()

    def apply(self, df: pd.DataFrame) -> pd.DataFrame:
        """Return a new frame in the contract's vocabulary; ``df`` is left untouched.

        Columns touched by ``values``, ``fill``, ``missing`` or ``slugify`` come back as
        ``category`` (empty = NaN); all other columns are passed through as they are.

        Raises
        ------
        MappingError
            When a rename would collide with an existing column, or a ``fill`` source
            column is absent.
        """
        out = df.drop(columns=[c for c in self.drop if c in df.columns])
        clashes = [
            f"{src!r} -> {dst!r}"
            for src, dst in self.rename.items()
            if src in out.columns and dst in out.columns and dst not in self.rename
        ]
        if clashes:
            raise MappingError(f"rename would overwrite existing columns: {', '.join(clashes)}")
        out = out.rename(columns={s: d for s, d in self.rename.items() if s in out.columns})
        for col, table in self.values.items():
            if col in out.columns:
                out[col] = _map_values(_as_categorical(out[col]), table)
        for col, src in self.fill.items():
            if src not in out.columns:
                raise MappingError(f"fill: {col} <- {src}: column {src!r} not found")
            rows = self._rows(out, self.fill_event_types.get(col))
            target = out[col] if col in out.columns else pd.Series(np.nan, index=out.index)
            out[col] = _fill(_as_categorical(target), _as_categorical(out[src]), rows)
        for col, rule in self.missing.items():
            if col in out.columns:
                keep = self._rows(out, rule.except_event_types)
                out[col] = _blank(out[col], rule.values, keep)
        for col in self.slugify:
            if col in out.columns:
                out[col] = _slugify(_as_categorical(out[col]))
        return out

    @staticmethod
    def _rows(df: pd.DataFrame, event_types: tuple[str, ...] | None) -> np.ndarray | None:
        """Boolean mask of rows whose (mapped) event type is one of ``event_types``."""
        if not event_types:
            return None
        if "event_type" not in df.columns:
            return np.zeros(len(df), dtype=bool)
        et = _as_categorical(df["event_type"])
        wanted = pd.Index(et.categories.astype(str)).str.strip().str.lower().isin(event_types)
        return np.asarray(wanted, dtype=bool)[et.codes] & (et.codes >= 0)


# ---------------------------------------------------------------------------------------
# Vectorized column operations: all work on categories (unique values), then re-code.
# ---------------------------------------------------------------------------------------
def _as_categorical(s: pd.Series) -> pd.Categorical:
    """The column as a Categorical of strings, with '' and whitespace-only as missing."""
    cat = pd.Categorical(s)
    cats = cat.categories
    if cats.dtype != object and not pd.api.types.is_string_dtype(cats.dtype):
        cat = cat.rename_categories(dict(zip(cats, cats.astype(str), strict=True)))
    cleaned = pd.Index(cat.categories.astype(str)).str.strip()
    empties = cleaned == ""
    if empties.any():
        cat = cat.remove_categories(cat.categories[empties])
    return cat


def _per_row(per_cat: np.ndarray, codes: np.ndarray, fill: Any) -> np.ndarray:
    """``per_cat[codes]`` with ``fill`` where the code is -1 (missing); safe when empty."""
    ext = np.empty(len(per_cat) + 1, dtype=per_cat.dtype)
    ext[:-1] = per_cat
    ext[-1] = fill
    return ext[codes]


def _recode(cat: pd.Categorical, new_values: pd.Index) -> pd.Categorical:
    """Replace each category by ``new_values[i]`` (may merge categories or yield NaN)."""
    inverse, uniques = pd.factorize(new_values, use_na_sentinel=True)
    codes = cat.codes
    mapped = _per_row(np.asarray(inverse, dtype=np.int64), codes, -1)
    out: pd.Categorical = pd.Categorical.from_codes(
        mapped.astype(np.int32), categories=pd.Index(uniques)
    )
    return out


def _map_values(cat: pd.Categorical, table: Mapping[str, str]) -> pd.Categorical:
    lookup = {k.strip().lower(): v for k, v in table.items()}
    cats = pd.Index(cat.categories.astype(str))
    keys = cats.str.strip().str.lower()
    new = [lookup.get(k, orig) for k, orig in zip(keys, cats, strict=True)]
    return _recode(cat, pd.Index(new, dtype=object))


def _fill(
    target: pd.Categorical, source: pd.Categorical, rows: np.ndarray | None
) -> pd.Categorical:
    union = target.categories.union(source.categories)
    t = pd.Categorical(target, categories=union).codes
    s = pd.Categorical(source, categories=union).codes
    take = t < 0
    if rows is not None:
        take &= rows
    codes = np.where(take, s, t)
    return pd.Categorical.from_codes(codes.astype(np.int32), categories=union)


def _blank(s: pd.Series, values: tuple[str, ...], keep: np.ndarray | None) -> pd.Series:
    """Set ``values`` (string or numeric match) to missing, except where ``keep``."""
    numbers = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").dropna().to_list()
    if pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        hit = s.isin(numbers).to_numpy(dtype=bool)
    else:
        # Decide once per distinct value: "0", "0.0" and " 0 " all match a rule value 0.
        cat = pd.Categorical(s)
        cats = pd.Series(cat.categories.astype(str), dtype=object)
        per_cat = cats.str.strip().str.lower().isin([v.strip().lower() for v in values])
        if numbers:
            per_cat |= pd.to_numeric(cats, errors="coerce").isin(numbers)
        codes = cat.codes
        hit = _per_row(np.asarray(per_cat, dtype=bool), codes, False)
    if keep is not None:
        hit = hit & ~keep
    return s.mask(hit) if hit.any() else s


def _slugify(cat: pd.Categorical) -> pd.Categorical:
    cats = pd.Index(cat.categories.astype(str))
    new = cats.str.strip().str.lower().str.replace(r"[\s\-]+", "_", regex=True)
    return _recode(cat, pd.Index(new, dtype=object))


# ---------------------------------------------------------------------------------------
# Loading and validation
# ---------------------------------------------------------------------------------------
def _str_map(raw: Any, path: str, problems: list[str]) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        problems.append(f"{path}: must be a mapping, got {type(raw).__name__}")
        return {}
    out: dict[str, str] = {}
    for k, v in raw.items():
        # YAML turns `yes`/`1` keys into bools/ints; a vocabulary is strings, so stringify
        # scalar keys and values rather than reject them.
        if isinstance(k, Mapping | list) or isinstance(v, Mapping | list) or v is None:
            problems.append(f"{path}.{k}: must map a string to a string, got {v!r}")
            continue
        out[str(k)] = str(v).lower() if isinstance(v, bool) else str(v)
    return out


def _str_list(raw: Any, path: str, problems: list[str]) -> tuple[str, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(x, str | int | float) for x in raw):
        problems.append(f"{path}: must be a list of strings, got {raw!r}")
        return ()
    return tuple(str(x) for x in raw)


def mapping_from_dict(d: Mapping[str, Any], *, source: str | None = None) -> VocabularyMapping:
    """Validate a parsed mapping document and build a :class:`VocabularyMapping`.

    Raises
    ------
    MappingError
        Listing every problem, one ``key.path: message`` per line.
    """
    problems: list[str] = []
    if not isinstance(d, Mapping):
        problems.append(f"mapping: must be a mapping at the top level, got {type(d).__name__}")
        d = {}
    for key in d:
        if key not in _KEYS:
            problems.append(f"{key}: unknown key (allowed: {', '.join(_KEYS)})")
    rename = _str_map(d.get("rename"), "rename", problems)
    targets = list(rename.values())
    for dup in sorted({t for t in targets if targets.count(t) > 1}):
        problems.append(f"rename: several columns renamed to {dup!r}")
    values: dict[str, Mapping[str, str]] = {}
    raw_values = d.get("values") or {}
    if not isinstance(raw_values, Mapping):
        problems.append(
            f"values: must be a mapping column -> {{source: contract}}, got {raw_values!r}"
        )
    else:
        for col, table in raw_values.items():
            values[str(col)] = MappingProxyType(_str_map(table, f"values.{col}", problems))
    fill: dict[str, str] = {}
    fill_types: dict[str, tuple[str, ...]] = {}
    raw_fill = d.get("fill") or {}
    if not isinstance(raw_fill, Mapping):
        problems.append(f"fill: must be a mapping column -> source column, got {raw_fill!r}")
    else:
        for col, spec in raw_fill.items():
            path = f"fill.{col}"
            if isinstance(spec, str):
                fill[str(col)] = spec
            elif (
                isinstance(spec, Mapping)
                and set(spec) <= {"from", "event_types"}
                and isinstance(spec.get("from"), str)
            ):
                fill[str(col)] = spec["from"]
                types = _str_list(spec.get("event_types"), f"{path}.event_types", problems)
                if types:
                    fill_types[str(col)] = tuple(t.strip().lower() for t in types)
            else:
                problems.append(
                    f"{path}: must be a column name or {{from: column, event_types: [...]}}, got {spec!r}"
                )
    missing: dict[str, MissingRule] = {}
    raw_missing = d.get("missing") or {}
    if not isinstance(raw_missing, Mapping):
        problems.append(f"missing: must be a mapping column -> rule, got {raw_missing!r}")
    else:
        for col, spec in raw_missing.items():
            path = f"missing.{col}"
            if isinstance(spec, list):
                spec = {"values": spec}
            if (
                not isinstance(spec, Mapping)
                or not set(spec) <= {"values", "except_event_types"}
                or "values" not in spec
            ):
                problems.append(
                    f"{path}: must be {{values: [...], except_event_types: [...]}}, got {spec!r}"
                )
                continue
            vals = _str_list(spec["values"], f"{path}.values", problems)
            exc = _str_list(spec.get("except_event_types"), f"{path}.except_event_types", problems)
            missing[str(col)] = MissingRule(vals, tuple(t.strip().lower() for t in exc))
    drop = _str_list(d.get("drop"), "drop", problems)
    for col in drop:
        if col in rename:
            problems.append(f"drop: {col!r} is both dropped and renamed")
    slug = _str_list(d.get("slugify"), "slugify", problems)
    fmt = d.get("timestamp_format")
    if fmt is not None and (not isinstance(fmt, str) or "%" not in fmt):
        problems.append(
            f"timestamp_format: must be a strftime format like '%d/%m/%Y %H:%M', got {fmt!r}"
        )
        fmt = None
    if problems:
        where = f" {source}" if source else ""
        raise MappingError(f"invalid mapping{where}:\n  " + "\n  ".join(problems))
    return VocabularyMapping(
        rename=MappingProxyType(rename),
        values=MappingProxyType(values),
        fill=MappingProxyType(fill),
        drop=drop,
        timestamp_format=fmt,
        fill_event_types=MappingProxyType(fill_types),
        missing=MappingProxyType(missing),
        slugify=slug,
    )


def load_mapping(path: str | Path) -> VocabularyMapping:
    """Load and validate a mapping YAML file (format in ``docs/DATA.md``).

    Raises
    ------
    MappingError
        When the file is missing, not YAML, not a mapping, or invalid.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise MappingError(f"{p}: mapping file not found") from None
    except IsADirectoryError:
        raise MappingError(f"{p}: is a directory, expected a YAML file") from None
    except UnicodeDecodeError:
        raise MappingError(f"{p}: not a text file (not UTF-8)") from None
    except OSError as exc:
        raise MappingError(f"{p}: cannot read: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise MappingError(f"{p}: not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, Mapping):
        kind = "empty" if data is None else type(data).__name__
        raise MappingError(
            f"{p}: a mapping file must be a YAML mapping at the top level, got {kind}"
        )
    return mapping_from_dict(data, source=str(p))
