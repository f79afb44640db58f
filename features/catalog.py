"""The touchpoint catalog (CONTRACT §3): what a marketer can do, and what it is worth.

A catalog is a YAML file with the fixed keys ``objective`` and ``actions`` (plus
``horizons.conversion_days``) and optional sections that fall back to the defaults of the
packaged ``features/default_catalog.yaml``.  Every key is documented in ``docs/CATALOG.md``.

Loading validates everything up front and reports *all* problems at once, each prefixed by
the key path that is wrong (``actions[3].cost: must be >= 0, got -1``), because a catalog is
hand-edited by people who should not have to run the loader ten times to fix ten typos.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from features.schema import NO_ACTION

__all__ = [
    "Action",
    "Catalog",
    "CatalogError",
    "ChurnRule",
    "ContactPolicy",
    "Exploration",
    "Horizons",
    "Objective",
    "QuietHours",
    "catalog_from_dict",
    "dump_catalog",
    "load_catalog",
]

DEFAULT_CATALOG_RESOURCE: Final = "default_catalog.yaml"
EXPLORATION_METHODS: Final = ("epsilon", "softmax")


class CatalogError(ValueError):
    """A catalog file or mapping that breaks the catalog contract."""


# ---------------------------------------------------------------------------------------
# The model.  Defaults below equal the values of default_catalog.yaml (a test checks it).
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Objective:
    """What outcomes are worth: one conversion earns, one churn costs (same currency)."""

    conversion_value: float
    churn_cost: float


@dataclass(frozen=True)
class Horizons:
    """How long after a decision an outcome still counts (days)."""

    conversion_days: int = 14
    churn_days: int = 30


@dataclass(frozen=True)
class ChurnRule:
    """When a silent customer counts as churned: no inbound activity for this many days."""

    inactivity_days: int = 30


@dataclass(frozen=True)
class Action:
    """One recommendable touchpoint: an id, the channel it uses and the cost of one send."""

    id: str
    channel: str
    cost: float


@dataclass(frozen=True)
class QuietHours:
    """No sends on ``channels`` from hour ``start`` to hour ``end`` (local to ``timezone``).

    The interval is ``[start, end)`` and wraps around midnight when ``start > end``.
    """

    start: int = 21
    end: int = 8
    timezone: str = "UTC"
    channels: tuple[str, ...] = ("sms", "push", "phone", "chat")

    def is_quiet(self, hour: int) -> bool:
        """Whether the local ``hour`` (0..23) falls inside the quiet interval."""
        if self.start < self.end:
            return self.start <= hour < self.end
        return hour >= self.start or hour < self.end


def _default_caps() -> Mapping[str, int]:
    return MappingProxyType({"phone": 1, "direct_mail": 1, "store": 1})


@dataclass(frozen=True)
class ContactPolicy:
    """Frequency caps, cool-downs and quiet hours that every recommendation respects."""

    window_days: int = 7
    max_per_channel: int = 2
    channel_caps: Mapping[str, int] = field(default_factory=_default_caps)
    max_total: int = 4
    cooldown_hours: int = 24
    quiet_hours: QuietHours | None = field(default_factory=QuietHours)

    def cap(self, channel: str) -> int:
        """The per-window cap of ``channel``: its override, else ``max_per_channel``."""
        return int(self.channel_caps.get(channel, self.max_per_channel))


@dataclass(frozen=True)
class Exploration:
    """How the serving policy explores, and the share of customers held out as control."""

    method: Literal["epsilon", "softmax"] = "epsilon"
    epsilon: float = 0.05
    temperature: float = 1.0
    control_share: float = 0.05


@dataclass(frozen=True)
class Catalog:
    """A validated catalog.  Build it with :func:`load_catalog` or :func:`catalog_from_dict`."""

    objective: Objective
    horizons: Horizons
    churn: ChurnRule
    actions: tuple[Action, ...]
    contact_policy: ContactPolicy
    exploration: Exploration
    journey: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    features: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def action_ids(self) -> tuple[str, ...]:
        """The action ids in catalog order (never includes ``none``)."""
        return tuple(a.id for a in self.actions)

    @property
    def channels(self) -> tuple[str, ...]:
        """The sorted unique channels of the actions."""
        return tuple(sorted({a.channel for a in self.actions}))

    def action(self, action_id: str) -> Action:
        """The action with id ``action_id``.

        Raises
        ------
        KeyError
            When the catalog has no such action.
        """
        for a in self.actions:
            if a.id == action_id:
                return a
        raise KeyError(
            f"unknown action {action_id!r}; catalog actions: {', '.join(self.action_ids)}"
        )

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (YAML/JSON-ready) that :func:`catalog_from_dict` turns back into ``self``."""
        cp = self.contact_policy
        qh = cp.quiet_hours
        out: dict[str, Any] = {
            "objective": {
                "conversion_value": self.objective.conversion_value,
                "churn_cost": self.objective.churn_cost,
            },
            "horizons": {
                "conversion_days": self.horizons.conversion_days,
                "churn_days": self.horizons.churn_days,
            },
            "churn": {"inactivity_days": self.churn.inactivity_days},
            "actions": [{"id": a.id, "channel": a.channel, "cost": a.cost} for a in self.actions],
            "contact_policy": {
                "window_days": cp.window_days,
                "max_per_channel": cp.max_per_channel,
                "channel_caps": dict(cp.channel_caps),
                "max_total": cp.max_total,
                "cooldown_hours": cp.cooldown_hours,
                "quiet_hours": None
                if qh is None
                else {
                    "start": qh.start,
                    "end": qh.end,
                    "timezone": qh.timezone,
                    "channels": list(qh.channels),
                },
            },
            "exploration": {
                "method": self.exploration.method,
                "epsilon": self.exploration.epsilon,
                "temperature": self.exploration.temperature,
                "control_share": self.exploration.control_share,
            },
        }
        if self.journey:
            out["journey"] = copy.deepcopy(dict(self.journey))
        if self.features:
            out["features"] = copy.deepcopy(dict(self.features))
        return out


# ---------------------------------------------------------------------------------------
# Validation helpers.  Each returns the cleaned value, or None after recording an error, so
# that one pass reports every problem.
# ---------------------------------------------------------------------------------------
class _Errors:
    def __init__(self) -> None:
        self.messages: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.messages.append(f"{path}: {message}")

    def __iter__(self) -> Iterator[str]:
        return iter(self.messages)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _section(
    raw: Any, path: str, allowed: tuple[str, ...], required: tuple[str, ...], errors: _Errors
) -> dict[str, Any] | None:
    """Check that ``raw`` is a mapping with only ``allowed`` keys and all ``required`` keys."""
    if not isinstance(raw, Mapping):
        errors.add(path, f"must be a mapping, got {type(raw).__name__}")
        return None
    missing = False
    for key in raw:
        if not isinstance(key, str) or key not in allowed:
            errors.add(_join(path, str(key)), f"unknown key (allowed: {', '.join(allowed)})")
    for key in required:
        if key not in raw:
            errors.add(_join(path, key), "required key missing")
            missing = True
    # Unknown keys are reported but do not stop the checks of the known ones; a missing
    # required key does, since the section cannot be built without it.
    return None if missing else {k: v for k, v in raw.items() if k in allowed}


def _is_number(x: Any) -> bool:
    # bool is an int subclass, but `cost: true` is a typo, not a number.
    return isinstance(x, int | float) and not isinstance(x, bool)


def _number(x: Any, path: str, errors: _Errors, *, minimum: float = 0.0) -> float | None:
    if not _is_number(x) or not math.isfinite(float(x)):
        errors.add(path, f"must be a number, got {x!r}")
        return None
    if float(x) < minimum:
        errors.add(path, f"must be >= {minimum:g}, got {x!r}")
        return None
    return float(x)


def _int(
    x: Any, path: str, errors: _Errors, *, minimum: int, maximum: int | None = None
) -> int | None:
    if isinstance(x, bool) or not isinstance(x, int):
        kind = "a positive integer" if minimum == 1 else "an integer"
        errors.add(path, f"must be {kind}, got {x!r}")
        return None
    if x < minimum or (maximum is not None and x > maximum):
        bounds = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}"
        errors.add(path, f"must be {bounds}, got {x!r}")
        return None
    return int(x)


def _fraction(x: Any, path: str, errors: _Errors) -> float | None:
    """A share in [0, 1): 1 would mean 'always explore' / 'everyone is control'."""
    value = _number(x, path, errors)
    if value is not None and value >= 1.0:
        errors.add(path, f"must be in [0, 1), got {x!r}")
        return None
    return value


def _name(x: Any, path: str, errors: _Errors) -> str | None:
    """Ids and channels: non-empty strings, stripped and lower-cased (as ingestion does)."""
    if not isinstance(x, str) or not x.strip():
        errors.add(path, f"must be a non-empty string, got {x!r}")
        return None
    return x.strip().lower()


# ---------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------
_TOP_KEYS: Final = (
    "objective",
    "horizons",
    "churn",
    "actions",
    "contact_policy",
    "exploration",
    "journey",
    "features",
)


def _objective(raw: Any, errors: _Errors) -> Objective | None:
    d = _section(
        raw,
        "objective",
        ("conversion_value", "churn_cost"),
        ("conversion_value", "churn_cost"),
        errors,
    )
    if d is None:
        return None
    value = _number(d["conversion_value"], "objective.conversion_value", errors)
    cost = _number(d["churn_cost"], "objective.churn_cost", errors)
    return None if value is None or cost is None else Objective(value, cost)


def _horizons(raw: Any, errors: _Errors) -> Horizons | None:
    d = _section(raw, "horizons", ("conversion_days", "churn_days"), (), errors)
    if d is None:
        return None
    dflt = Horizons()
    conv = _int(
        d.get("conversion_days", dflt.conversion_days),
        "horizons.conversion_days",
        errors,
        minimum=1,
    )
    churn = _int(d.get("churn_days", dflt.churn_days), "horizons.churn_days", errors, minimum=1)
    return None if conv is None or churn is None else Horizons(conv, churn)


def _churn(raw: Any, errors: _Errors) -> ChurnRule | None:
    d = _section(raw, "churn", ("inactivity_days",), (), errors)
    if d is None:
        return None
    days = _int(
        d.get("inactivity_days", ChurnRule().inactivity_days),
        "churn.inactivity_days",
        errors,
        minimum=1,
    )
    return None if days is None else ChurnRule(days)


def _actions(raw: Any, errors: _Errors) -> tuple[Action, ...] | None:
    if not isinstance(raw, list):
        errors.add("actions", f"must be a list of actions, got {type(raw).__name__}")
        return None
    if not raw:
        errors.add("actions", "must list at least one action")
        return None
    out: list[Action] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(raw):
        path = f"actions[{i}]"
        d = _section(item, path, ("id", "channel", "cost"), ("id", "channel", "cost"), errors)
        if d is None:
            continue
        action_id = _name(d["id"], f"{path}.id", errors)
        channel = _name(d["channel"], f"{path}.channel", errors)
        cost = _number(d["cost"], f"{path}.cost", errors)
        if action_id == NO_ACTION:
            errors.add(f"{path}.id", f"{NO_ACTION!r} is reserved for 'leave the customer alone'")
            continue
        if action_id is not None and action_id in seen:
            errors.add(
                f"{path}.id",
                f"duplicate action id {action_id!r} (first at actions[{seen[action_id]}])",
            )
            continue
        if action_id is not None:
            seen[action_id] = i
        if action_id is not None and channel is not None and cost is not None:
            out.append(Action(action_id, channel, cost))
    return tuple(out)


def _quiet_hours(raw: Any, errors: _Errors) -> QuietHours | None:
    path = "contact_policy.quiet_hours"
    d = _section(raw, path, ("start", "end", "timezone", "channels"), (), errors)
    if d is None:
        return None
    dflt = QuietHours()
    start = _int(d.get("start", dflt.start), f"{path}.start", errors, minimum=0, maximum=23)
    end = _int(d.get("end", dflt.end), f"{path}.end", errors, minimum=0, maximum=23)
    if start is not None and start == end:
        errors.add(
            f"{path}.end", f"must differ from start (both {start}); remove quiet_hours to disable"
        )
        start = None
    tz = d.get("timezone", dflt.timezone)
    if not isinstance(tz, str) or not tz.strip():
        errors.add(f"{path}.timezone", f"must be an IANA time zone name, got {tz!r}")
        tz = None
    else:
        try:
            ZoneInfo(tz.strip())
            tz = tz.strip()
        except (ZoneInfoNotFoundError, ValueError):
            errors.add(
                f"{path}.timezone",
                f"unknown time zone {tz!r} (use an IANA name like 'Europe/Paris')",
            )
            tz = None
    channels_raw = d.get("channels", list(dflt.channels))
    channels: list[str] | None = []
    if not isinstance(channels_raw, list):
        errors.add(
            f"{path}.channels", f"must be a list of channels, got {type(channels_raw).__name__}"
        )
        channels = None
    else:
        for i, ch in enumerate(channels_raw):
            name = _name(ch, f"{path}.channels[{i}]", errors)
            if name is None:
                channels = None
            elif channels is not None and name not in channels:
                channels.append(name)
    if start is None or end is None or tz is None or channels is None:
        return None
    return QuietHours(start, end, tz, tuple(channels))


def _contact_policy(raw: Any, errors: _Errors) -> ContactPolicy | None:
    path = "contact_policy"
    keys = (
        "window_days",
        "max_per_channel",
        "channel_caps",
        "max_total",
        "cooldown_hours",
        "quiet_hours",
    )
    d = _section(raw, path, keys, (), errors)
    if d is None:
        return None
    dflt = ContactPolicy()
    window = _int(d.get("window_days", dflt.window_days), f"{path}.window_days", errors, minimum=1)
    per_channel = _int(
        d.get("max_per_channel", dflt.max_per_channel), f"{path}.max_per_channel", errors, minimum=0
    )
    total = _int(d.get("max_total", dflt.max_total), f"{path}.max_total", errors, minimum=0)
    cooldown = _int(
        d.get("cooldown_hours", dflt.cooldown_hours), f"{path}.cooldown_hours", errors, minimum=0
    )
    caps_raw = d.get("channel_caps", dict(dflt.channel_caps))
    caps: dict[str, int] | None = {}
    if caps_raw is None:
        caps_raw = {}
    if not isinstance(caps_raw, Mapping):
        errors.add(
            f"{path}.channel_caps",
            f"must be a mapping channel -> cap, got {type(caps_raw).__name__}",
        )
        caps = None
    else:
        for ch, cap in caps_raw.items():
            name = _name(ch, f"{path}.channel_caps", errors)
            value = _int(cap, f"{path}.channel_caps.{ch}", errors, minimum=0)
            if name is None or value is None:
                caps = None
            elif caps is not None:
                caps[name] = value
    quiet: QuietHours | None = None
    quiet_ok = True
    if "quiet_hours" not in d:
        quiet = dflt.quiet_hours
    elif d["quiet_hours"] is not None:  # an explicit null disables quiet hours
        quiet = _quiet_hours(d["quiet_hours"], errors)
        quiet_ok = quiet is not None
    if None in (window, per_channel, total, cooldown, caps) or not quiet_ok:
        return None
    assert window is not None and per_channel is not None and total is not None
    assert cooldown is not None and caps is not None
    return ContactPolicy(window, per_channel, MappingProxyType(caps), total, cooldown, quiet)


def _exploration(raw: Any, errors: _Errors) -> Exploration | None:
    path = "exploration"
    d = _section(raw, path, ("method", "epsilon", "temperature", "control_share"), (), errors)
    if d is None:
        return None
    dflt = Exploration()
    method = d.get("method", dflt.method)
    if not isinstance(method, str) or method.strip().lower() not in EXPLORATION_METHODS:
        errors.add(
            f"{path}.method", f"must be one of {', '.join(EXPLORATION_METHODS)}, got {method!r}"
        )
        method = None
    else:
        method = method.strip().lower()
    epsilon = _fraction(d.get("epsilon", dflt.epsilon), f"{path}.epsilon", errors)
    control = _fraction(d.get("control_share", dflt.control_share), f"{path}.control_share", errors)
    temperature = _number(d.get("temperature", dflt.temperature), f"{path}.temperature", errors)
    if temperature is not None and temperature <= 0:
        errors.add(f"{path}.temperature", f"must be > 0, got {temperature!r}")
        temperature = None
    if method is None or epsilon is None or control is None or temperature is None:
        return None
    return Exploration(method, epsilon, temperature, control)


def _raw_section(raw: Any, path: str, errors: _Errors) -> Mapping[str, Any] | None:
    """``journey`` / ``features``: kept as given (validated by their own modules)."""
    if raw is None:
        return MappingProxyType({})
    if not isinstance(raw, Mapping):
        errors.add(path, f"must be a mapping, got {type(raw).__name__}")
        return None
    return MappingProxyType(copy.deepcopy(dict(raw)))


# ---------------------------------------------------------------------------------------
# Public functions
# ---------------------------------------------------------------------------------------
def catalog_from_dict(d: Mapping[str, Any], *, source: str | None = None) -> Catalog:
    """Validate a parsed catalog and build a :class:`Catalog`.

    Parameters
    ----------
    d : Mapping
        The parsed YAML (or JSON) document.
    source : str, optional
        Where ``d`` came from; prefixed to error messages.

    Returns
    -------
    Catalog

    Raises
    ------
    CatalogError
        Listing every problem found, one ``key.path: message`` per line.
    """
    errors = _Errors()
    top = _section(d, "", _TOP_KEYS, (), errors) if isinstance(d, Mapping) else None
    if not isinstance(d, Mapping):
        errors.add("catalog", f"must be a mapping at the top level, got {type(d).__name__}")
    catalog: Catalog | None = None
    if top is not None:
        for key in ("objective", "actions"):
            if key not in top:
                errors.add(key, "required key missing")
        objective = _objective(top["objective"], errors) if "objective" in top else None
        horizons = _horizons(top.get("horizons", {}), errors)
        churn = _churn(top.get("churn", {}), errors)
        actions = _actions(top["actions"], errors) if "actions" in top else None
        policy = _contact_policy(top.get("contact_policy", {}), errors)
        exploration = _exploration(top.get("exploration", {}), errors)
        journey = _raw_section(top.get("journey"), "journey", errors)
        features = _raw_section(top.get("features"), "features", errors)
        if not errors.messages:
            assert objective and horizons and churn and actions and policy and exploration
            assert journey is not None and features is not None
            catalog = Catalog(
                objective, horizons, churn, actions, policy, exploration, journey, features
            )
    if catalog is None or errors.messages:
        where = f" {source}" if source else ""
        lines = "\n  ".join(errors)
        raise CatalogError(f"invalid catalog{where}:\n  {lines}")
    return catalog


def _parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())
        raise CatalogError(f"{source}: not valid YAML: {detail}") from None


def _default_catalog_text() -> str:
    try:
        return (
            resources.files("features")
            .joinpath(DEFAULT_CATALOG_RESOURCE)
            .read_text(encoding="utf-8")
        )
    except (NotADirectoryError, TypeError, FileNotFoundError):
        # Python 3.11 cannot build resource readers for a *namespace* package installed in
        # editable mode; the file sits next to this module in every layout we ship.
        return Path(__file__).with_name(DEFAULT_CATALOG_RESOURCE).read_text(encoding="utf-8")


def load_catalog(path: str | Path | None = None) -> Catalog:
    """Load and validate a catalog file.

    Parameters
    ----------
    path : str or Path or None
        A YAML file; ``None`` loads the packaged default catalog.

    Returns
    -------
    Catalog

    Raises
    ------
    CatalogError
        When the file is missing, unreadable, not YAML, not a mapping, or invalid.
    """
    if path is None:
        source = f"<default catalog {DEFAULT_CATALOG_RESOURCE}>"
        text = _default_catalog_text()
    else:
        p = Path(path)
        source = str(p)
        try:
            text = p.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise CatalogError(f"{source}: catalog file not found") from None
        except IsADirectoryError:
            raise CatalogError(f"{source}: is a directory, expected a YAML file") from None
        except UnicodeDecodeError:
            raise CatalogError(f"{source}: not a text file (not UTF-8)") from None
        except OSError as exc:
            raise CatalogError(f"{source}: cannot read: {exc.strerror or exc}") from None
    data = _parse_yaml(text, source)
    if not isinstance(data, Mapping):
        kind = "empty" if data is None else type(data).__name__
        raise CatalogError(
            f"{source}: a catalog must be a YAML mapping at the top level, got {kind}"
        )
    return catalog_from_dict(data, source=source)


def dump_catalog(catalog: Catalog, path: str | Path) -> Path:
    """Write ``catalog`` as YAML (every key explicit) and return the path written."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(
        catalog.to_dict(), sort_keys=False, default_flow_style=False, allow_unicode=True
    )
    p.write_text("# touchpoint catalog (see docs/CATALOG.md)\n" + text, encoding="utf-8")
    return p
