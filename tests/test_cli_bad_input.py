"""Bad command-line input: one line on stderr and exit status 2, never a traceback.

Values the parser rejects (``--top-k 0``) end in ``SystemExit(2)`` with argparse's
``argument --flag: ...`` line; values checked by a handler (``--as-of ""``, a missing file,
an unknown registry alias) make :func:`touchpoint.cli.main` return 2 with
``touchpoint <command>: error: ...``.  Every check runs before the slow work (reading the
log, loading the model, starting the server).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from serving.batch import read_ids
from tests.serving.bundle_factory import history, save_tiny_bundle
from touchpoint.cli import main


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def _parser_rejects(argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert f"argument {flag}:" in _error(capsys)


@pytest.fixture
def events(tmp_path: Path) -> Path:
    path = tmp_path / "events.parquet"
    history().to_parquet(path)
    return path


def _recommend(tmp_path: Path, events: Path, *extra: str, model: str | None = None) -> list[str]:
    return [
        "recommend",
        "--events",
        str(events),
        "--model",
        model or str(tmp_path / "no-model"),
        "--out",
        str(tmp_path / "r.csv"),
        *extra,
    ]


# --------------------------------------------------------------------------- recommend
@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "--as-of '' is not an ISO-8601 time"),
        ("NaT", "--as-of 'NaT' is not an ISO-8601 time"),
        ("1500-01-01", "--as-of '1500-01-01' is out of range"),
    ],
)
def test_recommend_rejects_an_empty_or_out_of_range_as_of(
    value: str, message: str, tmp_path: Path, events: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_recommend(tmp_path, events, "--as-of", value)) == 2
    assert f"touchpoint recommend: error: {message}" in _error(capsys)


@pytest.mark.parametrize("value", ["0", "-2"])
def test_recommend_top_k_must_be_positive(
    value: str, tmp_path: Path, events: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = _recommend(tmp_path, events, "--as-of", "2024-03-20", "--top-k", value)
    _parser_rejects(argv, "--top-k", capsys)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "no customer ids"),
        ("customer_id\n\n", "no customer ids"),
        ("segment,score\nc1,2\n", "no customer_id column"),
    ],
)
def test_recommend_rejects_an_ids_file_without_ids(
    content: str,
    message: str,
    tmp_path: Path,
    events: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_text(content)
    assert main(_recommend(tmp_path, events, "--as-of", "2024-03-20", "--ids", str(ids))) == 2
    err = _error(capsys)
    assert f"touchpoint recommend: error: --ids {ids}: " in err and message in err


def test_recommend_names_a_missing_ids_file(
    tmp_path: Path, events: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = tmp_path / "nope.txt"
    assert main(_recommend(tmp_path, events, "--as-of", "2024-03-20", "--ids", str(ids))) == 2
    assert f"--ids {ids}: no such file" in _error(capsys)


def test_read_ids_takes_the_customer_id_column_of_a_csv(tmp_path: Path) -> None:
    path = tmp_path / "ids.csv"
    path.write_text("segment,customer_id\na,c1\nb,c2\nc,c1\n")
    assert read_ids(path) == ["c1", "c2"]
    path.write_text("customer_id\nc1\n\nc2\n")
    assert read_ids(path) == ["c1", "c2"]
    path.write_bytes(b"\x90\x00\xff")
    with pytest.raises(ValueError, match="not a UTF-8 text file"):
        read_ids(path)


def test_recommend_names_a_missing_bundle_folder(
    tmp_path: Path, events: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_recommend(tmp_path, events, "--as-of", "2024-03-20")) == 2
    assert f"--model {tmp_path / 'no-model'}: no such bundle folder" in _error(capsys)


def test_recommend_rejects_an_output_that_is_a_folder(
    tmp_path: Path, events: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = _recommend(tmp_path, events, "--as-of", "2024-03-20")
    argv[argv.index("--out") + 1] = str(tmp_path)
    assert main(argv) == 2
    assert "is a folder, expected a file name" in _error(capsys)


# --------------------------------------------------------------------------- registry
@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An MLflow registry with ``touchpoint`` version 1 under the alias ``champion``."""
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("touchpoint")
    client.create_model_version("touchpoint", source=str(root / "bundle"))
    client.set_registered_model_alias("touchpoint", "champion", "1")
    yield uri


@pytest.mark.parametrize("command", ["recommend", "serve"])
def test_an_unknown_alias_names_the_uri_and_the_aliases_that_exist(
    command: str,
    registry: str,
    tmp_path: Path,
    events: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry)
    monkeypatch.chdir(tmp_path)
    uri = "models:/touchpoint@nosuch"
    if command == "recommend":
        argv = _recommend(tmp_path, events, "--as-of", "2024-03-20", model=uri)
    else:
        argv = ["serve", "--model", uri]
    assert main(argv) == 2
    err = _error(capsys)
    assert f"touchpoint {command}: error: --model {uri}: " in err
    assert "aliases of 'touchpoint': champion (version 1)" in err


def test_an_unknown_version_or_model_is_one_line(
    registry: str,
    tmp_path: Path,
    events: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry)
    monkeypatch.chdir(tmp_path)
    for uri in ("models:/touchpoint/99", "models:/nosuchmodel@champion"):
        assert main(_recommend(tmp_path, events, "--as-of", "2024-03-20", model=uri)) == 2
        err = _error(capsys)
        assert f"touchpoint recommend: error: --model {uri}: " in err and "not found" in err


def test_a_runs_uri_goes_to_mlflow_and_a_failed_fetch_leaves_no_folder(
    registry: str,
    tmp_path: Path,
    events: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``runs:/RUN_ID/PATH`` has one slash after the scheme: it is an MLflow URI, not a
    folder; and the temporary folder a failed download was given is removed."""
    import tempfile

    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry)
    monkeypatch.chdir(tmp_path)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    uri = "runs:/0123456789abcdef0123456789abcdef/model"
    assert main(_recommend(tmp_path, events, "--as-of", "2024-03-20", model=uri)) == 2
    err = _error(capsys)
    assert f"touchpoint recommend: error: --model {uri}: " in err
    assert "no such bundle folder" not in err
    assert list(scratch.iterdir()) == []


def test_report_names_an_unknown_run(
    registry: str,
    tmp_path: Path,
    events: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry)
    argv = ["report", "--events", str(events), "--run", "nosuchrun", "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    assert "touchpoint report: error: --run 'nosuchrun': " in _error(capsys)


# --------------------------------------------------------------------------- serve
@pytest.fixture
def no_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The server must not start: the checks come first."""
    import serving.server

    def fail(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the server was started")

    monkeypatch.setattr(serving.server, "serve", fail)
    monkeypatch.chdir(tmp_path)


@pytest.mark.usefixtures("no_server")
def test_serve_checks_the_startup_files_before_starting(
    tmp_path: Path,
    events: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bundle = save_tiny_bundle(tmp_path / "model", "v1")
    missing = tmp_path / "nope.parquet"
    assert main(["serve", "--model", str(bundle), "--events", str(missing)]) == 2
    assert f"touchpoint serve: error: --events {missing}: no such file" in _error(capsys)
    assert main(["serve", "--model", str(bundle), "--customers", str(tmp_path)]) == 2
    assert f"--customers {tmp_path}: not a file" in _error(capsys)
    monkeypatch.setenv("TOUCHPOINT_EVENTS_PATH", str(missing))  # the environment too
    assert main(["serve", "--model", str(bundle)]) == 2
    assert f"--events {missing}: no such file" in _error(capsys)
    assert not (tmp_path / "touchpoint-store.db").exists()


@pytest.mark.usefixtures("no_server")
def test_serve_rejects_a_folder_that_is_not_a_bundle(
    tmp_path: Path, events: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--model", str(tmp_path), "--events", str(events)]) == 2
    err = _error(capsys)
    assert f"touchpoint serve: error: --model {tmp_path} is not a model bundle" in err
    assert main(["serve", "--model", str(tmp_path / "nope")]) == 2
    assert "no such bundle folder" in _error(capsys)


# --------------------------------------------------------------------------- validate
def test_validate_writes_bad_customer_rows_next_to_the_events_quarantine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = tmp_path / "events.csv"
    events.write_text(
        "customer_id,timestamp,channel,event_type\n"
        "a,2026-01-01T10:00:00Z,web,visit\n"
        "b,not a time,web,visit\n"
    )
    customers = tmp_path / "customers.csv"
    customers.write_text("customer_id,consent_email\na,true\n,false\n")
    quarantine = tmp_path / "q.csv"
    argv = ["validate", "--events", str(events), "--customers", str(customers)]
    assert main([*argv, "--quarantine", str(quarantine)]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "q.quarantine.csv").is_file()
    written = tmp_path / "q.customers.quarantine.csv"
    assert f"customers quarantine written to {written}" in out
    assert pd.read_csv(written)["row"].tolist() == [2]


def test_validate_help_says_where_the_quarantine_goes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["validate", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "q.csv -> q.quarantine.csv" in help_text
    assert "q.customers.quarantine.csv" in help_text


# --------------------------------------------------------------------------- other commands
@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["simulate", "--out", "o", "--customers", "0"], "--customers"),
        (["simulate", "--out", "o", "--days", "-3"], "--days"),
        (["simulate", "--out", "o", "--seed", "-1"], "--seed"),
        (["simulate", "--out", "o", "--holdout-share", "2"], "--holdout-share"),
        (["simulate", "--out", "o", "--holdout-share", "nan"], "--holdout-share"),
        (["simulate", "--out", ""], "--out"),
        (["features", "--events", "e.csv", "--out", "f.parquet", "--batch-rows", "0"], "--batch-rows"),
        (["features", "--events", "e.csv", "--customers", "", "--out", "f"], "--customers"),
        (["validate", "--events", "e.csv", "--max-rows", "-1"], "--max-rows"),
        (["train", "--events", "e.csv", "--none-per-send", "-1"], "--none-per-send"),
        (["train", "--events", "e.csv", "--bootstrap", "1"], "--bootstrap"),
        (["train", "--events", "e.csv", "--max-train-rows", "0"], "--max-train-rows"),
        (["evaluate", "--events", "e", "--model", "m", "--out", "o", "--bootstrap", "0"], "--bootstrap"),
        (["hillstrom", "--bootstrap", "0"], "--bootstrap"),
        (["demo", "--customers", "0"], "--customers"),
        (["demo", "--port", "70000"], "--port"),
    ],
)  # fmt: skip
def test_the_parser_rejects_counts_and_paths_out_of_range(
    argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _parser_rejects(argv, flag, capsys)


@pytest.mark.parametrize(
    ("start", "message"),
    [
        ("", "--start '' is not an ISO-8601 time"),
        ("garbage", "--start 'garbage' is not an ISO-8601 time"),
        ("1500-01-01", "--start '1500-01-01' is out of range"),
        ("2262-01-01", "--start '2262-01-01' plus --days 300 goes past 2262-04-11"),
    ],
)
def test_simulate_rejects_a_bad_start(
    start: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sim"
    assert main(["simulate", "--out", str(out), "--customers", "5", "--start", start]) == 2
    assert f"touchpoint simulate: error: {message}" in _error(capsys)
    assert not out.exists()


def test_simulate_rejects_an_output_that_is_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "file.txt"
    out.write_text("keep me")
    assert main(["simulate", "--out", str(out), "--customers", "5", "--days", "5"]) == 2
    assert f"--out {out}: is a file, expected a folder" in _error(capsys)
    assert out.read_text() == "keep me"


@pytest.mark.parametrize(("days", "warned"), [(200, True), (201, False)])
def test_simulate_warns_when_train_would_refuse_the_history(
    days: int, warned: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sim"
    assert main(["simulate", "--out", str(out), "--customers", "5", "--days", str(days)]) == 0
    err = capsys.readouterr().err
    message = f"warning: {days} days are too few for `touchpoint train`, which needs at least 201"
    assert (message in err) is warned
    assert (out / "events.parquet").exists()  # a warning, not a refusal


def test_demo_rejects_a_bad_start(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    work = tmp_path / "demo"
    assert main(["demo", "--workdir", str(work), "--start", "garbage", "--no-serve"]) == 2
    assert "touchpoint demo: error: --start 'garbage'" in _error(capsys)
    assert not work.exists()


def test_features_rejects_an_output_that_is_a_folder(
    tmp_path: Path, events: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["features", "--events", str(events), "--out", str(tmp_path)]) == 2
    assert f"--out {tmp_path}: is a folder" in _error(capsys)


@pytest.mark.parametrize("content", [b"", b"not a database at all\n"])
def test_hillstrom_and_decisions_reject_a_file_of_the_wrong_kind(
    content: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "file.bin"
    path.write_bytes(content)
    assert main(["decisions", "--log", str(path), "--out", str(tmp_path / "o.parquet")]) == 2
    assert f"--log {path}: not a decision log" in _error(capsys)
    assert path.read_bytes() == content  # not turned into a database
    wrong = tmp_path / "wrong.csv"
    wrong.write_bytes(content or b"\x90\xff")
    assert main(["hillstrom", "--data", str(wrong)]) == 2
    assert f"touchpoint hillstrom: error: --data {wrong}: " in _error(capsys)


def test_decisions_rejects_an_sqlite_file_that_is_not_a_decision_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "other.db"
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE runs (id TEXT)")
    connection.commit()
    connection.close()
    assert main(["decisions", "--log", str(path), "--out", str(tmp_path / "o.parquet")]) == 2
    assert "not a decision log (no decisions table)" in _error(capsys)
    tables = sqlite3.connect(path).execute("SELECT name FROM sqlite_master").fetchall()
    assert tables == [("runs",)]
