"""LightGBM callbacks run before each boosting round, shared by every fit that runs beside
others (``training.models.fit_outcome_models`` runs the outcome chains and the propensity
model at once): stop when another job has failed.

A callback here only reads its flag: a fit it does not stop grows the same trees as one
without it.
"""

from __future__ import annotations

from typing import Protocol

import lightgbm as lgb

__all__ = ["FitStopped", "Flag", "StopWhenSet"]


class Flag(Protocol):
    """Something set once and polled between rounds (a ``threading.Event``)."""

    def is_set(self) -> bool: ...


class FitStopped(Exception):
    """A fit stopped because another job failed; the caller gets that job's error."""


class StopWhenSet:
    """Before each round: raise :class:`FitStopped` once ``flag`` is set."""

    before_iteration = True

    def __init__(self, flag: Flag, fit: str) -> None:
        self.flag = flag
        self.fit = fit  # named in the message: "conversion base", "propensity", ...

    def __call__(self, env: lgb.callback.CallbackEnv) -> None:
        if self.flag.is_set():
            raise FitStopped(f"{self.fit} fit stopped before round {env.iteration}")
