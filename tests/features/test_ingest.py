"""Ingestion of hostile files: quarantine, row numbers, file-level errors, dtypes, formats."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.ingest import (
    IngestError,
    normalize_events,
    read_customers,
    read_events,
    write_quarantine,
)
from features.mapping import load_mapping
from features.schema import (
    CATEGORY_EVENT_COLUMNS,
    EVENT_COLUMNS,
    FLOAT_EVENT_COLUMNS,
    STRING_EVENT_COLUMNS,
)

ROOT = Path(__file__).resolve().parents[2]
JOURNEYS = ROOT.parent / "shared" / "data" / "journeys.csv"
HEADER = "customer_id,timestamp,channel,event_type,action,value,propensity,event_id"


def _write(tmp_path: Path, text: str, name: str = "events.csv", *, crlf: bool = False) -> Path:
    path = tmp_path / name
    data = text.replace("\n", "\r\n") if crlf else text
    path.write_bytes(data.encode("utf-8"))
    return path


def _assert_schema(events: pd.DataFrame) -> None:
    assert tuple(events.columns) == EVENT_COLUMNS
    for col in CATEGORY_EVENT_COLUMNS:
        assert isinstance(events[col].dtype, pd.CategoricalDtype), col
    assert events["timestamp"].dtype == pd.DatetimeTZDtype("ns", "UTC")
    for col in FLOAT_EVENT_COLUMNS:
        assert events[col].dtype == np.float64, col
    for col in STRING_EVENT_COLUMNS:
        assert events[col].dtype == object, col
        assert all(v is None or isinstance(v, str) for v in events[col])
    assert isinstance(events.index, pd.RangeIndex) and events.index.start == 0
    key = events[["customer_id", "timestamp"]].astype({"customer_id": str})
    assert key.equals(key.sort_values(["customer_id", "timestamp"], kind="stable"))


HOSTILE = "\n".join(
    [
        HEADER,
        "c1,2024-01-01T10:00:00+02:00,EMAIL,Sent,Email_Promo,,0.5,e1",  # 1 ok, converts to 08:00Z
        "c1,2024-01-01 09:00:00,web,visit,,,,e2",  # 2 ok, naive = UTC
        ",2024-01-01,web,visit,,,,e3",  # 3 empty id
        "   ,2024-01-01,web,visit,,,,e4",  # 4 whitespace-only id
        "c2,yesterday,web,visit,,,,e5",  # 5 unparseable time
        "c2,2024-01-02,web,teleport,,,,e6",  # 6 unknown event type
        "c2,2024-01-02,sms,sent,,,0.3,e7",  # 7 sent without action
        "c2,2024-01-02,sms,sent,sms_offer,,0,e8",  # 8 propensity 0
        "c2,2024-01-02,sms,sent,sms_offer,,-0.5,e9",  # 9 propensity -0.5
        "c2,2024-01-02,sms,sent,sms_offer,,1.5,e10",  # 10 propensity 1.5
        "c2,2024-01-02,sms,sent,sms_offer,,abc,e11",  # 11 propensity abc
        "c2,2024-01-03,web,purchase,,12.50,,e12",  # 12 ok
        "c2,2024-01-03,web,purchase,,twelve,,e13",  # 13 value not a number
        "c2,2024-01-04,web,visit,,,,e12",  # 14 duplicate of e12: skipped, not quarantined
        "c3,,web,visit,,,,e15",  # 15 missing timestamp
        "c3,2024-01-05,,visit,,,,e16",  # 16 missing channel
        "c3,2024-01-05,web,,,,,e17",  # 17 missing event type
        "c3,2024-01-05,web,teleport,,,7,e18",  # 18 two reasons
        "c3,2024-01-06T12:00:00Z,App,CLICK,push_reminder,,1,e19",  # 19 ok
    ]
)
EXPECTED_BAD = {
    3: "missing customer_id",
    4: "missing customer_id",
    5: "unparseable timestamp: 'yesterday'",
    6: "unknown event_type: 'teleport'",
    7: "sent without action",
    8: "propensity must be in (0, 1], got '0'",
    9: "propensity must be in (0, 1], got '-0.5'",
    10: "propensity must be in (0, 1], got '1.5'",
    11: "propensity is not a number: 'abc'",
    13: "value is not a number: 'twelve'",
    15: "missing timestamp",
    16: "missing channel",
    17: "missing event_type",
    18: "unknown event_type: 'teleport'; propensity must be in (0, 1], got '7'",
}


def test_hostile_rows_are_quarantined_with_row_numbers_and_reasons(tmp_path: Path) -> None:
    result = read_events(_write(tmp_path, HOSTILE + "\n"))
    q = result.quarantine
    assert dict(zip(q["row"], q["reason"], strict=True)) == EXPECTED_BAD
    assert list(q.columns[:2]) == ["row", "reason"]
    assert list(q.columns[2:]) == HEADER.split(",")
    assert q.loc[q["row"] == 5, "timestamp"].item() == "yesterday"
    assert q.loc[q["row"] == 4, "customer_id"].item() == "   "
    assert result.n_input == 19
    assert result.n_duplicates == 1
    e = result.events
    assert len(e) == 19 - len(EXPECTED_BAD) - 1
    _assert_schema(e)
    assert e["event_id"].tolist() == ["e1", "e2", "e12", "e19"]
    assert e["timestamp"].iloc[0] == pd.Timestamp("2024-01-01T08:00:00Z")
    assert e["timestamp"].iloc[1] == pd.Timestamp("2024-01-01T09:00:00Z")
    assert e["channel"].tolist() == ["email", "web", "web", "app"]
    assert e["event_type"].tolist() == ["sent", "visit", "purchase", "click"]
    assert e["action"].iloc[0] == "email_promo"
    assert e["value"].iloc[2] == 12.5 and np.isnan(e["value"].iloc[0])
    assert e["propensity"].iloc[0] == 0.5 and e["propensity"].iloc[3] == 1.0
    summary = result.summary()
    assert summary["rows_quarantined"] == len(EXPECTED_BAD)
    assert summary["reasons"]["missing customer_id"] == 2
    assert "quarantined" in result.summary_text()


def test_strict_raises_listing_rows(tmp_path: Path) -> None:
    with pytest.raises(IngestError) as info:
        read_events(_write(tmp_path, HOSTILE + "\n"), strict=True)
    message = str(info.value)
    assert f"{len(EXPECTED_BAD)} bad row(s)" in message
    assert "row 3: missing customer_id" in message and "row 18:" in message


def test_strict_passes_clean_files(tmp_path: Path) -> None:
    path = _write(tmp_path, HEADER + "\nc1,2024-01-01,web,visit,,,,e1\n")
    assert len(read_events(path, strict=True).events) == 1


def test_known_event_ids_are_duplicates(tmp_path: Path) -> None:
    path = _write(
        tmp_path, HEADER + "\nc1,2024-01-01,web,visit,,,,e1\nc1,2024-01-02,web,visit,,,,e2\n"
    )
    result = read_events(path, known_event_ids={"e1"})
    assert result.events["event_id"].tolist() == ["e2"]
    assert result.n_duplicates == 1 and result.quarantine.empty


def test_bom_crlf_quotes_and_too_many_fields(tmp_path: Path) -> None:
    text = "\ufeff" + "\n".join(
        [
            HEADER,
            'c1,2024-01-01,web,feedback,,"4",,"id,with,commas"',
            'c1,2024-01-02,web,visit,,,,"multi\nline id"',
            "c1,2024-01-03,web,visit,,,,e3,EXTRA",
            "c1,2024-01-04,web,visit,,,,e4",
        ]
    )
    result = read_events(_write(tmp_path, text + "\n", crlf=True))
    assert result.events["event_id"].tolist()[0] == "id,with,commas"
    assert result.events["event_id"].tolist()[1].startswith("multi")
    assert result.events["event_id"].tolist()[2] == "e4"
    assert result.quarantine["row"].tolist() == [3]
    assert "wrong number of fields" in result.quarantine["reason"].item()
    assert result.n_input == 4
    assert result.events["value"].iloc[0] == 4.0


@pytest.mark.parametrize(
    ("content", "name", "pattern"),
    [
        (b"", "empty.csv", "empty file"),
        (HEADER.encode() + b"\n", "header.csv", "no rows"),
        (
            bytes(np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8)),
            "junk.csv",
            "not a text table",
        ),
        (b'{"customer_id": "c1"}', "events.json", "unsupported file type .json"),
        (b"not parquet at all", "events.parquet", "not a readable Parquet file"),
    ],
)
def test_file_level_errors(tmp_path: Path, content: bytes, name: str, pattern: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(IngestError, match=pattern) as info:
        read_events(path)
    assert name in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_path_and_directory(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="file not found"):
        read_events(tmp_path / "nope.csv")
    with pytest.raises(IngestError, match="is a directory"):
        read_events(tmp_path)


def test_missing_column_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path, "customer_id,timestamp,event_type\nc1,2024-01-01,visit\n")
    with pytest.raises(IngestError, match="missing required column") as info:
        read_events(path)
    message = str(info.value)
    assert "channel" in message and "found: customer_id, timestamp, event_type" in message


def test_unknown_columns_are_ignored_with_a_warning(tmp_path: Path) -> None:
    path = _write(
        tmp_path, "customer_id,timestamp,channel,event_type,colour\nc1,2024-01-01,web,visit,red\n"
    )
    result = read_events(path)
    assert len(result.events) == 1
    assert any("colour" in w for w in result.summary()["warnings"])


def _random_log(seed: int, n: int = 300) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    seconds = rng.choice(86_400 * 60, size=n, replace=False)  # no ties
    types = rng.choice(["sent", "open", "visit", "purchase"], size=n)
    return pd.DataFrame(
        {
            "customer_id": rng.choice([f"c{i}" for i in range(20)], size=n),
            "timestamp": [
                (pd.Timestamp("2024-01-01") + pd.Timedelta(seconds=int(s))).isoformat()
                for s in seconds
            ],
            "channel": rng.choice(["email", "SMS", "web"], size=n),
            "event_type": types,
            "action": np.where(types == "sent", "email_promo", ""),
            "value": np.where(types == "purchase", rng.integers(1, 100, size=n).astype(str), ""),
            "propensity": np.where(types == "sent", "0.25", ""),
            "event_id": [f"e{i}" for i in range(n)],
        }
    )


def test_row_order_does_not_change_the_result(tmp_path: Path) -> None:
    df = _random_log(1)
    df.to_csv(tmp_path / "a.csv", index=False)
    df.sample(frac=1.0, random_state=3).to_csv(tmp_path / "b.csv", index=False)
    a = read_events(tmp_path / "a.csv").events
    b = read_events(tmp_path / "b.csv").events
    _assert_schema(a)
    pd.testing.assert_frame_equal(a, b)


def test_parquet_gives_the_same_table_as_csv(tmp_path: Path) -> None:
    df = _random_log(2)
    df.to_csv(tmp_path / "e.csv", index=False)
    df.to_parquet(tmp_path / "e.parquet", index=False)
    typed = df.assign(
        timestamp=pd.to_datetime(df["timestamp"], utc=True),
        value=pd.to_numeric(df["value"]),
        propensity=pd.to_numeric(df["propensity"]),
    )
    typed.to_parquet(tmp_path / "typed.pq", index=False)
    with gzip.open(tmp_path / "e.csv.gz", "wt", encoding="utf-8") as fh:
        df.to_csv(fh, index=False)
    from_csv = read_events(tmp_path / "e.csv").events
    pd.testing.assert_frame_equal(from_csv, read_events(tmp_path / "e.parquet").events)
    pd.testing.assert_frame_equal(from_csv, read_events(tmp_path / "typed.pq").events)
    pd.testing.assert_frame_equal(from_csv, read_events(tmp_path / "e.csv.gz").events)


def test_normalize_events_on_posted_rows() -> None:
    rows = pd.DataFrame(
        [
            {"customer_id": "c1", "timestamp": "2024-03-01T10:00:00+01:00", "channel": "Email",
             "event_type": "sent", "action": "email_promo", "propensity": 0.2},
            {"customer_id": "c1", "timestamp": "garbage", "channel": "web", "event_type": "visit"},
        ]
    )  # fmt: skip
    result = normalize_events(rows)
    _assert_schema(result.events)
    assert result.events["timestamp"].item() == pd.Timestamp("2024-03-01T09:00:00Z")
    assert result.quarantine["row"].tolist() == [2]
    empty = normalize_events(rows.iloc[:0])
    assert empty.events.empty and tuple(empty.events.columns) == EVENT_COLUMNS


def test_write_quarantine(tmp_path: Path) -> None:
    result = read_events(_write(tmp_path, HOSTILE + "\n"))
    written = write_quarantine(result.quarantine, tmp_path / "out" / "features.parquet")
    assert written == tmp_path / "out" / "features.quarantine.csv"
    back = pd.read_csv(written, dtype=str, keep_default_na=False)
    assert back["row"].astype(int).tolist() == sorted(EXPECTED_BAD)
    assert write_quarantine(result.quarantine.iloc[:0], tmp_path / "x.csv") is None
    assert not (tmp_path / "x.quarantine.csv").exists()


def test_customers(tmp_path: Path) -> None:
    text = "\n".join(
        [
            "customer_id,age,segment,consent_sms,Consent_Email",
            "c2,34,Gold ,yes,",
            "c1,,silver,N,TRUE",
            "c2,40,gold,no,no",  # duplicate -> quarantined
            ",50,gold,1,0",  # no id
            "c3,x1,Bronze,maybe,1",  # bad consent
            "c4,61,bronze,0,1",
        ]
    )
    result = read_customers(_write(tmp_path, text + "\n", name="customers.csv"))
    c = result.customers
    assert c["customer_id"].tolist() == ["c1", "c2", "c4"]
    assert c["age"].dtype == np.float64 and np.isnan(c["age"].iloc[0])
    assert isinstance(c["segment"].dtype, pd.CategoricalDtype)
    assert c["segment"].tolist() == ["silver", "gold", "bronze"]
    assert c["consent_sms"].tolist() == [False, True, False]
    assert c["consent_email"].tolist() == [True, True, True]  # empty = consent given
    assert c["consent_sms"].dtype == bool
    reasons = dict(zip(result.quarantine["row"], result.quarantine["reason"], strict=True))
    assert reasons == {
        3: "duplicate customer_id (first at row 1)",
        4: "missing customer_id",
        5: "consent_sms is not a boolean: 'maybe'",
    }
    with pytest.raises(IngestError, match="customer_id"):
        read_customers(_write(tmp_path, "id,age\n1,2\n", name="c.csv"))


def test_real_journeys_with_example_mapping() -> None:
    if not JOURNEYS.exists():
        pytest.skip("../shared/data/journeys.csv not present")
    mapping = load_mapping(ROOT / "examples" / "journeys_mapping.yaml")
    result = read_events(JOURNEYS, mapping=mapping, strict=True)
    e = result.events
    assert result.n_input == 62_483 and len(e) == 62_483
    _assert_schema(e)
    counts = e["event_type"].value_counts()
    assert counts["sent"] == 60_645 and counts["purchase"] == 1_838
    assert e["customer_id"].nunique() == 7_896
    assert e.loc[e["event_type"] == "purchase", "customer_id"].nunique() == 1_642
    assert set(e["channel"].cat.categories) == {
        "facebook", "instagram", "online_display", "online_video", "paid_search"
    }  # fmt: skip
    sent = e["event_type"] == "sent"
    assert (e.loc[sent, "action"].astype(str) == e.loc[sent, "channel"].astype(str)).all()
    assert e.loc[~sent, "action"].isna().all()
    assert e.loc[sent, "value"].isna().all() and e.loc[~sent, "value"].notna().all()
