"""Vocabulary mappings: the journeys example, case-insensitive values, fill and validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.mapping import MappingError, VocabularyMapping, load_mapping, mapping_from_dict

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "journeys_mapping.yaml"
JOURNEYS = ROOT.parent / "shared" / "data" / "journeys.csv"


def test_journeys_example_maps_the_first_rows() -> None:
    if not JOURNEYS.exists():
        pytest.skip("../shared/data/journeys.csv not present")
    raw = pd.read_csv(JOURNEYS, dtype=str, keep_default_na=False, nrows=60)
    out = load_mapping(EXAMPLE).apply(raw)
    assert list(out.columns) == [
        "customer_id",
        "timestamp",
        "event_type",
        "value",
        "channel",
        "action",
    ]
    first = out.iloc[0]
    # A000100,2018-07-22T20:40:41Z,impression,0,0,Online Display
    assert first["customer_id"] == "A000100"
    assert first["timestamp"] == "2018-07-22T20:40:41Z"
    assert first["event_type"] == "sent"
    assert first["channel"] == "online_display" and first["action"] == "online_display"
    assert pd.isna(first["value"])  # 0 on an impression means "no value"
    assert out.loc[3, "channel"] == "paid_search"
    # A000104,2018-07-06T19:15:57Z,conversion,1,7,Instagram  (row 34 of the file)
    conv = out.iloc[34]
    assert conv["event_type"] == "purchase"
    assert conv["value"] == "7"
    assert conv["channel"] == "instagram"
    assert pd.isna(conv["action"])  # purchases carry no action
    assert set(out["event_type"].dropna()) == {"sent", "purchase"}
    assert "conversion" not in out.columns
    # the input frame is not modified
    assert list(raw.columns) == [
        "customer_id",
        "time",
        "interaction",
        "conversion",
        "conversion_value",
        "channel",
    ]


def test_values_match_case_insensitively_after_strip() -> None:
    m = mapping_from_dict(
        {"values": {"event_type": {"Impression": "sent", "CONVERSION": "purchase"}}}
    )
    df = pd.DataFrame({"event_type": ["impression", " IMPRESSION ", "Conversion", "visit", ""]})
    out = m.apply(df)
    assert out["event_type"].tolist()[:4] == ["sent", "sent", "purchase", "visit"]
    assert pd.isna(out["event_type"].iloc[4])


def test_fill_only_where_empty_and_only_on_listed_event_types() -> None:
    m = mapping_from_dict({"fill": {"action": {"from": "channel", "event_types": ["sent"]}}})
    df = pd.DataFrame(
        {
            "event_type": ["sent", "sent", "visit", "SENT"],
            "channel": ["email", "sms", "web", "push"],
            "action": ["email_promo", "", "", np.nan],
        }
    )
    out = m.apply(df)
    assert out["action"].tolist()[:2] == ["email_promo", "sms"]
    assert pd.isna(out["action"].iloc[2])
    assert out["action"].iloc[3] == "push"


def test_fill_short_form_creates_the_column() -> None:
    m = mapping_from_dict({"fill": {"action": "channel"}, "slugify": ["action"]})
    out = m.apply(pd.DataFrame({"channel": ["Paid Search", "Online-Video"]}))
    assert out["action"].tolist() == ["paid_search", "online_video"]
    assert out["channel"].tolist() == ["Paid Search", "Online-Video"]  # not slugified


def test_missing_rule_on_numeric_column() -> None:
    m = mapping_from_dict(
        {"missing": {"value": {"values": ["0"], "except_event_types": ["purchase"]}}}
    )
    df = pd.DataFrame({"event_type": ["sent", "purchase", "sent"], "value": [0.0, 0.0, 3.0]})
    out = m.apply(df)
    assert np.isnan(out["value"].iloc[0])
    assert out["value"].iloc[1] == 0.0 and out["value"].iloc[2] == 3.0


def test_rename_collision_is_an_error() -> None:
    m = VocabularyMapping(rename={"time": "timestamp"})
    with pytest.raises(MappingError, match="timestamp"):
        m.apply(pd.DataFrame({"time": ["x"], "timestamp": ["y"]}))


def test_validation_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match="renmae: unknown key"):
        mapping_from_dict({"renmae": {"a": "b"}})
    with pytest.raises(MappingError, match="drop: 'a' is both dropped and renamed"):
        mapping_from_dict({"rename": {"a": "b"}, "drop": ["a"]})
    with pytest.raises(MappingError, match="fill.action"):
        mapping_from_dict({"fill": {"action": {"frm": "channel"}}})
    with pytest.raises(MappingError, match="several columns renamed to 'timestamp'"):
        mapping_from_dict({"rename": {"a": "timestamp", "b": "timestamp"}})
    bad = tmp_path / "m.yaml"
    bad.write_text("rename: [", encoding="utf-8")
    with pytest.raises(MappingError, match=r"m\.yaml: not valid YAML"):
        load_mapping(bad)
    bad.write_text("- 1\n", encoding="utf-8")
    with pytest.raises(MappingError, match=r"m\.yaml: .*got list"):
        load_mapping(bad)
