"""Batch campaigns: recommendations for many customers at one moment (``touchpoint recommend``).

Features are computed from the events strictly before ``as_of`` (so a log that runs past
``as_of`` is safe to pass), then the same :class:`serving.engine.DecisionEngine` that
serves HTTP requests ranks the actions under the contact rules.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from features.pipeline import compute_features
from features.schema import NO_ACTION
from serving.engine import DecisionEngine, ScoredRows


@dataclass(frozen=True)
class BatchResult:
    """The recommendation table, and the scored rows behind it (for evaluation)."""

    recommendations: pd.DataFrame
    customer_ids: pd.Series
    scored: ScoredRows
    X: np.ndarray


def read_ids(path: str | Path) -> list[str]:
    """Customer ids, one per line; blank lines are skipped and a ``customer_id`` header is allowed.

    A CSV file with several columns is read too when one of them is ``customer_id``.
    ``ValueError`` (naming ``path``) for a file with no ids, a CSV file without a
    ``customer_id`` column, or a file that is not UTF-8 text.
    """
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not a UTF-8 text file of customer ids ({exc.reason})") from exc
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if lines and "," in lines[0]:  # a CSV file: take its customer_id column
        header = [name.strip().lower() for name in next(csv.reader([lines[0]]))]
        if "customer_id" not in header:
            raise ValueError(f"{path}: several columns ({lines[0][:80]}) but no customer_id column")
        column = header.index("customer_id")
        rows = csv.reader(lines[1:])
        ids = [row[column].strip() for row in rows if len(row) > column and row[column].strip()]
    else:
        ids = lines
        if ids and ids[0].lower() == "customer_id":
            ids = ids[1:]
    if not ids:
        raise ValueError(f"{path}: no customer ids")
    return list(dict.fromkeys(ids))  # duplicates would only repeat rows


def recommend_batch(
    engine: DecisionEngine,
    events: pd.DataFrame,
    customers: pd.DataFrame | None,
    as_of: pd.Timestamp,
    *,
    ids: Sequence[str] | None = None,
    top_k: int = 3,
) -> BatchResult:
    """Rank the actions for ``ids`` (default: every customer in the log or the customers table).

    Customers with no history still get a recommendation (from their attributes alone), and
    ``none`` is always among the ranked actions.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    as_of = pd.Timestamp(as_of)
    as_of = as_of.tz_localize("UTC") if as_of.tzinfo is None else as_of.tz_convert("UTC")
    if ids is None:
        pool = [events["customer_id"].astype(str)]
        if customers is not None:
            pool.append(customers["customer_id"].astype(str))
        ids = list(pd.unique(pd.concat(pool, ignore_index=True)))
    customer_ids = pd.Series(list(ids), dtype=object, name="customer_id")
    decisions = pd.DataFrame(
        {
            "customer_id": customer_ids,
            "decision_time": pd.Series([as_of] * len(customer_ids)).astype("datetime64[ns, UTC]"),
            "action": NO_ACTION,
        }
    )
    # float64: the contact rules read exact times off the features (serving.engine).
    features = compute_features(
        events, decisions, customers, spec=engine.bundle.spec, dtype=np.float64
    )
    X = features[list(engine.bundle.spec.feature_names)].to_numpy(dtype=np.float64)
    del features
    scored = score_in_chunks(engine, X, as_of)
    frame = engine.recommendations_frame(customer_ids, scored, top_k=top_k)
    return BatchResult(recommendations=frame, customer_ids=customer_ids, scored=scored, X=X)


#: Customers scored at once: the single-model formulations repeat each feature row once
#: per action, so a chunk bounds that copy (~150 MB at 10k customers x 11 actions).
SCORE_CHUNK = 10_000


def score_in_chunks(
    engine: DecisionEngine, X: np.ndarray, as_of: pd.Timestamp, *, threads: int = 2
) -> ScoredRows:
    """``engine.score`` over chunks of customers, with ``threads`` LightGBM threads."""
    scorers = (engine.bundle.conversion, engine.bundle.churn)
    before = [s.threads for s in scorers]
    for scorer in scorers:
        scorer.threads = threads
    try:
        parts = [
            engine.score(X[lo : lo + SCORE_CHUNK], as_of) for lo in range(0, len(X), SCORE_CHUNK)
        ]
    finally:
        for scorer, n in zip(scorers, before, strict=True):
            scorer.threads = n
    if not parts:
        parts = [engine.score(X, as_of)]
    return ScoredRows(
        actions=parts[0].actions,
        p_conversion=np.concatenate([p.p_conversion for p in parts]),
        p_churn=np.concatenate([p.p_churn for p in parts]),
        scores=np.concatenate([p.scores for p in parts]),
        suppression=np.concatenate([p.suppression for p in parts]),
    )
