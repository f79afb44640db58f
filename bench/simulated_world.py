"""A folder written by ``touchpoint simulate``, for the bench scripts that train on one and
grade the result by its ground truth (``--data WORLD_DIR [--seed S]``)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from features.catalog import Catalog, load_catalog
from features.ingest import read_customers, read_events


@dataclass(frozen=True)
class SimulatedWorld:
    events: pd.DataFrame
    customers: pd.DataFrame
    catalog: Catalog
    ground_truth: pd.DataFrame


def read_world(folder: Path) -> SimulatedWorld:
    return SimulatedWorld(
        events=read_events(folder / "events.parquet").events,
        customers=read_customers(folder / "customers.parquet").customers,
        catalog=load_catalog(folder / "catalog.yaml"),
        ground_truth=pd.read_parquet(folder / "ground_truth.parquet"),
    )


def world_and_seed(description: str) -> tuple[SimulatedWorld, int]:
    """The world of ``--data`` and the training seed of ``--seed``, from the command line."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", type=Path, required=True, help="a touchpoint simulate folder")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    args = parser.parse_args()
    return read_world(args.data), args.seed
