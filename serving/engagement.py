"""The engagement model: how likely a customer opens or clicks each candidate action.

An action only works on a customer it reaches: an email nobody opens moves neither the
purchases nor the churn.  How well each channel lands with a customer shows in a signal
far more plentiful than the outcomes: on the default simulation a third of the sends are
opened or clicked the same day, against a purchase after one in twenty.  This model learns
``P(open or click within a day | customer attributes, channel)`` from every send of the
log, pooled over the channels, so that how a rare action (a store invitation) lands with
each kind of customer is learned from its own opens *and* those of every other channel.

Its probability for the candidate action's channel (0 for no action: it reaches nobody) is
one column of the ``shared_offset`` booster, between the features and the action code
(:data:`ENGAGEMENT_COLUMN`): the offset can then split on "how likely this action lands"
for all actions together, and learn each action's effect as a function of it from every
action's rows.  Measured in docs/TRAINING.md ("Engagement").  Written by
``training/engagement.py``; here only what serving needs to score and to load it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from serving.lgbm_predict import Predict, predictor

__all__ = ["ENGAGEMENT_COLUMN", "EngagementModel"]

#: The name of the offset booster's column that holds the candidate's engagement.
ENGAGEMENT_COLUMN = "engagement"


@dataclass
class EngagementModel:
    """``P(open or click | x, channel)`` for every candidate action.

    Parameters
    ----------
    booster
        A binary LightGBM booster on ``[x[inputs], channel code]`` (the code categorical).
    inputs
        Names of the feature-row columns it reads, in its column order.
    input_columns
        Their positions in the feature row.
    channels
        The channel of each channel code.
    action_channels
        Per action code, the channel code of its channel; -1 for ``none``.
    """

    booster: lgb.Booster
    inputs: tuple[str, ...]
    input_columns: tuple[int, ...]
    channels: tuple[str, ...]
    action_channels: tuple[int, ...]
    _predictors: dict[int, Predict] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.inputs) != len(self.input_columns):
            raise ValueError("engagement inputs and input_columns differ in length")
        if self.booster.num_feature() != len(self.inputs) + 1:
            raise ValueError(
                f"engagement booster reads {self.booster.num_feature()} columns, expected "
                f"{len(self.inputs)} inputs and the channel code"
            )
        bad = [c for c in self.action_channels if not -1 <= c < len(self.channels)]
        if bad:
            raise ValueError(f"engagement action channel codes out of range: {bad}")
        # For every action at once (the request path): the channels used, and each
        # action's position among them (-1: none).
        self._columns = np.asarray(self.input_columns, dtype=np.int64)
        self._used = np.array(sorted({c for c in self.action_channels if c >= 0}), dtype=float)
        self._position = np.array(
            [-1 if c < 0 else int(np.flatnonzero(self._used == c)[0]) for c in self.action_channels]
        )

    def per_action(
        self, X: np.ndarray, action_idx: Sequence[int] | np.ndarray | None = None, threads: int = 1
    ) -> np.ndarray:
        """``(len(X), n)`` engagement of each row under each action of ``action_idx``
        (default: all, in code order); 0 for ``none``.  One booster call for all the
        channels the actions use."""
        X = np.asarray(X, dtype=np.float64)
        position = self._position if action_idx is None else self._position[np.asarray(action_idx)]
        sent = position >= 0
        out = np.zeros((len(X), len(position)))
        if not sent.any() or len(X) == 0:
            return out
        # Every channel any action uses, once per row (a request: 9 rows, one call).
        width = len(self._columns) + 1
        rows = np.empty((len(X), len(self._used), width))
        rows[:, :, :-1] = X[:, None, self._columns]
        rows[:, :, -1] = self._used
        p = self._probability(rows.reshape(-1, width), threads).reshape(len(X), -1)
        out[:, sent] = p[:, position[sent]]
        return out

    def logged(self, X: np.ndarray, codes: np.ndarray, threads: int = 1) -> np.ndarray:
        """The engagement of each row under its own action code (0 for ``none``)."""
        X = np.asarray(X, dtype=np.float64)
        codes = np.asarray(codes, dtype=np.int64)
        channel = np.asarray(self.action_channels, dtype=np.int64)[codes]
        out = np.zeros(len(X))
        sent = channel >= 0
        if sent.any():
            rows = np.column_stack([X[sent][:, self.input_columns], channel[sent]])
            out[sent] = self._probability(rows, threads)
        return out

    def _probability(self, rows: np.ndarray, threads: int) -> np.ndarray:
        """The booster's probabilities of ``rows``, through LightGBM's C API (a request's
        few rows one by one, serving.lgbm_predict).  Its trees compiled (serving/forest.py)
        were slower here: 103 µs for a request's 9 rows against LightGBM's 36 µs (124 trees
        of 31 leaves, categorical splits on the channel).  The raw scores and this sigmoid
        are the same for one row and for many, so a request and a batch agree to the bit
        (tested)."""
        fn = self._predictors.get(threads)
        if fn is None:
            fn = self._predictors[threads] = predictor(self.booster, "raw", threads)
        return _sigmoid(fn(rows))

    # ------------------------------------------------------------------ persistence
    def save(self, folder: Path, filename: str = "engagement.txt") -> dict[str, Any]:
        """Write the booster as LightGBM text; return its manifest for bundle.json."""
        self.booster.save_model(str(folder / filename))
        return {
            "file": filename,
            "inputs": list(self.inputs),
            "channels": list(self.channels),
            "action_channels": list(self.action_channels),
        }

    @classmethod
    def load(
        cls, folder: Path, manifest: Mapping[str, Any], feature_names: Sequence[str]
    ) -> EngagementModel:
        """Read it back, its inputs found by name among ``feature_names`` (the bundle's
        feature spec): ValueError naming any the spec does not have."""
        inputs = tuple(str(name) for name in manifest["inputs"])
        names = list(feature_names)
        missing = [name for name in inputs if name not in names]
        if missing:
            raise ValueError(f"engagement model reads features the spec lacks: {missing}")
        return cls(
            booster=lgb.Booster(model_file=str(folder / manifest["file"])),
            inputs=inputs,
            input_columns=tuple(names.index(name) for name in inputs),
            channels=tuple(str(c) for c in manifest["channels"]),
            action_channels=tuple(int(c) for c in manifest["action_channels"]),
        )


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))
