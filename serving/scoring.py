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
- ``shared_offset``: the same pooled ``base``, plus ONE ``offset`` booster over all rows
  with the action code as a categorical column: the action effects share their
  structure (e.g. "nothing works on a customer who is gone") and all the data.

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

from serving.forest import action_logits, compile_forest, concatenate
from serving.lgbm_predict import Kind, Predict, predictor
from serving.tree_shap import TreeShap, compile_shap

Formulation = Literal["single", "per_action", "offset", "shared_offset"]
FORMULATIONS: tuple[Formulation, ...] = ("single", "per_action", "offset", "shared_offset")


@dataclass(frozen=True)
class Calibration:
    """Platt scaling on the logit: ``p' = sigmoid(slope * logit(p) + intercept)``.

    A smooth, strictly monotone map on purpose: the policy lives on *differences* between
    actions, and a step-wise (isotonic) map would flatten small differences to zero.
    """

    slope: float
    intercept: float

    def apply(self, p: np.ndarray) -> np.ndarray:
        q = np.clip(p, 1e-7, 1 - 1e-7)
        return _sigmoid(self.slope * np.log(q / (1 - q)) + self.intercept)

    def to_dict(self) -> dict[str, float]:
        return {"slope": self.slope, "intercept": self.intercept}

    @classmethod
    def from_dict(cls, data: Mapping[str, float]) -> Calibration:
        slope, intercept = float(data["slope"]), float(data["intercept"])
        if not (np.isfinite(slope) and np.isfinite(intercept) and slope > 0):
            raise ValueError("calibration needs a finite positive slope and a finite intercept")
        return cls(slope=slope, intercept=intercept)


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
    #: LightGBM threads per prediction: 1 for requests (two threads made p99 jump whenever
    #: another process held a core); batch jobs raise it for the duration of the batch.
    threads: int = 1
    _codes: np.ndarray = field(init=False, repr=False)
    _predictors: dict[tuple[str, Kind, int], Predict] = field(
        init=False, repr=False, default_factory=dict
    )
    #: Per booster: its SHAP tables (serving.tree_shap), or None where pred_contrib is used.
    _shap: dict[str, TreeShap | None] = field(init=False, repr=False, default_factory=dict)
    #: The compiled trees behind :meth:`predict_row` (built on first use; False: none).
    _row_logits: _RowLogits | None | bool = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        if self.formulation not in FORMULATIONS:
            raise ValueError(f"formulation must be one of {FORMULATIONS}, got {self.formulation}")
        expected = {
            "single": {"all"},
            "per_action": set(self.actions),
            "offset": {"base", *self.actions},
            "shared_offset": {"base", "offset"},
        }[self.formulation]
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
        if self.formulation in ("single", "shared_offset"):
            rows = _with_actions(X, self._codes[idx])
            if self.formulation == "single":
                return self._run("all", "normal", rows).reshape(len(X), len(idx))
            base = np.repeat(self._run("base", "raw", X), len(idx))
            logit = base + self._run("offset", "raw", rows)
            return _sigmoid(logit).reshape(len(X), len(idx))
        if self.formulation == "offset":
            base = self._run("base", "raw", X)
            logits = np.column_stack([base + self._run(self.actions[i], "raw", X) for i in idx])
            return _sigmoid(logits)
        cols = [self._run(self.actions[i], "normal", X) for i in idx]
        return np.column_stack(cols).astype(np.float64)

    def _run(self, key: str, kind: Kind, X: np.ndarray) -> np.ndarray:
        """One booster's predictions through the C API (serving.lgbm_predict)."""
        cache_key = (key, kind, self.threads)
        fn = self._predictors.get(cache_key)
        if fn is None:
            fn = self._predictors[cache_key] = predictor(self.boosters[key], kind, self.threads)
        return fn(X)

    def contributions(self, key: str, X: np.ndarray) -> np.ndarray:
        """SHAP contributions (log-odds) of booster ``key``, without the bias column.

        From per-leaf tables built on first use when the booster suits them (the offset
        boosters do: 5-12x faster than ``pred_contrib`` for a request's rows, equal to ~1e-15),
        else LightGBM's ``pred_contrib``.
        """
        if key not in self._shap:
            self._shap[key] = compile_shap(self.boosters[key])
        shap = self._shap[key]
        if shap is not None:
            return shap.contrib(X)
        return self._run(key, "contrib", X)[:, :-1]

    def predict(self, X: np.ndarray, action_idx: Sequence[int] | None = None) -> np.ndarray:
        """Calibrated probabilities, shape ``(len(X), n_actions)`` (or the chosen columns)."""
        raw = self.predict_raw(X, action_idx)
        return raw if self.calibration is None else self.calibration.apply(raw)

    def predict_row(self, x: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of one feature row under every action, bit for bit
        ``predict(x[None, :])[0]``: the request path.

        The offset formulations walk their trees in one compiled call (serving/forest.py)
        instead of one LightGBM call per action; the others, and any booster that module
        does not reproduce exactly, go through :meth:`predict`.
        """
        if self._row_logits is None:
            self._row_logits = _RowLogits.build(self) or False
        if self._row_logits is False:
            return self.predict(np.asarray(x, dtype=np.float64)[None, :])[0]
        assert isinstance(self._row_logits, _RowLogits)
        raw = _sigmoid(self._row_logits(x))
        return raw if self.calibration is None else self.calibration.apply(raw)

    def predict_logged(self, X: np.ndarray, action_codes: np.ndarray) -> np.ndarray:
        """Calibrated probability of each row under its own (logged) action."""
        X = np.asarray(X, dtype=np.float64)
        codes = np.asarray(action_codes, dtype=np.int64)
        if self.formulation == "single":
            raw = self._run("all", "normal", np.hstack([X, codes[:, None].astype(np.float64)]))
        elif self.formulation == "shared_offset":
            with_action = np.hstack([X, codes[:, None].astype(np.float64)])
            logit = self._run("base", "raw", X) + self._run("offset", "raw", with_action)
            raw = _sigmoid(logit)
        elif self.formulation == "offset":
            logit = self._run("base", "raw", X)
            for code in np.unique(codes):
                rows = codes == code
                logit[rows] += self._run(self.actions[code], "raw", X[rows])
            raw = _sigmoid(logit)
        else:
            raw = np.zeros(len(X))
            for code in np.unique(codes):
                rows = codes == code
                raw[rows] = self._run(self.actions[code], "normal", X[rows])
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


class _RowLogits:
    """``logit p(y | x, a)`` of one row for every action ``a``, in one compiled call, for
    the ``offset`` and ``shared_offset`` formulations: as :meth:`OutcomeScorer.predict_raw`
    computes them, base raw score plus the action's offset raw score."""

    def __init__(self, arrays: tuple[np.ndarray, ...], base_end: int, action_trees: np.ndarray,
                 action_column: int, n_features: int) -> None:  # fmt: skip
        self.arrays, self.base_end, self.action_trees = arrays, base_end, action_trees
        self.action_column, self.n_features = action_column, n_features

    @classmethod
    def build(cls, scorer: OutcomeScorer) -> _RowLogits | None:
        if scorer.formulation == "shared_offset":
            keys = ["base", "offset"]
        elif scorer.formulation == "offset":
            keys = ["base", *scorer.actions]
        else:  # LightGBM's own sigmoid makes the probabilities: keep LightGBM
            return None
        forests = [compile_forest(scorer.boosters[key]) for key in keys]
        if any(f is None for f in forests):
            return None
        joined, ranges = concatenate([f for f in forests if f is not None])
        n_features = scorer.boosters["base"].num_feature()
        if scorer.formulation == "shared_offset":
            action_trees = np.repeat(ranges[1:2], len(scorer.actions), axis=0)
            action_column = n_features  # the offset booster's last column
        else:
            action_trees, action_column = np.ascontiguousarray(ranges[1:]), -1
        return cls(joined.arrays(), int(ranges[0, 1]), action_trees, action_column, n_features)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        row = np.empty(self.n_features + 1)  # a scratch row per call: threads share self
        row[: self.n_features] = x
        row[self.n_features] = 0.0
        out = np.empty(self.action_trees.shape[0])
        action_logits(row, self.base_end, self.action_trees, self.action_column, *self.arrays, out)
        return out


def _with_actions(X: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Each row of ``X`` once per action code, the code as a last column (row-major:
    row 0 with every code, then row 1, ...).  Written in place: for the one-row request
    path, hstack/repeat/tile cost more than the copy itself."""
    n, k = X.shape[0], codes.size
    rows = np.empty((n * k, X.shape[1] + 1))
    by_row = rows.reshape(n, k, X.shape[1] + 1)  # a view: rows is contiguous
    by_row[:, :, :-1] = X[:, None, :]
    by_row[:, :, -1] = codes
    return rows


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))
