"""The ``touchpoint`` console script (CONTRACT §4).

Each subcommand parses its arguments here and hands over to the package that does the
work.  Heavy imports (pandas, LightGBM, MLflow) happen inside the handlers so that
``touchpoint --help`` is instant.  Errors that come from bad input (a missing column, an
invalid catalog, an unreadable file) are printed as one line and exit with status 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from touchpoint import __version__

if TYPE_CHECKING:  # imported lazily at run time: the CLI starts without loading training
    from serving.bundle import Bundle
    from training.train import TrainConfig

#: Exit status for bad input (argparse uses 2 for bad arguments too).
EXIT_BAD_INPUT = 2


class BadInput(ValueError):
    """A command-line value that cannot be used; printed without a traceback."""


def count(text: str) -> int:
    """An integer argument that also accepts MLflow's float rendering (``5000.0``)."""
    value = float(text)
    if not value.is_integer():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    return int(value)


def at_least(minimum: int) -> Callable[[str], int]:
    """A :func:`count` type that is at least ``minimum`` (argparse names the flag on error)."""

    def checked(text: str) -> int:
        value = count(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} is below {minimum}")
        return value

    checked.__name__ = "count"  # argparse's "invalid count value" for non-numbers
    return checked


#: Counts of things (customers, days, rows, ranked actions): 1 or more.
positive = at_least(1)
#: Seeds and limits where 0 is meaningful.
non_negative = at_least(0)
#: Bootstrap samples: a confidence interval needs two or more.
bootstraps = at_least(2)


def ratio(text: str) -> float:
    """A finite number >= 0 (a rate such as ``--none-per-send``)."""
    value = float(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number >= 0")
    return value


def fraction(text: str) -> float:
    """A fraction in [0, 1]."""
    value = float(text)
    if not 0 <= value <= 1:  # also False for nan
        raise argparse.ArgumentTypeError(f"{text!r} is not in [0, 1]")
    return value


def effect_scale(text: str) -> float | str:
    """``auto`` or a finite number > 0 (``--conversion-effect-scale``)."""
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither 'auto' nor a number") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number > 0")
    return value


def path_text(text: str) -> str:
    """A file or folder argument: an empty string would silently mean the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a path, got an empty string")
    return text


def port(text: str) -> int:
    """A TCP port, 0-65535 (0: any free port)."""
    value = non_negative(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is above 65535")
    return value


def folder(text: str) -> Path:
    """A folder argument (see :func:`path_text`)."""
    return Path(path_text(text))


def share(text: str) -> float:
    """A fraction in (0, 1]."""
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not in (0, 1]")
    return value


def log(message: str) -> None:
    """Progress output: stderr, so stdout stays clean for data and summaries."""
    print(f"[touchpoint {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _input_errors() -> tuple[type[BaseException], ...]:
    """The exception types that mean "bad input", imported lazily."""
    from features.catalog import CatalogError
    from features.ingest import IngestError
    from features.mapping import MappingError
    from serving.bundle import BundleError
    from training.datasets import SplitError

    return (
        IngestError,
        CatalogError,
        MappingError,
        BundleError,
        SplitError,
        BadInput,
        FileNotFoundError,
        # An output path that is a folder, under a file, or not writable.
        IsADirectoryError,
        NotADirectoryError,
        FileExistsError,
        PermissionError,
    )


def timestamp(flag: str, text: str) -> Any:
    """``text`` as a UTC ``pd.Timestamp`` (naive times are UTC); :class:`BadInput` names
    ``flag`` when it is empty, unparsable or outside pandas' nanosecond range (1677-2262)."""
    import pandas as pd

    try:
        value = pd.Timestamp(text)
        if value is pd.NaT:  # "" and "NaT" parse as "no time"
            raise ValueError("no time given")
    except (ValueError, TypeError, OverflowError) as exc:
        raise BadInput(f"{flag} {text!r} is not an ISO-8601 time ({exc})") from exc
    try:  # the features are computed in nanoseconds
        value = value.as_unit("ns")
    except (ValueError, OverflowError) as exc:  # pandas' OutOfBoundsDatetime is a ValueError
        raise BadInput(
            f"{flag} {text!r} is out of range: times from 1677-09-22 to 2262-04-11 are supported"
        ) from exc
    return value.tz_localize("UTC") if value.tzinfo is None else value.tz_convert("UTC")


def _input_file(flag: str, path: str | Path | None) -> None:
    """Fail now, naming ``flag``, when ``path`` is not a readable file (None: not given)."""
    if path is None:
        return
    p = Path(path)
    if not p.exists():
        raise BadInput(f"{flag} {path}: no such file")
    if not p.is_file():
        raise BadInput(f"{flag} {path}: not a file")
    if not os.access(p, os.R_OK):
        raise BadInput(f"{flag} {path}: not readable")


def _output_file(flag: str, path: str | Path) -> Path:
    """``path`` as a Path, once it is known not to be a folder (checked before the work)."""
    p = Path(path)
    if p.is_dir():
        raise BadInput(f"{flag} {path}: is a folder, expected a file name")
    return p


# --------------------------------------------------------------------------- handlers
def _warn_if_too_short_to_train(days: int) -> None:
    """Say so when ``touchpoint train`` would refuse this simulation's history.

    A short world is still useful (features, serving and load tests), so this warns and
    goes on; the default of --days is long enough.
    """
    from features.catalog import load_catalog
    from training.datasets import history_days_needed
    from training.labels import LabelWindows

    needed = history_days_needed(LabelWindows.from_catalog(load_catalog()).lookahead_days)
    if days < needed:
        log(
            f"warning: {days} days are too few for `touchpoint train`, which needs at least "
            f"{needed} with the default catalog's horizons (its time split); fine for "
            "features, recommend and serve"
        )


def cmd_simulate(args: argparse.Namespace) -> int:
    import pandas as pd

    from training.simulator import simulate, write_simulation

    start = timestamp("--start", args.start)
    try:
        start + pd.Timedelta(days=args.days + 1)
    except (ValueError, OverflowError):  # OutOfBoundsDatetime
        raise BadInput(
            f"--start {args.start!r} plus --days {args.days} goes past 2262-04-11, "
            "the last supported time"
        ) from None
    if args.out.exists() and not args.out.is_dir():
        raise BadInput(f"--out {args.out}: is a file, expected a folder")
    log(f"simulating {args.customers:,} customers over {args.days} days (seed {args.seed})")
    _warn_if_too_short_to_train(args.days)
    sim = simulate(
        n_customers=args.customers,
        days=args.days,
        seed=args.seed,
        start=args.start,
        holdout_share=args.holdout_share,
        progress=log,
    )
    paths = write_simulation(sim, args.out)
    log(f"{len(sim.events):,} events, {len(sim.customers):,} customers")
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def _read_inputs(args: argparse.Namespace, *, quarantine_next_to: Path | None) -> Any:
    """Read events (and customers, catalog) the same way for every subcommand."""
    from features.catalog import load_catalog
    from features.ingest import read_customers, read_events, write_quarantine
    from features.mapping import load_mapping

    catalog = load_catalog(getattr(args, "catalog", None))
    mapping = load_mapping(args.mapping) if getattr(args, "mapping", None) else None
    log(f"reading events from {args.events}")
    result = read_events(args.events, mapping=mapping, strict=args.strict)
    log(result.summary_text())
    if quarantine_next_to is not None:
        written = write_quarantine(result.quarantine, quarantine_next_to)
        if written is not None:
            log(f"{len(result.quarantine):,} bad rows quarantined in {written}")
    if len(result.events) == 0:
        raise BadInput(
            f"{args.events}: no valid events remain ({len(result.quarantine):,} bad rows); "
            "`touchpoint validate` lists them"
        )
    customers = None
    if getattr(args, "customers", None):
        log(f"reading customers from {args.customers}")
        cres = read_customers(args.customers, strict=args.strict)
        log(cres.summary_text())
        if quarantine_next_to is not None and len(cres.quarantine):
            written = write_quarantine(cres.quarantine, _customers_target(quarantine_next_to))
            log(f"{len(cres.quarantine):,} bad customer rows quarantined in {written}")
        customers = cres.customers
    args._ingest_result = result  # the report's quarantine summary reads it
    return result.events, customers, catalog


def _customers_target(quarantine_next_to: Path) -> Path:
    """What :func:`features.ingest.write_quarantine` turns into the customers' quarantine
    file: ``out/x.parquet`` -> ``out/x.customers.quarantine.csv``."""
    return quarantine_next_to.with_name(quarantine_next_to.stem + ".customers.csv")


def cmd_validate(args: argparse.Namespace) -> int:
    from features.catalog import load_catalog
    from features.ingest import read_customers, read_events, write_quarantine
    from features.mapping import load_mapping

    problems = 0
    if args.catalog:
        catalog = load_catalog(args.catalog)
        print(f"catalog {args.catalog}: ok, {len(catalog.actions)} actions")
    mapping = load_mapping(args.mapping) if args.mapping else None
    result = read_events(args.events, mapping=mapping, strict=False)
    print(f"events {args.events}: {result.summary_text()}")
    problems += _print_quarantine(result.quarantine, args.max_rows)
    if args.catalog:
        problems += _print_unknown_sends(result.events, catalog, args.max_rows)
    if args.quarantine:
        written = write_quarantine(result.quarantine, Path(args.quarantine))
        if written is not None:
            print(f"quarantine written to {written}")
    customers_ok = True
    if args.customers:
        cres = read_customers(args.customers, strict=False)
        print(f"customers {args.customers}: {cres.summary_text()}")
        problems += _print_quarantine(cres.quarantine, args.max_rows)
        if args.quarantine:
            written = write_quarantine(cres.quarantine, _customers_target(Path(args.quarantine)))
            if written is not None:
                print(f"customers quarantine written to {written}")
        customers_ok = len(cres.customers) > 0
    if len(result.events) == 0 or not customers_ok:
        print("nothing valid remains", file=sys.stderr)
        return 1
    if args.strict and problems:
        print(f"{problems} bad rows or unknown sends (--strict)", file=sys.stderr)
        return 1
    return 0


def _print_unknown_sends(events: Any, catalog: Any, max_rows: int) -> int:
    """Print the actions of ``sent`` events that the catalog does not hold (``train`` drops
    those decision points); return how many sends they are."""
    from features.schema import NO_ACTION

    sent = events.loc[events["event_type"] == "sent", "action"]
    known = sent.isin([NO_ACTION, *catalog.action_ids])
    unknown = sent[~known].fillna("(missing)").astype(str).value_counts()
    if unknown.empty:
        return 0
    print(
        f"  {int(unknown.sum()):,} sent events name actions not in the catalog "
        "(train drops them as decision points):"
    )
    for action, n in unknown.head(max_rows).items():
        print(f"    {action}: {n:,}")
    if len(unknown) > max_rows:
        print(f"    ... and {len(unknown) - max_rows} more actions")
    return int(unknown.sum())


def _print_quarantine(quarantine: Any, max_rows: int) -> int:
    for row, reason in quarantine[["row", "reason"]].head(max_rows).itertuples(index=False):
        print(f"  row {row}: {reason}")
    if len(quarantine) > max_rows:
        print(f"  ... and {len(quarantine) - max_rows} more (see --quarantine)")
    return len(quarantine)


def cmd_features(args: argparse.Namespace) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from features.pipeline import iter_feature_table
    from training.train import TrainConfig, feature_spec_for

    out = _output_file("--out", args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    events, customers, catalog = _read_inputs(args, quarantine_next_to=out)
    # The same spec as training builds, so this table is exactly what the models see.
    spec = feature_spec_for(events, customers, catalog, TrainConfig(seed=args.seed))
    log(f"computing {len(spec.feature_names)} features")
    started = time.perf_counter()
    rows = 0
    writer: pq.ParquetWriter | None = None
    tmp = out.with_name(f".{out.name}.partial")
    try:
        # Written batch by batch as Parquet row groups: memory is bounded by one batch.
        for batch in iter_feature_table(events, customers, spec, batch_rows=args.batch_rows):
            table = pa.Table.from_pandas(batch, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table)
            rows += len(batch)
            log(f"  {rows:,} decision points")
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        raise BadInput("the log has no decision points (no sends and nothing to sample)")
    tmp.replace(out)
    elapsed = time.perf_counter() - started
    log(
        f"{rows:,} decision points from {len(events):,} events in {elapsed:.1f}s "
        f"({len(events) / max(elapsed, 1e-9):,.0f} events/s)"
    )
    print(out)
    return 0


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The training settings of ``touchpoint train``'s arguments (defaults: TrainConfig's)."""
    from training.train import OFFSET_SCALE, TrainConfig

    scale = OFFSET_SCALE if args.offset_scale is None else args.offset_scale
    if args.offset_members is not None and args.offset_members > 1 and scale != "log_odds":
        raise BadInput(
            f"--offset-members {args.offset_members} averages the offset's boosters on the "
            f"log-odds: add --offset-scale log_odds (the offset scale is {scale})"
        )
    return TrainConfig(
        formulation=args.formulation,
        seed=args.seed,
        none_per_send=args.none_per_send,
        **(
            {}
            if args.min_none_per_customer is None
            else {"min_none_per_customer": args.min_none_per_customer}
        ),
        n_bootstrap=args.bootstrap,
        max_train_rows=args.max_train_rows,
        **({} if args.negative_keep is None else {"negative_keep": args.negative_keep}),
        offset_features=args.offset_features,
        offset_interactions=args.offset_interactions,
        engagement=args.engagement,
        offset_scale=scale,
        conversion_effect_scale=args.conversion_effect_scale,
        **({} if args.offset_members is None else {"offset_members": args.offset_members}),
        refit=args.refit,
    )


def cmd_train(args: argparse.Namespace) -> int:

    from training.run import run_training

    config = train_config(args)  # settings that do not go together: refused before reading
    # Bad input rows are kept next to the bundles, as models/train-input.quarantine.csv.
    quarantine = Path(args.models_dir) / "train-input.csv"
    quarantine.parent.mkdir(parents=True, exist_ok=True)
    events, customers, catalog = _read_inputs(args, quarantine_next_to=quarantine)
    ground_truth = _ground_truth(args)
    from training.report import QuarantineSummary

    summary = run_training(
        events,
        customers,
        catalog,
        config,
        data_paths=[args.events, args.customers, args.catalog],
        experiment=args.experiment,
        models_dir=Path(args.models_dir),
        ground_truth=ground_truth,
        register=not args.no_register,
        quarantine=QuarantineSummary.from_ingest(args._ingest_result),
        progress=log,
    )
    print(f"run_id: {summary.run_id}")
    print(f"tracking_uri: {summary.tracking_uri}")
    print(f"bundle: {summary.bundle_dir}")
    if summary.report_path is not None:
        print(f"report: {summary.report_path}")
    if summary.registered_version:
        state = "champion" if summary.promoted else "challenger"
        print(f"registered: touchpoint version {summary.registered_version} ({state})")
    for key, value in summary.headline.items():
        print(f"{key}: {value:.4f}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from serving.engine import DecisionEngine
    from training.offline_eval import evaluate_bundle
    from training.run import policy_table_text

    out = _output_file("--out", args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    engine = DecisionEngine(load_model_bundle(args.model))
    events, customers, _ = _read_inputs(args, quarantine_next_to=out)
    ground_truth = _ground_truth(args)
    table, metrics = evaluate_bundle(
        engine,
        events,
        customers,
        n_bootstrap=args.bootstrap,
        seed=args.seed,
        ground_truth=ground_truth,
        progress=log,
    )
    table.to_csv(out, index=False)
    print(policy_table_text(table))
    for key, value in metrics.items():
        # The propensities' check (1 when they weigh "no action" right), then the truth.
        if key.startswith(("truth.", "propensity.")):
            print(f"{key}: {value:.4f}")
    print(out)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    source, ident, model_path, scratch = _model_to_serve(args.model)
    try:
        _serve(args, source, ident, model_path)
    finally:
        if scratch is not None:  # a fixed version fetched for this run, unused once it stops
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


def _serve(args: argparse.Namespace, source: Any, ident: str | None, model_path: Path) -> None:
    from pydantic import ValidationError

    from serving.server import serve
    from serving.settings import ServingSettings

    options: dict[str, Any] = {"model": model_path}
    for name, value in (
        ("events_path", args.events),
        ("customers_path", args.customers),
        ("host", args.host),
        ("port", args.port),
        ("workers", args.workers),
    ):
        if value is not None:  # unset options come from TOUCHPOINT_* variables or defaults
            options[name] = value
    try:
        settings = ServingSettings(**options)
    except ValidationError as exc:  # an option or a TOUCHPOINT_* variable out of range
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']} (got {e.get('input')!r})"
            for e in exc.errors()
        )
        raise BadInput(f"invalid setting: {problems}") from None
    # The service loads these at startup, inside uvicorn: a bad one would end it with a
    # traceback (and status 3) after the port is bound; check them here instead.
    _require_bundle(settings.model, args.model)
    _input_file("--events", settings.events_path)
    _input_file("--customers", settings.customers_path)
    if source is not None and settings.reload_poll_seconds > 0:
        log(
            f"following {source.uri} (now version {ident}); checking for a new version "
            f"every {settings.reload_poll_seconds:g}s"
        )
    log(
        f"serving {settings.model} on http://{settings.host}:{settings.port} (docs at /docs), "
        f"{settings.workers} worker(s)"
    )
    serve(settings, model_source=source, model_ident=ident)


def _require_bundle(folder: Path, given: str) -> None:
    """A bundle folder is one with a readable :data:`serving.bundle.BUNDLE_FILE` (the rest is
    checked when the service loads it)."""
    from serving.bundle import BUNDLE_FILE, BundleError

    if not folder.is_dir():
        raise BundleError(f"--model {given}: no such bundle folder")
    manifest = folder / BUNDLE_FILE
    if not manifest.is_file():
        raise BundleError(f"--model {given} is not a model bundle: {BUNDLE_FILE} not found")
    if not os.access(manifest, os.R_OK):
        raise BundleError(f"--model {given}: {manifest} is not readable")


def _model_to_serve(model: str) -> tuple[Any, str | None, Path, Path | None]:
    """The registry alias to follow (or None), the version served now, its folder, and the
    temporary folder to delete when the service stops (None: nothing to delete).

    A followed alias keeps its downloads itself (training.registry_source); a fixed
    version (``models:/touchpoint/3``, ``runs:/...``) is fetched into a folder of this run.
    The workers are forked and leave by ``os._exit``, so only the parent deletes it."""
    if model.startswith("models:/"):  # keeps the MLflow import off the plain-folder path
        from training.registry_source import RegistryAliasSource

        source = RegistryAliasSource.from_uri(model)  # None for a fixed version
        if source is not None:
            log(f"fetching {source.uri} from MLflow")
            try:
                ident, path = source.resolve()
            except FileNotFoundError as exc:  # no such model or alias: say which exist
                raise BadInput(f"--model {exc}{_registry_hint(model)}") from None
            return source, ident, path, None
    if not _MODEL_URI.match(model):
        return None, None, resolve_model(model), None
    scratch = Path(tempfile.mkdtemp(prefix="touchpoint-bundle-"))
    try:
        return None, None, resolve_model(model, scratch), scratch
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise


def cmd_decisions(args: argparse.Namespace) -> int:
    from features.catalog import load_catalog
    from serving.decision_log import DecisionLog

    path = Path(args.log)
    _require_sqlite_table(path, "--log", args.log, "decisions", "decision log")
    _output_file("--out", args.out)
    catalog = load_catalog(args.catalog)
    events = None
    reward = None  # churn and the catalog's reward: training's labels, added last
    if args.events:
        from training.decision_reward import with_business_reward

        events, _, _ = _read_inputs(args, quarantine_next_to=None)
        reward = functools.partial(with_business_reward, events=events, catalog=catalog)
    decisions = DecisionLog(path)
    try:
        log(f"{decisions.count():,} decisions in {path}")
        out = decisions.export_parquet(
            args.out, events, conversion_days=catalog.horizons.conversion_days, then=reward
        )
    finally:
        decisions.close()
    print(out)
    return 0


def _require_sqlite_table(path: Path, flag: str, given: str, table: str, what: str) -> None:
    """``path`` is an SQLite file with ``table``, checked read-only: opening any other file
    as our store or log would add its tables to it (an empty file becomes a database) or
    fail with a traceback.  ``what`` names the file in the errors (``decision log``)."""
    import sqlite3

    if not path.is_file():  # opening it would create an empty one: say so instead
        raise BadInput(f"{flag} {given}: no such {what}")
    with path.open("rb") as handle:
        header = handle.read(16)
    if header != b"SQLite format 3\x00":
        raise BadInput(f"{flag} {given}: not a {what} (not an SQLite file)")
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            found = connection.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
            ).fetchone()
        finally:
            connection.close()
    except sqlite3.Error as exc:
        raise BadInput(f"{flag} {given}: unreadable SQLite file ({exc})") from None
    if found is None:
        raise BadInput(f"{flag} {given}: not a {what} (no {table} table)")


def cmd_export_events(args: argparse.Namespace) -> int:
    """The history store's events as a canonical events file: what ``POST /v1/events``
    accepted reaches ``train``, ``evaluate`` and ``decisions`` this way."""
    from serving.store import SQLiteHistoryStore, write_events_parquet

    store_path = Path(args.store)
    _require_sqlite_table(store_path, "--store", args.store, "events", "history store")
    out = _output_file("--out", args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    store = SQLiteHistoryStore(store_path)
    try:
        total = store.count()
        log(f"{total:,} events in {store_path}")
        written = write_events_parquet(
            store.iter_events(),
            out,
            progress=lambda n: log(f"  {n:,} / {total:,}"),
        )
    finally:
        store.close()
    log(f"{written:,} events written")
    print(out)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from training import tracking
    from training.report import QuarantineSummary, report_from_run

    _require_run(tracking.configure_uri_only(), args.run)
    _output_file("--out", args.out)
    events, customers, _ = _read_inputs(args, quarantine_next_to=None)
    path = report_from_run(
        args.run,
        events,
        customers,
        args.out,
        quarantine=QuarantineSummary.from_ingest(args._ingest_result),
        log_to_run=not args.no_log,
        progress=log,
    )
    print(path)
    return 0


def _require_run(uri: str, run_id: str) -> None:
    """The MLflow run exists (checked before the log is read, which takes longer)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from training.registry_source import redact_uri

    try:
        MlflowClient(tracking_uri=uri).get_run(run_id)
    except MlflowException as exc:
        if exc.error_code not in _MLFLOW_NOT_FOUND:
            raise  # the tracking server is down or failing: not a problem of the argument
        message = exc.message.rstrip(".")
        raise BadInput(f"--run {run_id!r}: {message} in {redact_uri(uri)}") from None


def cmd_hillstrom(args: argparse.Namespace) -> int:
    from training.hillstrom import format_report, load_hillstrom, run_hillstrom

    try:  # the file's columns, checked here so a wrong file is one line
        load_hillstrom(args.data)
    except UnicodeDecodeError as exc:
        raise BadInput(f"--data {args.data}: not a UTF-8 CSV file ({exc.reason})") from None
    except ValueError as exc:  # a missing column, or pandas' parser errors
        raise BadInput(f"--data {args.data}: {exc}") from None
    result = run_hillstrom(args.data, seed=args.seed, n_bootstrap=args.bootstrap, progress=log)
    print(format_report(result))
    return 0


def _ground_truth(args: argparse.Namespace) -> Any:
    """The simulator's ground truth: ``--ground-truth``, or ``ground_truth.parquet`` next to
    ``--events`` when present; None for real logs."""
    import pandas as pd

    path = args.ground_truth or _sibling(args.events, "ground_truth.parquet")
    if path is None or not Path(path).is_file():
        if args.ground_truth:  # asked for explicitly: a typo must not pass silently
            raise FileNotFoundError(f"--ground-truth {args.ground_truth}: no such file")
        return None
    log(f"simulator ground truth found: {path}")
    return pd.read_parquet(path)


def _sibling(path: str, name: str) -> Path | None:
    candidate = Path(path).with_name(name)
    return candidate if candidate.exists() else None


#: An MLflow model URI: ``models:/NAME@ALIAS``, ``runs:/RUN_ID/PATH``, ``s3://...``.  A scheme
#: of at least two letters, so that a Windows path (``C:/bundles/x``) stays a folder.
_MODEL_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")


def load_model_bundle(model: str) -> Bundle:
    """The bundle behind ``--model``, read into memory.  A bundle fetched from MLflow for
    this one command is deleted once read (a one-shot command that left a copy in the
    temporary folder at every run would fill it)."""
    from serving.bundle import load_bundle

    if not _MODEL_URI.match(model):
        return load_bundle(resolve_model(model))
    with tempfile.TemporaryDirectory(prefix="touchpoint-bundle-") as folder:
        return load_bundle(resolve_model(model, Path(folder)))


def resolve_model(model: str, dst: Path | None = None) -> Path:
    """A bundle folder, or an MLflow model URI (``models:/touchpoint@champion``) fetched
    locally (into ``dst``, else a new temporary folder)."""
    if _MODEL_URI.match(model):
        from mlflow.exceptions import MlflowException

        from training.tracking import download_bundle

        log(f"fetching {model} from MLflow")
        try:
            return download_bundle(model, dst)
        except MlflowException as exc:
            if exc.error_code not in _MLFLOW_NOT_FOUND:
                raise  # the registry is down or failing: not a problem of the argument
            message = exc.message.rstrip(".")
            raise BadInput(f"--model {model}: {message}{_registry_hint(model)}") from None
    path = Path(model)
    if not path.exists():
        raise FileNotFoundError(f"--model {model}: no such bundle folder")
    return path


#: MLflow's error codes for "no such model, version, alias or run" (and a malformed one).
_MLFLOW_NOT_FOUND = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}


def _registry_hint(model: str) -> str:
    """``"; aliases of touchpoint: champion -> 3"`` for a ``models:/`` URI (what does
    exist), or "" when the registry has nothing to offer; never raises."""
    match = re.match(r"^models:/([^/@]+)", model)
    if match is None:
        return ""
    name = match[1]
    try:
        from mlflow.tracking import MlflowClient

        from training.tracking import tracking_uri

        uri = tracking_uri()
        registered = MlflowClient(tracking_uri=uri, registry_uri=uri).get_registered_model(name)
    except Exception:  # only a hint: no such model (the error says so), or the registry is down
        return ""
    aliases = ", ".join(f"{a} (version {v})" for a, v in sorted(registered.aliases.items()))
    return f"; aliases of {name!r}: {aliases or 'none'}"


def cmd_recommend(args: argparse.Namespace) -> int:
    from serving.batch import read_ids, recommend_batch
    from serving.engine import DecisionEngine

    as_of = timestamp("--as-of", args.as_of)
    ids = None
    if args.ids:  # read before the model and the log, which take longer
        _input_file("--ids", args.ids)
        try:
            ids = read_ids(args.ids)
        except ValueError as exc:  # empty, not text, or a CSV without customer_id
            raise BadInput(f"--ids {exc}") from exc
    out = _output_file("--out", args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    engine = DecisionEngine(load_model_bundle(args.model))
    log(f"model version {engine.bundle.model_version}")
    events, customers, _ = _read_inputs(args, quarantine_next_to=out)
    started = time.perf_counter()
    result = recommend_batch(engine, events, customers, as_of, ids=ids, top_k=args.top_k)
    elapsed = time.perf_counter() - started
    result.recommendations.to_csv(out, index=False)
    top = result.recommendations[result.recommendations["rank"] == 1]["action"].value_counts()
    log(
        f"{len(result.customer_ids):,} customers in {elapsed:.1f}s; first choices: "
        + ", ".join(f"{a} {n:,}" for a, n in top.items())
    )
    print(out)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The whole pipeline on simulated data, each step exactly as a user would run it."""
    timestamp("--start", args.start)  # _end_of below needs it
    work = Path(args.workdir)
    data = work / "data"
    steps: list[list[str]] = [
        [
            "simulate",
            "--out",
            str(data),
            "--customers",
            str(args.customers),
            "--days",
            str(args.days),
            "--seed",
            str(args.seed),
        ],
        [
            "validate",
            "--events",
            str(data / "events.parquet"),
            "--customers",
            str(data / "customers.parquet"),
            "--catalog",
            str(data / "catalog.yaml"),
        ],
        [
            "features",
            "--events",
            str(data / "events.parquet"),
            "--customers",
            str(data / "customers.parquet"),
            "--catalog",
            str(data / "catalog.yaml"),
            "--out",
            str(work / "features.parquet"),
        ],
        [
            "train",
            "--events",
            str(data / "events.parquet"),
            "--customers",
            str(data / "customers.parquet"),
            "--catalog",
            str(data / "catalog.yaml"),
            "--experiment",
            args.experiment,
            "--seed",
            str(args.seed),
        ],
        [
            "recommend",
            "--events",
            str(data / "events.parquet"),
            "--customers",
            str(data / "customers.parquet"),
            "--model",
            "models:/touchpoint@champion",
            "--as-of",
            _end_of(args),
            "--out",
            str(work / "recommendations.csv"),
        ],
    ]
    for step in steps:
        log("$ touchpoint " + " ".join(step))
        status = main(step)
        if status != 0:
            return status
    print(f"recommendations: {work / 'recommendations.csv'}")
    from training.tracking import tracking_uri

    print(f"MLflow UI: mlflow ui --backend-store-uri {tracking_uri()}")
    if args.no_serve:
        return 0
    port = args.port
    print(
        "\nThe service is starting; once /readyz answers 200, try:\n"
        f"  curl -s http://127.0.0.1:{port}/readyz\n"
        f"  curl -s -X POST http://127.0.0.1:{port}/v1/recommendations "
        '-H \'content-type: application/json\' -d \'{"customer_id": "c0000001", "k": 3}\'\n'
        "Stop it with Ctrl-C.",
        flush=True,
    )
    serve_step = [
        "serve", "--model", "models:/touchpoint@champion",
        "--events", str(data / "events.parquet"),
        "--customers", str(data / "customers.parquet"),
        "--port", str(port),
    ]  # fmt: skip
    log("$ touchpoint " + " ".join(serve_step))
    return main(serve_step)


def _end_of(args: argparse.Namespace) -> str:
    import pandas as pd

    end = pd.Timestamp(args.start, tz="UTC") + pd.Timedelta(days=args.days, hours=12)
    return end.isoformat()


# --------------------------------------------------------------------------- parser
def _add_input_args(p: argparse.ArgumentParser, *, catalog: bool = True) -> None:
    p.add_argument(
        "--events", type=path_text, required=True, help="touchpoint log (CSV or Parquet)"
    )
    p.add_argument(
        "--customers", type=path_text, help="customer attributes and consent (CSV or Parquet)"
    )
    if catalog:
        p.add_argument(
            "--catalog", type=path_text, help="catalog YAML (default: the packaged catalog)"
        )
    p.add_argument(
        "--mapping", type=path_text, help="vocabulary mapping YAML for logs in another vocabulary"
    )
    p.add_argument(
        "--strict", action="store_true", help="fail on the first bad row instead of quarantining"
    )


def _add_model_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        required=True,
        type=path_text,
        help="bundle folder or models:/touchpoint@champion",
    )


def _add_ground_truth_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--ground-truth",
        type=path_text,
        help="simulator ground truth (default: ground_truth.parquet next to --events, if present)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="touchpoint",
        description="Next-best-touchpoint recommender: simulate, validate, features, train, "
        "recommend, serve.",
    )
    parser.add_argument("--version", action="version", version=f"touchpoint {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("simulate", help="write a synthetic touchpoint log with known effects")
    p.add_argument("--out", required=True, type=folder, help="output folder")
    # The defaults are the world every figure in docs/ was measured on (and the demo's):
    # long enough for train's time split, which 180 days were not.
    p.add_argument("--customers", type=positive, default=10_000, help="customers (default 10000)")
    p.add_argument("--days", type=positive, default=300, help="days of history (default 300)")
    p.add_argument("--seed", type=non_negative, default=0, help="random seed (default 0)")
    p.add_argument("--start", default="2026-01-01", help="first day, UTC (default 2026-01-01)")
    p.add_argument(
        "--holdout-share",
        type=fraction,
        default=0.1,
        help="share of customers with ground truth at the end of the history (default 0.1)",
    )
    p.set_defaults(handler=cmd_simulate)

    p = sub.add_parser("validate", help="report what is wrong with a log, row by row")
    _add_input_args(p)
    p.add_argument(
        "--quarantine",
        type=path_text,
        help="write the bad rows, with reasons, next to this path as <name>.quarantine.csv "
        "(q.csv -> q.quarantine.csv; bad --customers rows -> q.customers.quarantine.csv); "
        "nothing is written for a file without bad rows",
    )
    p.add_argument(
        "--max-rows", type=non_negative, default=50, help="bad rows printed per file (default 50)"
    )
    p.set_defaults(handler=cmd_validate)

    p = sub.add_parser("features", help="write the point-in-time decision-point feature table")
    _add_input_args(p)
    p.add_argument("--out", required=True, type=path_text, help="output Parquet file")
    p.add_argument(
        "--seed",
        type=non_negative,
        default=0,
        help="seed for the sampled no-action moments (default 0)",
    )
    p.add_argument(
        "--batch-rows",
        type=positive,
        default=500_000,
        help="decision points computed and written per batch; bounds memory (default 500000)",
    )
    p.set_defaults(handler=cmd_features)

    p = sub.add_parser("train", help="train, evaluate, log to MLflow, register and bundle")
    _add_input_args(p)
    p.add_argument(
        "--experiment", default="touchpoint", help="MLflow experiment (default touchpoint)"
    )
    p.add_argument(
        "--formulation",
        choices=["shared_offset", "offset", "single", "per_action", "compare"],
        default="shared_offset",
        help="shared_offset: a pooled base model plus one action-offset model (default); "
        "offset: the base plus one offset model per action; single: one model with the "
        "action as a feature; per_action: one model per action; compare: fit all four and "
        "keep the best by validation policy value",
    )
    p.add_argument("--seed", type=non_negative, default=0, help="random seed (default 0)")
    p.add_argument(
        "--none-per-send",
        type=ratio,
        default=1.0,
        help="sampled no-action decision points per send (default 1.0)",
    )
    p.add_argument(
        "--min-none-per-customer",
        type=non_negative,
        default=None,
        help="no-action decision points every customer gets before the rest are spread by "
        "how long each customer is in the log (default 2; 0 samples customer-time "
        "uniformly, which the churn effects need: docs/TRAINING.md)",
    )
    p.add_argument(
        "--bootstrap",
        type=bootstraps,
        default=500,
        help="bootstrap samples for OPE CIs (default 500)",
    )
    p.add_argument(
        "--max-train-rows",
        type=positive,
        default=1_000_000,
        help="random subset of training rows beyond this (default 1000000)",
    )
    p.add_argument(
        "--negative-keep",
        type=share,
        default=None,
        help="share of each outcome's negative rows the boosters train on, weighted back "
        "(default: training.models.NEGATIVE_KEEP, 0.3; 1 = every row)",
    )
    p.add_argument(
        "--offset-features",
        choices=("all", "effects"),
        default="effects",
        help="what the shared_offset formulation's offset booster (the action effects) may "
        "split on: the customer attributes, channel open/click rates and fatigue features "
        "(default; training/effect_features.py; docs/TRAINING.md), or every feature",
    )
    p.add_argument(
        "--offset-interactions",
        choices=("pairwise", "free"),
        default="pairwise",
        help="how the shared_offset formulation's offset trees may combine features: "
        "pairwise (default): each branch splits on the action and one other feature, an "
        "additive effect per action; free: any combination (training/effect_features.py; "
        "docs/TRAINING.md)",
    )
    p.add_argument(
        "--engagement",
        choices=("on", "off"),
        default="on",
        help="on (default): the shared_offset formulation's offset also reads the candidate "
        "action's engagement, its chance to be opened or clicked, from a model of the "
        "sends' opens and clicks (serving/engagement.py); off: it does not "
        "(docs/TRAINING.md)",
    )
    p.add_argument(
        "--offset-scale",
        choices=("probability", "log_odds"),
        default=None,
        help="how the shared_offset formulation's offset adds an action's effect to the "
        "base: probability (default: training.train.OFFSET_SCALE): p = sigmoid(base) + "
        "offset, effects that do not scale with the base's p(1-p); log_odds: p = "
        "sigmoid(base + offset) (serving/scoring.py; docs/TRAINING.md)",
    )
    p.add_argument(
        "--conversion-effect-scale",
        type=effect_scale,
        default="auto",
        metavar="auto|K",
        help="how many times the model's conversion uplift the policy weighs: auto "
        "(default) estimates it on the training rows as the ratio of the send-minus-no-action "
        "difference of purchases before the next send to that of purchases within the "
        "horizon (the logging policy's follow-up sends dilute the latter), within [1, 4]; "
        "a number > 0 fixes it, 1: the model's uplift as it is (training/effect_scale.py; "
        "docs/TRAINING.md)",
    )
    p.add_argument(
        "--offset-members",
        type=positive,
        default=None,
        help="boosters averaged in the shared_offset formulation's offset, each on its own "
        "negative subsample (default: training.offset_bagging.OFFSET_MEMBERS, 1; 5 gained "
        "~0.01 oracle fraction on the simulator with pairwise offset trees, for 5x the "
        "offset's trees in every request; docs/TRAINING.md)",
    )
    p.add_argument(
        "--refit",
        choices=("none", "pre-test"),
        default="none",
        help="pre-test: once early stopping has chosen the rounds, refit the shared_offset "
        "boosters on every decision point before the test period (about twice the training "
        "rows; the test figures stay out of sample; training/refit.py, docs/TRAINING.md); "
        "none (default): ship the split fit",
    )
    p.add_argument(
        "--models-dir",
        type=path_text,
        default="models",
        help="where bundles are written (default models/)",
    )
    _add_ground_truth_arg(p)
    p.add_argument("--no-register", action="store_true", help="log the run but do not register")
    p.set_defaults(handler=cmd_train)

    p = sub.add_parser("recommend", help="batch recommendations as of a time")
    _add_input_args(p, catalog=False)
    _add_model_arg(p)
    p.add_argument(
        "--as-of", required=True, help="use only events strictly before this time (ISO-8601)"
    )
    p.add_argument(
        "--ids",
        type=path_text,
        help="file of customer ids, one per line, or a CSV file with a customer_id column "
        "(default: all customers)",
    )
    p.add_argument(
        "--top-k", type=positive, default=3, help="ranked actions per customer (default 3)"
    )
    p.add_argument("--out", required=True, type=path_text, help="output CSV")
    p.set_defaults(handler=cmd_recommend)

    p = sub.add_parser("serve", help="the HTTP API (FastAPI under uvicorn)")
    _add_model_arg(p)
    p.add_argument(
        "--events", type=path_text, help="load the history store from this log (CSV or Parquet)"
    )
    p.add_argument(
        "--customers", type=path_text, help="customer attributes and consent (CSV or Parquet)"
    )
    p.add_argument("--host", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=count, help="port (default 8000)")
    p.add_argument(
        "--workers",
        type=count,
        help="worker processes sharing the port (default 1; about one per core)",
    )
    p.set_defaults(handler=cmd_serve)

    p = sub.add_parser(
        "decisions", help="export the service's decision log, rewards joined, for evaluation"
    )
    p.add_argument(
        "--log", type=path_text, required=True, help="decision log (the service's SQLite file)"
    )
    p.add_argument(
        "--events", type=path_text, help="touchpoint log to join the outcomes from (CSV or Parquet)"
    )
    p.add_argument(
        "--catalog",
        type=path_text,
        help="catalog YAML: its horizons.conversion_days (default: packaged)",
    )
    p.add_argument(
        "--mapping", type=path_text, help="vocabulary mapping YAML for logs in another vocabulary"
    )
    p.add_argument("--strict", action="store_true", help="fail on any bad event row")
    p.add_argument("--out", required=True, type=path_text, help="output Parquet file")
    p.set_defaults(handler=cmd_decisions)

    p = sub.add_parser(
        "export-events",
        help="the service's history store as an events file (for train, evaluate, decisions)",
    )
    p.add_argument(
        "--store",
        type=path_text,
        default="touchpoint-store.db",
        help="history store (the service's SQLite file; default touchpoint-store.db)",
    )
    p.add_argument("--out", required=True, type=path_text, help="output Parquet file")
    p.set_defaults(handler=cmd_export_events)

    p = sub.add_parser("report", help="the experiment report of a training run, as one HTML page")
    _add_input_args(p, catalog=False)
    p.add_argument("--run", required=True, help="MLflow run id of a `touchpoint train` run")
    p.add_argument("--out", required=True, type=path_text, help="output HTML file")
    p.add_argument("--no-log", action="store_true", help="do not attach the page to the run")
    p.set_defaults(handler=cmd_report)

    p = sub.add_parser("evaluate", help="off-policy value of a trained model on a log")
    _add_input_args(p, catalog=False)
    _add_model_arg(p)
    p.add_argument("--out", required=True, type=path_text, help="output CSV of policy values")
    p.add_argument(
        "--bootstrap", type=bootstraps, default=500, help="bootstrap samples (default 500)"
    )
    p.add_argument("--seed", type=non_negative, default=0, help="random seed (default 0)")
    _add_ground_truth_arg(p)
    p.set_defaults(handler=cmd_evaluate)

    p = sub.add_parser(
        "hillstrom", help="the real randomized Hillstrom e-mail test: policy value and uplift"
    )
    p.add_argument(
        "--data",
        type=path_text,
        default="../shared/data/hillstrom.csv",
        help="path to hillstrom.csv (default ../shared/data/hillstrom.csv)",
    )
    p.add_argument("--seed", type=non_negative, default=42, help="split seed (default 42)")
    p.add_argument(
        "--bootstrap", type=bootstraps, default=1000, help="bootstrap samples (default 1000)"
    )
    p.set_defaults(handler=cmd_hillstrom)

    p = sub.add_parser(
        "demo", help="simulate, validate, featurize, train and recommend, end to end"
    )
    p.add_argument(
        "--workdir",
        type=path_text,
        default="out/demo",
        help="where data and outputs go (default out/demo)",
    )
    p.add_argument(
        "--customers", type=positive, default=10_000, help="simulated customers (default 10000)"
    )
    p.add_argument("--days", type=positive, default=300, help="simulated days (default 300)")
    p.add_argument("--seed", type=non_negative, default=0, help="random seed (default 0)")
    p.add_argument("--start", default="2026-01-01", help=argparse.SUPPRESS)
    p.add_argument("--experiment", default="touchpoint-demo", help="MLflow experiment")
    p.add_argument("--port", type=port, default=8000, help="service port (default 8000)")
    p.add_argument("--no-serve", action="store_true", help="stop after the batch recommendations")
    p.set_defaults(handler=cmd_demo)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # OpenMP's spin-waiting makes LightGBM many times slower whenever another process holds
    # a core (measured in bench/bench_training.py); passive waiting costs little when idle.
    # Set before LightGBM is imported; an explicit setting in the environment wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        print("touchpoint: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if isinstance(exc, _input_errors()):
            print(f"touchpoint {args.command}: error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        raise


if __name__ == "__main__":
    sys.exit(main())
