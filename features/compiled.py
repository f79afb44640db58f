"""``jit``: numba's ``njit(cache=True)`` that still works where nothing is writable.

The request path compiles two loops with numba: the feature row
(features/online_kernel.py) and SHAP reasons (serving/tree_shap.py).  numba looks for a
writable cache folder (``NUMBA_CACHE_DIR``, the package's ``__pycache__``, the user's
cache folder) when a function is decorated with ``cache=True``, and raises if there is
none.  A read-only deployment must still import and serve: it then compiles at every
process start, which the service does at model load, before the first request.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numba

__all__ = ["jit"]


def jit(fn: Callable[..., Any] | None = None, **options: Any) -> Any:
    """``numba.njit(cache=True, **options)``, or uncached when no cache folder is writable.

    Use as ``@jit`` or ``@jit(nogil=True)``.
    """

    def wrap(f: Callable[..., Any]) -> Any:
        try:
            return numba.njit(cache=True, **options)(f)
        except RuntimeError as exc:  # "cannot cache function ...: no locator available"
            warnings.warn(f"numba cache disabled: {exc}", RuntimeWarning, stacklevel=3)
            return numba.njit(**options)(f)

    return wrap if fn is None else wrap(fn)
