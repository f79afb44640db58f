"""The console script: help everywhere, clean errors for bad input, the small-data flow."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from touchpoint.cli import BadInput, build_parser, main, train_config
from training.train import TrainConfig

COMMANDS = [
    "simulate",
    "validate",
    "features",
    "train",
    "recommend",
    "evaluate",
    "serve",
    "report",
    "hillstrom",
    "demo",
    "decisions",
]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: touchpoint " + command in capsys.readouterr().out


def test_parser_lists_all_commands() -> None:
    text = build_parser().format_help()
    for command in COMMANDS:
        assert command in text


def test_missing_file_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["validate", "--events", str(tmp_path / "nope.csv")])
    err = capsys.readouterr().err
    assert status == 2
    assert "nope.csv" in err and "Traceback" not in err


def test_missing_column_names_the_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "events.csv"
    path.write_text("customer_id,timestamp,channel\na,2026-01-01,email\n")
    status = main(["validate", "--events", str(path)])
    assert status == 2
    assert "event_type" in capsys.readouterr().err


def test_validate_reports_bad_rows_and_writes_quarantine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "events.csv"
    path.write_text(
        "customer_id,timestamp,channel,event_type,action,propensity\n"
        "a,2026-01-01T10:00:00Z,email,sent,email_promo,0.5\n"
        "b,not a time,email,sent,email_promo,0.5\n"
        "c,2026-01-01T10:00:00Z,email,teleport,,\n"
    )
    quarantine = tmp_path / "bad.csv"
    status = main(["validate", "--events", str(path), "--quarantine", str(quarantine)])
    out = capsys.readouterr().out
    assert status == 0  # valid rows remain and --strict was not given
    assert "row 2" in out and "row 3" in out
    written = list(tmp_path.glob("bad*.csv"))
    assert written, "the quarantine file was not written"
    bad = pd.read_csv(written[0])
    assert sorted(bad["row"].tolist()) == [2, 3]
    assert main(["validate", "--events", str(path), "--strict"]) == 1


def test_validate_with_a_catalog_counts_the_sends_it_does_not_know(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "events.csv"
    path.write_text(
        "customer_id,timestamp,channel,event_type,action,propensity\n"
        "a,2026-01-01T10:00:00Z,email,sent,email_promo,0.5\n"
        "a,2026-01-02T10:00:00Z,email,sent,email_winback,0.5\n"
        "b,2026-01-02T10:00:00Z,email,sent,email_winback,0.5\n"
        "b,2026-01-03T10:00:00Z,email,click,email_winback,\n"  # not a send: not counted
    )
    catalog = str(Path(__file__).resolve().parents[1] / "features" / "default_catalog.yaml")
    assert main(["validate", "--events", str(path), "--catalog", catalog]) == 0
    out = capsys.readouterr().out
    assert "2 sent events name actions not in the catalog" in out
    assert "email_winback: 2" in out and "email_promo" not in out.split("catalog (")[1]
    assert main(["validate", "--events", str(path), "--catalog", catalog, "--strict"]) == 1
    assert main(["validate", "--events", str(path), "--strict"]) == 0  # no catalog: no check


def test_recommend_rejects_a_bad_as_of(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(
        [
            "recommend",
            "--events",
            str(tmp_path / "e.csv"),
            "--model",
            str(tmp_path),
            "--as-of",
            "yesterday-ish",
            "--out",
            str(tmp_path / "r.csv"),
        ]
    )
    assert status == 2
    assert "--as-of" in capsys.readouterr().err


def test_recommend_rejects_a_folder_that_is_not_a_bundle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(
        [
            "recommend",
            "--events",
            str(tmp_path / "e.csv"),
            "--model",
            str(tmp_path),
            "--as-of",
            "2026-01-01",
            "--out",
            str(tmp_path / "r.csv"),
        ]
    )
    assert status == 2
    assert "bundle" in capsys.readouterr().err


def test_train_on_a_log_with_no_valid_rows_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "events.csv"
    path.write_text(
        "customer_id,timestamp,channel,event_type\n"
        ",2026-01-01T00:00:00Z,email,visit\n"
        "a,never,email,visit\n"
    )
    status = main(["train", "--events", str(path), "--models-dir", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert status == 2
    assert "no valid events" in err and "Traceback" not in err
    bad = pd.read_csv(tmp_path / "m" / "train-input.quarantine.csv")
    assert sorted(bad["row"].tolist()) == [1, 2]


def test_a_missing_ground_truth_file_is_an_error_not_ignored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "events.csv"
    path.write_text("customer_id,timestamp,channel,event_type\na,2026-01-01T00:00:00Z,web,visit\n")
    status = main(["train", "--events", str(path), "--ground-truth", str(tmp_path / "gt.parquet")])
    assert status == 2
    assert "--ground-truth" in capsys.readouterr().err


def test_decisions_export_joins_rewards(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from serving.decision_log import DecisionLog, DecisionRecord
    from tests.conftest import make_events

    log = DecisionLog(tmp_path / "decisions.db")
    log.append(
        [
            DecisionRecord(
                decision_id="d1",
                decision_time=pd.Timestamp("2024-03-01 12:00", tz="UTC"),
                customer_id="c1",
                model_version="v1",
                action="email_promo",
                propensity=0.9,
                candidates=[],
                suppressed=[],
            )
        ]
    )
    log.close()
    events = make_events([("c1", "2024-03-03 10:00", "web", "purchase", None, 25.0)])
    events.to_parquet(tmp_path / "events.parquet")
    out = tmp_path / "ope.parquet"
    code = main(
        ["decisions", "--log", str(tmp_path / "decisions.db"),
         "--events", str(tmp_path / "events.parquet"), "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    table = pd.read_parquet(out)
    assert table["converted"].tolist() == [True]
    assert table["conversion_value"].tolist() == [25.0]
    # training's churn label and the catalog's reward (the log ends two days later)
    assert {"churned", "censored", "action_cost", "reward"} <= set(table.columns)
    assert table["censored"].tolist() == [True] and table["reward"].isna().all()

    code = main(["decisions", "--log", str(tmp_path / "missing.db"), "--out", str(out)])
    assert code == 2
    assert "no such decision log" in capsys.readouterr().err
    assert not (tmp_path / "missing.db").exists()


def test_serve_rejects_a_setting_out_of_range(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.serving.bundle_factory import save_tiny_bundle

    bundle = save_tiny_bundle(tmp_path / "model", "v1")
    assert main(["serve", "--model", str(bundle), "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert "invalid setting: workers: Input should be greater than or equal to 1 (got 0)" in err
    monkeypatch.setenv("TOUCHPOINT_DEFAULT_K", "many")  # the environment is checked too
    assert main(["serve", "--model", str(bundle)]) == 2
    assert "default_k" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "1.5", "-0.2", "x"])
def test_train_negative_keep_must_be_a_share(
    value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--events", str(tmp_path / "e.csv"), "--negative-keep", value])
    assert exit_info.value.code == 2
    assert "--negative-keep" in capsys.readouterr().err


def test_train_negative_keep_reaches_the_config() -> None:
    from training.models import NEGATIVE_KEEP

    args = build_parser().parse_args(["train", "--events", "e.csv", "--negative-keep", "1"])
    assert train_config(args).negative_keep == 1.0
    default = build_parser().parse_args(["train", "--events", "e.csv"])
    assert train_config(default).negative_keep == NEGATIVE_KEEP


def test_train_min_none_per_customer_reaches_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from features.spec import MIN_NONE_PER_CUSTOMER

    args = build_parser().parse_args(["train", "--events", "e.csv", "--min-none-per-customer", "0"])
    assert train_config(args).min_none_per_customer == 0
    default = build_parser().parse_args(["train", "--events", "e.csv"])
    assert train_config(default).min_none_per_customer == MIN_NONE_PER_CUSTOMER
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--events", str(tmp_path / "e.csv"), "--min-none-per-customer", "-1"])
    assert exit_info.value.code == 2
    assert "--min-none-per-customer" in capsys.readouterr().err


def test_train_engagement_reaches_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = build_parser().parse_args(["train", "--events", "e.csv", "--engagement", "off"])
    assert train_config(args).engagement == "off"
    default = build_parser().parse_args(["train", "--events", "e.csv"])
    assert train_config(default).engagement == "on" == TrainConfig().engagement
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--events", str(tmp_path / "e.csv"), "--engagement", "maybe"])
    assert exit_info.value.code == 2
    assert "--engagement" in capsys.readouterr().err


def test_train_offset_scale_reaches_the_config_and_a_bag_needs_log_odds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from training.train import OFFSET_SCALE

    args = build_parser().parse_args(["train", "--events", "e.csv", "--offset-scale", "log_odds"])
    assert train_config(args).offset_scale == "log_odds"
    default = build_parser().parse_args(["train", "--events", "e.csv"])
    assert train_config(default).offset_scale == OFFSET_SCALE == "probability"
    assert TrainConfig().offset_scale == OFFSET_SCALE
    bag = ["train", "--events", "e.csv", "--offset-members", "5"]
    with pytest.raises(BadInput, match="--offset-members 5 .* add --offset-scale log_odds"):
        train_config(build_parser().parse_args(bag))
    both = train_config(build_parser().parse_args([*bag, "--offset-scale", "log_odds"]))
    assert (both.offset_members, both.offset_scale) == (5, "log_odds")
    # Refused before any data is read (the events file does not exist).
    missing = str(tmp_path / "e.csv")
    assert main(["train", "--events", missing, "--offset-members", "5"]) == 2
    assert "add --offset-scale log_odds" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--events", str(tmp_path / "e.csv"), "--offset-scale", "logit"])
    assert exit_info.value.code == 2
    assert "--offset-scale" in capsys.readouterr().err


def test_train_conversion_effect_scale_reaches_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    default = build_parser().parse_args(["train", "--events", "e.csv"])
    assert train_config(default).conversion_effect_scale == "auto"
    assert TrainConfig().conversion_effect_scale == "auto"
    fixed = ["train", "--events", "e.csv", "--conversion-effect-scale", "1.5"]
    assert train_config(build_parser().parse_args(fixed)).conversion_effect_scale == 1.5
    for bad in ("0", "-2", "nan", "inf", "twice"):
        with pytest.raises(SystemExit) as exit_info:
            main(["train", "--events", str(tmp_path / "e.csv"), "--conversion-effect-scale", bad])
        assert exit_info.value.code == 2
        assert "--conversion-effect-scale" in capsys.readouterr().err
    with pytest.raises(ValueError, match="'auto' or a number > 0"):
        TrainConfig(conversion_effect_scale=0.0)
    with pytest.raises(ValueError, match="'auto' or a number > 0"):
        TrainConfig(conversion_effect_scale="estimate")  # type: ignore[arg-type]


def test_train_offset_members_reach_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from training.offset_bagging import OFFSET_MEMBERS

    args = build_parser().parse_args(["train", "--events", "e.csv", "--offset-members", "1"])
    assert train_config(args).offset_members == 1
    default = build_parser().parse_args(["train", "--events", "e.csv"])
    assert train_config(default).offset_members == OFFSET_MEMBERS
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--events", str(tmp_path / "e.csv"), "--offset-members", "0"])
    assert exit_info.value.code == 2
    assert "--offset-members" in capsys.readouterr().err


def test_train_offset_interactions_reach_the_config() -> None:
    args = build_parser().parse_args(
        ["train", "--events", "e.csv", "--offset-interactions", "free"]
    )
    assert train_config(args).offset_interactions == "free"
    default = build_parser().parse_args(["train", "--events", "e.csv"])
    assert train_config(default).offset_interactions == "pairwise"


def test_train_offset_features_reach_the_config() -> None:
    args = build_parser().parse_args(["train", "--events", "e.csv", "--offset-features", "all"])
    assert train_config(args).offset_features == "all"
    default = build_parser().parse_args(["train", "--events", "e.csv"])
    assert train_config(default).offset_features == "effects"


def test_export_events_round_trips_what_the_store_accepted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Events posted to the service live only in its store; export-events writes them as an
    events file that the other commands read back unchanged."""
    from features.ingest import read_events
    from serving.store import SQLiteHistoryStore
    from tests.conftest import make_events

    events = make_events(
        [
            ("c1", "2024-03-01 10:00", "email", "sent", "email_promo"),
            ("c1", "2024-03-02 11:30", "web", "purchase", None, 42.5),
            ("c2", "2024-03-01 09:00", "sms", "unsubscribe"),
        ]
    )
    events["event_id"] = ["e1", None, "e3"]
    events["decision_id"] = ["d1", "d1", None]
    events.loc[0, "propensity"] = 0.25
    store = SQLiteHistoryStore(tmp_path / "store.db")
    store.add(events)
    # Chunks smaller than the store (and a first chunk without any decision_id): one schema.
    chunks = list(store.iter_events(chunk_rows=2))
    store.close()
    assert [len(c) for c in chunks] == [2, 1]

    out = tmp_path / "export" / "events.parquet"
    assert main(["export-events", "--store", str(tmp_path / "store.db"), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    back = read_events(out)
    assert back.n_quarantined == 0
    key = ["customer_id", "timestamp"]
    got = back.events.sort_values(key).reset_index(drop=True)
    want = read_events_frame(events).sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want, check_dtype=False, check_categorical=False)
    assert not list(out.parent.glob(".*partial"))  # the temporary file is gone


def read_events_frame(events: pd.DataFrame) -> pd.DataFrame:
    """``events`` through the same validation a file gets (the canonical table)."""
    from features.ingest import normalize_events

    return normalize_events(events).events


@pytest.mark.parametrize("content", [None, b"", b"not a database", "decisions"])
def test_export_events_refuses_what_is_not_a_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes | str | None
) -> None:
    path = tmp_path / "store.db"
    if content == "decisions":  # an SQLite file, but the decision log
        from serving.decision_log import DecisionLog

        DecisionLog(path).close()
    elif content is not None:
        path.write_bytes(content)  # type: ignore[arg-type]
    before = path.read_bytes() if path.exists() else None
    assert main(["export-events", "--store", str(path), "--out", str(tmp_path / "o.parquet")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("touchpoint export-events: error: --store ") and "history store" in err
    assert (path.read_bytes() if path.exists() else None) == before  # left as it was
    assert not (tmp_path / "o.parquet").exists()
