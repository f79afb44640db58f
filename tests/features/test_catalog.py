"""The catalog: the packaged default, validation messages and the dict round-trip."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from features.catalog import (
    Catalog,
    CatalogError,
    ContactPolicy,
    Exploration,
    Horizons,
    QuietHours,
    catalog_from_dict,
    dump_catalog,
    load_catalog,
)

MINIMAL: dict[str, Any] = {
    "objective": {"conversion_value": 50.0, "churn_cost": 200.0},
    "actions": [{"id": "email_promo", "channel": "email", "cost": 0.01}],
}


def _default_dict() -> dict[str, Any]:
    return load_catalog(None).to_dict()


def _error(d: Any) -> str:
    with pytest.raises(CatalogError) as info:
        catalog_from_dict(d)
    return str(info.value)


def test_default_catalog_has_the_ten_actions() -> None:
    cat = load_catalog(None)
    assert isinstance(cat, Catalog)
    assert len(cat.actions) == 10
    assert cat.action_ids[0] == "email_promo"
    assert "none" not in cat.action_ids
    assert cat.channels == tuple(sorted({a.channel for a in cat.actions}))
    assert cat.action("phone_call").cost == pytest.approx(2.5)
    assert cat.objective.conversion_value == 50.0 and cat.objective.churn_cost == 200.0
    assert cat.contact_policy.cap("phone") == 1 and cat.contact_policy.cap("email") == 2
    with pytest.raises(KeyError, match="nope"):
        cat.action("nope")


def test_dataclass_defaults_equal_the_packaged_default_file() -> None:
    """Optional sections fall back to exactly the values of default_catalog.yaml."""
    default = load_catalog(None)
    minimal = catalog_from_dict(MINIMAL)
    assert minimal.horizons == default.horizons == Horizons()
    assert minimal.churn == default.churn
    assert minimal.contact_policy == default.contact_policy == ContactPolicy()
    assert minimal.exploration == default.exploration == Exploration()


def test_round_trip_through_dict_and_yaml(tmp_path: Path) -> None:
    d = _default_dict()
    d["journey"] = {"awareness_days": 7}
    d["features"] = {"windows": [7, 30]}
    cat = catalog_from_dict(d)
    assert catalog_from_dict(cat.to_dict()) == cat
    written = dump_catalog(cat, tmp_path / "out" / "catalog.yaml")
    assert load_catalog(written) == cat
    assert dict(load_catalog(written).journey) == {"awareness_days": 7}


def test_names_are_lower_cased_and_quiet_hours_can_be_disabled() -> None:
    d = copy.deepcopy(MINIMAL)
    d["actions"] = [{"id": " Email_Promo ", "channel": "EMAIL", "cost": 0}]
    d["contact_policy"] = {"quiet_hours": None, "channel_caps": {"SMS": 0}}
    cat = catalog_from_dict(d)
    assert cat.action_ids == ("email_promo",)
    assert cat.channels == ("email",)
    assert cat.contact_policy.quiet_hours is None
    assert dict(cat.contact_policy.channel_caps) == {"sms": 0}


def test_quiet_hours_wrap_midnight() -> None:
    q = QuietHours(start=21, end=8)
    assert q.is_quiet(23) and q.is_quiet(0) and q.is_quiet(7)
    assert not q.is_quiet(8) and not q.is_quiet(20)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda d: d.update(budget=1), "budget: unknown key"),
        (lambda d: d["exploration"].update(epsilonn=0.1), "exploration.epsilonn: unknown key"),
        (lambda d: d["actions"][2].update(id="email_promo"), "actions[2].id: duplicate action id"),
        (lambda d: d["actions"][3].update(cost=-1), "actions[3].cost: must be >= 0, got -1"),
        (lambda d: d["actions"][1].update(id="none"), "actions[1].id: 'none' is reserved"),
        (lambda d: d["actions"][1].update(cost=True), "actions[1].cost: must be a number"),
        (lambda d: d["exploration"].update(epsilon=1.0), "exploration.epsilon: must be in [0, 1)"),
        (lambda d: d["exploration"].update(epsilon=-0.1), "exploration.epsilon: must be >= 0"),
        (
            lambda d: d["exploration"].update(control_share=1.5),
            "exploration.control_share: must be in [0, 1)",
        ),
        (lambda d: d["exploration"].update(method="greedy"), "exploration.method: must be one of"),
        (
            lambda d: d["contact_policy"]["quiet_hours"].update(timezone="Mars/Olympus"),
            "contact_policy.quiet_hours.timezone: unknown time zone 'Mars/Olympus'",
        ),
        (
            lambda d: d["contact_policy"]["quiet_hours"].update(start=24),
            "contact_policy.quiet_hours.start: must be in 0..23",
        ),
        (
            lambda d: d["horizons"].update(conversion_days=0),
            "horizons.conversion_days: must be >= 1",
        ),
        (lambda d: d["horizons"].update(churn_days=2.5), "horizons.churn_days: must be a positive"),
        (lambda d: d["contact_policy"].update(window_days="7"), "contact_policy.window_days"),
        (lambda d: d.update(actions=[]), "actions: must list at least one action"),
        (lambda d: d["objective"].pop("churn_cost"), "objective.churn_cost: required key missing"),
        (lambda d: d.pop("actions"), "actions: required key missing"),
        (lambda d: d["actions"][0].pop("channel"), "actions[0].channel: required key missing"),
    ],
)
def test_validation_errors_name_the_key(edit: Any, expected: str) -> None:
    d = _default_dict()
    edit(d)
    assert expected in _error(d)


def test_all_problems_are_reported_at_once() -> None:
    d = _default_dict()
    d["actions"][3]["cost"] = -1
    d["exploration"]["epsilon"] = 2
    message = _error(d)
    assert "actions[3].cost" in message and "exploration.epsilon" in message


def test_bad_yaml_and_not_a_mapping_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("objective: {conversion_value: 1\nactions: [\n", encoding="utf-8")
    with pytest.raises(CatalogError, match=r"broken\.yaml: not valid YAML"):
        load_catalog(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(CatalogError, match=r"list\.yaml: .*mapping.*got list"):
        load_catalog(listing)
    empty = tmp_path / "empty.yaml"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(CatalogError, match=r"empty\.yaml"):
        load_catalog(empty)
    with pytest.raises(CatalogError, match="not found"):
        load_catalog(tmp_path / "missing.yaml")


def test_file_errors_carry_the_file_name(tmp_path: Path) -> None:
    d = _default_dict()
    d["actions"][0]["cost"] = -5
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(d), encoding="utf-8")
    with pytest.raises(CatalogError, match=r"mine\.yaml") as info:
        load_catalog(path)
    assert "actions[0].cost: must be >= 0, got -5" in str(info.value)
    assert isinstance(info.value, ValueError)
