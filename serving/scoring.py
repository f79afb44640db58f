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
  structure (e.g. "nothing works on a customer who is gone") and all the data.  Its
  ``offset_scale`` says how the two add up: ``log_odds`` as ``offset`` does, or
  ``probability``: ``p(y | x, a) = sigmoid(base(x)) + offset(x, a)`` (clipped to
  [:data:`PROBABILITY_FLOOR`, 1 - :data:`PROBABILITY_FLOOR`]), an offset booster trained
  by least squares on the base's probabilities, whose effects do not scale with the
  base's ``p (1 - p)`` (training/train.py, ``OFFSET_SCALE``).

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

from serving.engagement import EngagementModel
from serving.forest import action_logits, compile_forest, concatenate, tree_sum
from serving.lgbm_predict import Kind, Predict, predictor
from serving.tree_shap import TreeShap, compile_shap

Formulation = Literal["single", "per_action", "offset", "shared_offset"]
#: Action codes to score (None: all of them, in code order).
Actions = Sequence[int] | np.ndarray | None
FORMULATIONS: tuple[Formulation, ...] = ("single", "per_action", "offset", "shared_offset")
#: How the shared offset adds to the base: on the log-odds or on the probability.
OffsetScale = Literal["log_odds", "probability"]
OFFSET_SCALES: tuple[OffsetScale, ...] = ("log_odds", "probability")
#: A probability-scale prediction is clipped to [floor, 1 - floor]: base + offset is a sum
#: that least squares does not keep inside (0, 1), and the calibration takes its logit.
PROBABILITY_FLOOR = 1e-6


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
    engagement
        ``shared_offset`` only, optional: the engagement model (serving/engagement.py)
        whose probability for the candidate action is the offset booster's column before
        the action code.
    offset_scale
        ``shared_offset`` only: ``log_odds`` (the offset's raw score is added to the
        base's) or ``probability`` (to the base's probability; see the module docstring).
    """

    formulation: Formulation
    actions: tuple[str, ...]
    boosters: dict[str, lgb.Booster]
    calibration: Calibration | None = None
    engagement: EngagementModel | None = None
    offset_scale: OffsetScale = "log_odds"
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
        if self.offset_scale not in OFFSET_SCALES:
            raise ValueError(
                f"offset_scale must be one of {OFFSET_SCALES}, got {self.offset_scale!r}"
            )
        if self.offset_scale != "log_odds" and self.formulation != "shared_offset":
            raise ValueError(
                "a probability-scale offset goes with the shared_offset formulation only"
            )
        if self.engagement is not None:
            if self.formulation != "shared_offset":
                raise ValueError("an engagement model goes with the shared_offset formulation only")
            if len(self.engagement.action_channels) != len(self.actions):
                raise ValueError("the engagement model's actions differ from the scorer's")
        self._codes = np.arange(len(self.actions), dtype=np.float64)

    def engagement_of(self, X: np.ndarray, action_idx: Actions = None) -> np.ndarray | None:
        """The engagement of each row under each action of ``action_idx`` (default: all),
        ``(len(X), n)``; None without an engagement model.  The scorers of a bundle share
        one model: :class:`~serving.engine.DecisionEngine` computes it once and passes it
        to both (``engagement=``)."""
        if self.engagement is None:
            return None
        return self.engagement.per_action(X, action_idx, self.threads)

    def model_rows(
        self, X: np.ndarray, action_idx: Actions = None, engagement: np.ndarray | None = None
    ) -> np.ndarray:
        """The rows the action-aware booster reads (``all`` or ``offset``): each row of
        ``X`` once per action of ``action_idx`` (default: all), row-major, as ``[x,
        engagement, action code]`` with an engagement model and ``[x, action code]``
        without.  ``engagement``: :meth:`engagement_of` of the same rows and actions,
        when the caller has it."""
        idx = np.arange(len(self.actions)) if action_idx is None else np.asarray(action_idx)
        X = np.asarray(X, dtype=np.float64)
        if self.engagement is None:
            engagement = None
        elif engagement is None:
            engagement = self.engagement_of(X, idx)
        return _with_actions(X, self._codes[idx], engagement)

    def logged_rows(self, X: np.ndarray, action_codes: np.ndarray) -> np.ndarray:
        """Each row of ``X`` with its own action code, as :meth:`model_rows` lays them out."""
        X = np.asarray(X, dtype=np.float64)
        codes = np.asarray(action_codes, dtype=np.int64)
        columns = [X]
        if self.engagement is not None:
            columns.append(self.engagement.logged(X, codes, self.threads)[:, None])
        return np.hstack([*columns, codes[:, None].astype(np.float64)])

    def predict_raw(
        self, X: np.ndarray, action_idx: Actions = None, engagement: np.ndarray | None = None
    ) -> np.ndarray:
        """Uncalibrated probabilities, shape ``(len(X), n_actions)`` (or the chosen columns).
        ``engagement``: as :meth:`model_rows`."""
        idx = np.arange(len(self.actions)) if action_idx is None else np.asarray(action_idx)
        X = np.asarray(X, dtype=np.float64)
        if self.formulation in ("single", "shared_offset"):
            rows = self.model_rows(X, idx, engagement)
            if self.formulation == "single":
                return self._run("all", "normal", rows).reshape(len(X), len(idx))
            base = np.repeat(self._run("base", "raw", X), len(idx))
            return self._add_offset(base, self._run("offset", "raw", rows)).reshape(
                len(X), len(idx)
            )
        if self.formulation == "offset":
            base = self._run("base", "raw", X)
            logits = np.column_stack([base + self._run(self.actions[i], "raw", X) for i in idx])
            return _sigmoid(logits)
        cols = [self._run(self.actions[i], "normal", X) for i in idx]
        return np.column_stack(cols).astype(np.float64)

    def _add_offset(self, base: np.ndarray, offset: np.ndarray) -> np.ndarray:
        """The probabilities of the shared offset's raw scores on top of the base's."""
        if self.offset_scale == "log_odds":
            return _sigmoid(base + offset)
        return clip_probability(_sigmoid(base) + offset)

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

    def predict(
        self, X: np.ndarray, action_idx: Actions = None, engagement: np.ndarray | None = None
    ) -> np.ndarray:
        """Calibrated probabilities, shape ``(len(X), n_actions)`` (or the chosen columns).
        ``engagement``: as :meth:`model_rows`."""
        raw = self.predict_raw(X, action_idx, engagement)
        return raw if self.calibration is None else self.calibration.apply(raw)

    def predict_row(self, x: np.ndarray, engagement: np.ndarray | None = None) -> np.ndarray:
        """Calibrated probabilities of one feature row under every action, bit for bit
        ``predict(x[None, :])[0]``: the request path.  ``engagement``: the row's
        :meth:`engagement_of` for every action (``(n_actions,)`` or ``(1, n_actions)``),
        when the caller has it.

        The offset formulations walk their trees in one compiled call (serving/forest.py)
        instead of one LightGBM call per action; the others, and any booster that module
        does not reproduce exactly, go through :meth:`predict`.
        """
        if self.engagement is not None:
            if engagement is None:
                engagement = self.engagement_of(np.asarray(x, dtype=np.float64)[None, :])
            engagement = np.asarray(engagement, dtype=np.float64).reshape(1, -1)
        if self._row_logits is None:
            self._row_logits = _RowLogits.build(self) or False
        if self._row_logits is False:
            return self.predict(np.asarray(x, dtype=np.float64)[None, :], None, engagement)[0]
        assert isinstance(self._row_logits, _RowLogits)
        given = None if engagement is None else engagement[0]
        if self.offset_scale == "log_odds":
            raw = _sigmoid(self._row_logits(x, given))
        else:
            raw = self._add_offset(*self._row_logits.base_and_offsets(x, given))
        return raw if self.calibration is None else self.calibration.apply(raw)

    def predict_logged(self, X: np.ndarray, action_codes: np.ndarray) -> np.ndarray:
        """Calibrated probability of each row under its own (logged) action."""
        X = np.asarray(X, dtype=np.float64)
        codes = np.asarray(action_codes, dtype=np.int64)
        if self.formulation == "single":
            raw = self._run("all", "normal", self.logged_rows(X, codes))
        elif self.formulation == "shared_offset":
            offset = self._run("offset", "raw", self.logged_rows(X, codes))
            raw = self._add_offset(self._run("base", "raw", X), offset)
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
            "offset_scale": self.offset_scale,
        }

    @classmethod
    def load(
        cls,
        folder: Path,
        manifest: Mapping[str, Any],
        actions: tuple[str, ...],
        engagement: EngagementModel | None = None,
    ) -> OutcomeScorer:
        """A scorer saved by :meth:`save`; ``engagement``: the bundle's engagement model
        (saved once for both outcomes by serving/bundle.py)."""
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
            engagement=engagement,
            # Written from bundle format 3 on; earlier bundles added on the log-odds.
            offset_scale=manifest.get("offset_scale", "log_odds"),
        )


class _RowLogits:
    """``logit p(y | x, a)`` of one row for every action ``a``, in one compiled call, for
    the ``offset`` and ``shared_offset`` formulations: as :meth:`OutcomeScorer.predict_raw`
    computes them, base raw score plus the action's offset raw score."""

    def __init__(self, arrays: tuple[np.ndarray, ...], base_end: int, action_trees: np.ndarray,
                 action_column: int, engagement_column: int, n_features: int) -> None:  # fmt: skip
        self.arrays, self.base_end, self.action_trees = arrays, base_end, action_trees
        self.action_column, self.n_features = action_column, n_features
        self.engagement_column = engagement_column
        self._no_engagement = np.zeros(action_trees.shape[0])
        # The widest row a booster reads: the features, then the engagement and the action.
        self.width = max(action_column, engagement_column, n_features - 1) + 1

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
        engagement_column = -1
        if scorer.formulation == "shared_offset":
            action_trees = np.repeat(ranges[1:2], len(scorer.actions), axis=0)
            # The offset booster's last column; the engagement's, if any, just before it.
            action_column = scorer.boosters["offset"].num_feature() - 1
            if scorer.engagement is not None:
                engagement_column = n_features
        else:
            action_trees, action_column = np.ascontiguousarray(ranges[1:]), -1
        return cls(
            joined.arrays(), int(ranges[0, 1]), action_trees, action_column, engagement_column,
            n_features,
        )  # fmt: skip

    def __call__(self, x: np.ndarray, engagement: np.ndarray | None = None) -> np.ndarray:
        """The logits of row ``x``; ``engagement``: each action's, with an engagement model."""
        return self._sums(self._row(x), engagement, self.base_end)

    def base_and_offsets(
        self, x: np.ndarray, engagement: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Row ``x``'s base raw score (shape ``(1,)``) and every action's offset raw
        score apart, for a probability-scale offset: each the sum LightGBM's raw score of
        its booster is, so ``sigmoid(base) + offset`` is what the batch path computes."""
        row = self._row(x)
        # With no base trees the kernel's base is 0.0, and 0.0 + offset is the offset.
        offsets = self._sums(row, engagement, 0)
        return np.array([tree_sum(row, 0, self.base_end, *self.arrays)]), offsets

    def _row(self, x: np.ndarray) -> np.ndarray:
        """A scratch row per call (threads share self): ``x``, then the columns the kernel
        fills in (engagement, action code)."""
        row = np.zeros(self.width)
        row[: self.n_features] = x
        return row

    def _sums(self, row: np.ndarray, engagement: np.ndarray | None, base_end: int) -> np.ndarray:
        """Each action's offset raw score plus the raw score of the first ``base_end``
        trees (all of the base's, or none), for a :meth:`_row`."""
        out = np.empty(self.action_trees.shape[0])
        values = self._no_engagement if engagement is None else engagement
        action_logits(
            row, base_end, self.action_trees, self.action_column, self.engagement_column,
            values, *self.arrays, out,
        )  # fmt: skip
        return out


def _with_actions(
    X: np.ndarray, codes: np.ndarray, engagement: np.ndarray | None = None
) -> np.ndarray:
    """Each row of ``X`` once per action code, the code as a last column (row-major:
    row 0 with every code, then row 1, ...), after ``engagement[i, j]`` (row i, code j)
    when given.  Written in place: for the one-row request path, hstack/repeat/tile cost
    more than the copy itself."""
    n, k, f = X.shape[0], codes.size, X.shape[1]
    width = f + 1 + (engagement is not None)
    rows = np.empty((n * k, width))
    by_row = rows.reshape(n, k, width)  # a view: rows is contiguous
    by_row[:, :, :f] = X[:, None, :]
    if engagement is not None:
        by_row[:, :, f] = engagement
    by_row[:, :, -1] = codes
    return rows


def clip_probability(p: np.ndarray) -> np.ndarray:
    """Probabilities as a probability-scale offset leaves them: within
    [PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR] (training clips its kept scores alike)."""
    return np.clip(p, PROBABILITY_FLOOR, 1.0 - PROBABILITY_FLOOR)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))
