"""LightGBM predictions straight through its C API, for the request path.

``Booster.predict`` spends 50-60 µs per call in Python before any tree is walked: it
builds an ``_InnerPredictor``, deep-copies the parameters, checks the input and allocates
the output.  A decision makes four or five small calls (a base and an offset booster per
outcome, plus the reasons), so that overhead was a fifth of the whole request.  Here the
same C function, ``LGBM_BoosterPredictForMat``, is called directly on the booster's
handle with a C-contiguous float64 matrix: the result is bit-for-bit what
``Booster.predict`` returns for that matrix (tests/serving/test_lgbm_predict.py checks it),
at 20-35 µs a call.

Up to :data:`SINGLE_ROW_MAX` rows go one by one through LightGBM's single-row API
(``LGBM_BoosterPredictForMatSingleRowFast``): ``LGBM_BoosterPredictForMat`` parses its
parameter string and sets up a predictor at every call, ~15 µs of a one-row prediction,
which the fast API does once (``...FastInit``).  Measured on the demo bundle: a base
booster's one row 23.8 → 9.1 µs, an offset booster's 11 rows 40.1 → 28.1 µs, the same
values bit for bit (the same predictor code runs).  A fast handle serializes the threads
that share it (LightGBM's ``SingleRowPredictor`` locks its buffers), so, as LightGBM
recommends, each thread gets its own.

This leans on ``lightgbm.basic._LIB`` (the loaded shared library), a private name that has
been stable since LightGBM 2.  If a future release drops it, :func:`predictor` returns
the plain ``Booster.predict`` path, so serving keeps working, only slower.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from typing import Any, Literal

import lightgbm as lgb
import numpy as np

__all__ = ["SINGLE_ROW_MAX", "Kind", "predictor"]

Kind = Literal["normal", "raw", "contrib"]
# LightGBM's c_api.h: C_API_PREDICT_NORMAL, _RAW_SCORE, _CONTRIB and C_API_DTYPE_FLOAT64.
_PREDICT_TYPE = {"normal": 0, "raw": 1, "contrib": 3}
_DTYPE_FLOAT64 = 1
#: Up to this many rows (a request's candidates), predict row by row with the fast API:
#: each row then costs ~2 µs of Python, less than the per-call setup it saves.
SINGLE_ROW_MAX = 16

Predict = Callable[[np.ndarray], np.ndarray]


def predictor(booster: lgb.Booster, kind: Kind, threads: int = 1) -> Predict:
    """A function ``X -> predictions`` for a binary booster (one output per row, or
    ``n_features + 1`` contributions per row for ``contrib``)."""
    try:
        from lightgbm.basic import _LIB, _safe_call
    except ImportError:  # pragma: no cover - depends on the installed LightGBM
        return _fallback(booster, kind, threads)
    handle = booster._handle
    n_features = booster.num_feature()
    width = n_features + 1 if kind == "contrib" else 1
    predict_type = ctypes.c_int(_PREDICT_TYPE[kind])
    # As Booster.predict does: the best iteration when early stopping set one, else all
    # (0 and below mean "all" to the C API).
    iterations = ctypes.c_int(int(booster.best_iteration or 0))
    params = ctypes.c_char_p(f"num_threads={threads}".encode())

    local = threading.local()  # this booster's fast handle, per thread

    def predict(X: np.ndarray) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != n_features:
            raise ValueError(f"expected a (n, {n_features}) matrix, got shape {X.shape}")
        n = X.shape[0]
        out = np.empty(n * width, dtype=np.float64)
        if n == 0:
            return out.reshape(0, width) if kind == "contrib" else out
        if kind != "contrib" and n <= SINGLE_ROW_MAX:
            fast: _FastConfig | None = getattr(local, "fast", None)
            if fast is None:
                fast = local.fast = _FastConfig(booster, predict_type, iterations, params)
            return fast.predict(X, out)
        out_len = ctypes.c_int64(0)
        _safe_call(
            _LIB.LGBM_BoosterPredictForMat(
                handle,
                X.ctypes.data_as(ctypes.c_void_p),
                ctypes.c_int(_DTYPE_FLOAT64),
                ctypes.c_int32(n),
                ctypes.c_int32(n_features),
                ctypes.c_int(1),  # row-major
                predict_type,
                ctypes.c_int(0),  # start iteration
                iterations,
                params,
                ctypes.byref(out_len),
                out.ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
            )
        )
        if out_len.value != out.size:
            raise RuntimeError(f"LightGBM wrote {out_len.value} values, expected {out.size}")
        return out.reshape(n, width) if kind == "contrib" else out

    return predict


class _FastConfig:
    """A ``FastConfigHandle``: LightGBM's prediction setup for single rows, done once."""

    def __init__(
        self, booster: lgb.Booster, predict_type: ctypes.c_int, iterations: ctypes.c_int,
        params: ctypes.c_char_p,
    ) -> None:  # fmt: skip
        from lightgbm.basic import _LIB, _safe_call

        self._lib, self._check = _LIB, _safe_call
        self._predict_row = _LIB.LGBM_BoosterPredictForMatSingleRowFast
        self.booster = booster  # the handle points into the booster: keep it alive
        self.handle = ctypes.c_void_p()
        _safe_call(
            _LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
                booster._handle,
                predict_type,
                ctypes.c_int(0),  # start iteration
                iterations,
                ctypes.c_int(_DTYPE_FLOAT64),
                ctypes.c_int32(booster.num_feature()),
                params,
                ctypes.byref(self.handle),
            )
        )

    def predict(self, X: np.ndarray, out: np.ndarray) -> np.ndarray:
        """One output per row of the C-contiguous float64 ``X``, written into ``out``."""
        out_len = ctypes.c_int64(0)
        row, stride = X.ctypes.data, X.strides[0]
        dest = out.ctypes.data
        for i in range(X.shape[0]):
            self._check(
                self._predict_row(
                    self.handle,
                    ctypes.c_void_p(row + i * stride),
                    ctypes.byref(out_len),
                    ctypes.c_void_p(dest + 8 * i),
                )
            )
            if out_len.value != 1:
                raise RuntimeError(f"LightGBM wrote {out_len.value} values for one row")
        return out

    def __del__(self) -> None:
        if self.handle:
            self._lib.LGBM_FastConfigFree(self.handle)


def _fallback(booster: lgb.Booster, kind: Kind, threads: int) -> Predict:
    options: dict[str, Any] = {"num_threads": threads}
    if kind == "raw":
        options["raw_score"] = True
    elif kind == "contrib":
        options["pred_contrib"] = True

    def predict(X: np.ndarray) -> np.ndarray:
        return np.asarray(booster.predict(X, **options), dtype=np.float64)

    return predict
