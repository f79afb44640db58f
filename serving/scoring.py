"""Outcome models at serving time: P(outcome | features, action) for every candidate action.

Three formulations share one interface, so the policy never knows which one it scores:

- ``single``: one LightGBM booster with the action code as its last (categorical) column;
  scoring repeats the customer's feature row once per action.
- ``per_action``: one booster per action, each fed the plain feature row.
- ``offset``: a ``base`` booster of the outcome pooled over all actions, plus one small
  booster per action trained on its rows *on top of* the base (LightGBM ``init_score``):
  ``logit p(y | x, a) = base(x) + offset_a(x)``.  The base carries the large main effects
  once, so the action boosters only learn how each action shifts the odds; their
  differences (the uplift) are far less noisy than those of independent models.

Boosters are loaded from LightGBM's text format (no pickles), and predictions use one
thread: measured here, two threads made p99 jump whenever another process held a core.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import lightgbm as lgb
import numpy as np

Formulation = Literal["single", "per_action", "offset"]
FORMULATIONS: tuple[Formulation, ...] = ("single", "per_action", "offset")
_PREDICT_KW = {"num_threads": 1}


@dataclass(frozen=True)
class Calibration:
    """A monotone map from raw to calibrated probability (isotonic steps, interpolated)."""

    x: np.ndarray
    y: np.ndarray

    def apply(self, p: np.ndarray) -> np.ndarray:
        return np.interp(p, self.x, self.y)

    def to_dict(self) -> dict[str, list[float]]:
        return {"x": self.x.tolist(), "y": self.y.tolist()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Sequence[float]]) -> Calibration:
        x, y = np.asarray(data["x"], dtype=float), np.asarray(data["y"], dtype=float)
        if x.ndim != 1 or x.shape != y.shape or len(x) < 2 or np.any(np.diff(x) < 0):
            raise ValueError("calibration needs two increasing arrays x and y of equal length")
        return cls(x=x, y=y)


@dataclass
class OutcomeScorer:
    """Probabilities of one outcome (conversion or churn) under each candidate action.

    Parameters
    ----------
    formulation
        ``single`` or ``per_action`` (see the module docstring).
    actions
        Action ids; the position of an id is its action code (``none`` is code 0).
    boosters
        ``{"all": booster}`` for ``single``; ``{action_id: booster}`` for ``per_action``;
        both ``{"base": booster}`` and one per action for ``offset``.
    calibration
        Optional map applied to the raw probabilities.
    """

    formulation: Formulation
    actions: tuple[str, ...]
    boosters: dict[str, lgb.Booster]
    calibration: Calibration | None = None
    _codes: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.formulation not in FORMULATIONS:
            raise ValueError(f"formulation must be one of {FORMULATIONS}, got {self.formulation}")
        expected = {"all"} if self.formulation == "single" else set(self.actions)
        if self.formulation == "offset":
            expected = expected | {"base"}
        if set(self.boosters) != expected:
            raise ValueError(
                f"{self.formulation} scorer needs boosters {sorted(expected)}, "
                f"got {sorted(self.boosters)}"
            )
        self._codes = np.arange(len(self.actions), dtype=np.float64)

    def predict_raw(self, X: np.ndarray, action_idx: Sequence[int] | None = None) -> np.ndarray:
        """Uncalibrated probabilities, shape ``(len(X), n_actions)`` (or the chosen columns)."""
        idx = np.arange(len(self.actions)) if action_idx is None else np.asarray(action_idx)
        X = np.asarray(X, dtype=np.float64)
        if self.formulation == "single":
            rows = np.repeat(X, len(idx), axis=0)
            codes = np.tile(self._codes[idx], len(X))[:, None]
            p = self.boosters["all"].predict(np.hstack([rows, codes]), **_PREDICT_KW)
            return np.asarray(p, dtype=np.float64).reshape(len(X), len(idx))
        if self.formulation == "offset":
            base = self._raw(self.boosters["base"], X)
            logits = np.column_stack(
                [base + self._raw(self.boosters[self.actions[i]], X) for i in idx]
            )
            return _sigmoid(logits)
        cols = [np.asarray(self.boosters[self.actions[i]].predict(X, **_PREDICT_KW)) for i in idx]
        return np.column_stack(cols).astype(np.float64)

    @staticmethod
    def _raw(booster: lgb.Booster, X: np.ndarray) -> np.ndarray:
        return np.asarray(booster.predict(X, raw_score=True, **_PREDICT_KW), dtype=np.float64)

    def predict(self, X: np.ndarray, action_idx: Sequence[int] | None = None) -> np.ndarray:
        """Calibrated probabilities, shape ``(len(X), n_actions)`` (or the chosen columns)."""
        raw = self.predict_raw(X, action_idx)
        return raw if self.calibration is None else self.calibration.apply(raw)

    def predict_logged(self, X: np.ndarray, action_codes: np.ndarray) -> np.ndarray:
        """Calibrated probability of each row under its own (logged) action."""
        X = np.asarray(X, dtype=np.float64)
        codes = np.asarray(action_codes, dtype=np.int64)
        if self.formulation == "single":
            raw = self.boosters["all"].predict(
                np.hstack([X, codes[:, None].astype(np.float64)]), **_PREDICT_KW
            )
        elif self.formulation == "offset":
            logit = self._raw(self.boosters["base"], X)
            for code in np.unique(codes):
                rows = codes == code
                logit[rows] += self._raw(self.boosters[self.actions[code]], X[rows])
            raw = _sigmoid(logit)
        else:
            raw = np.zeros(len(X))
            for code in np.unique(codes):
                rows = codes == code
                raw[rows] = self.boosters[self.actions[code]].predict(X[rows], **_PREDICT_KW)
        raw = np.asarray(raw, dtype=np.float64)
        return raw if self.calibration is None else self.calibration.apply(raw)

    # ------------------------------------------------------------------ persistence
    def save(self, folder: Path, name: str) -> dict[str, Any]:
        """Write the boosters as LightGBM text files; return their manifest for bundle.json."""
        files = {}
        for key, booster in self.boosters.items():
            filename = f"{name}.{key}.txt"
            booster.save_model(str(folder / filename))
            files[key] = filename
        return {
            "formulation": self.formulation,
            "files": files,
            "calibration": None if self.calibration is None else self.calibration.to_dict(),
        }

    @classmethod
    def load(
        cls, folder: Path, manifest: Mapping[str, Any], actions: tuple[str, ...]
    ) -> OutcomeScorer:
        boosters = {
            key: lgb.Booster(model_file=str(folder / filename))
            for key, filename in manifest["files"].items()
        }
        calibration = manifest.get("calibration")
        return cls(
            formulation=manifest["formulation"],
            actions=actions,
            boosters=boosters,
            calibration=None if calibration is None else Calibration.from_dict(calibration),
        )


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))
