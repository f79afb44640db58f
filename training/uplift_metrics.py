"""Uplift evaluation: Qini and uplift curves, their normalised areas, uplift@k.

Definitions follow scikit-uplift (``sklift.metrics`` 0.5): customers are ranked by
predicted uplift, highest first, and the curves are evaluated at every distinct score
(tied scores enter together), starting from ``(0, 0)``. With ``N`` customers targeted,
of which ``N_T`` treated and ``N_C`` control, converting ``Y_T`` and ``Y_C``:

- Qini curve:   ``Y_T - Y_C * N_T / N_C``  (extra conversions among the treated so far)
- uplift curve: ``(Y_T / N_T - Y_C / N_C) * N``  (extra conversions had all N been treated)

Argument order differs from sklift on purpose: here it is ``(y, treatment, uplift)``;
sklift's is ``(y_true, uplift, treatment)``. Pass keywords when porting code.

``propensity`` (probability of treatment given the customer's features) turns every
count into an inverse-propensity-weighted one, for logs where treatment was not
randomised; ``None`` (default) assumes a randomised test and reproduces sklift exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Final, Literal

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = [
    "perfect_qini_curve",
    "perfect_uplift_curve",
    "plot_qini",
    "qini_auc_score",
    "qini_curve",
    "uplift_at_k",
    "uplift_auc_score",
    "uplift_curve",
]

FloatArray = npt.NDArray[np.float64]
Curve = tuple[FloatArray, FloatArray]

X_LABEL: Final[str] = "Customers targeted (share, ranked by predicted uplift)"
Y_LABEL: Final[str] = "Extra conversions vs. random targeting"


# --------------------------------------------------------------------------- validation


def _as_finite_1d(values: npt.ArrayLike, name: str) -> FloatArray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-dimensional, got shape {array.shape}")
    if array.dtype == bool:
        array = array.astype(np.float64)
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise ValueError(f"{name} must be numeric, got dtype {array.dtype}")
    array = array.astype(np.float64, copy=False)
    bad = ~np.isfinite(array)
    if bad.any():
        raise ValueError(f"{name} contains {int(bad.sum())} NaN or infinite value(s)")
    return array


def _validate(
    y: npt.ArrayLike,
    treatment: npt.ArrayLike,
    uplift: npt.ArrayLike | None,
    propensity: npt.ArrayLike | None,
) -> tuple[FloatArray, FloatArray, FloatArray | None, FloatArray | None]:
    """Check the inputs and return them as float arrays (``uplift``/weights may be None)."""
    named = {"y": y, "treatment": treatment}
    if uplift is not None:
        named["uplift"] = uplift
    if propensity is not None:
        named["propensity"] = propensity
    for name, value in named.items():
        if np.ndim(value) != 1:
            raise ValueError(f"{name} must be 1-dimensional, got shape {np.shape(value)}")
    lengths = {name: int(np.shape(value)[0]) for name, value in named.items()}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{name}={n}" for name, n in lengths.items())
        raise ValueError(f"{', '.join(lengths)} must have the same length; got {detail}")
    if lengths["y"] == 0:
        raise ValueError("y is empty")

    y_arr = _as_finite_1d(y, "y")
    t_arr = _as_finite_1d(treatment, "treatment")
    not_binary = (t_arr != 0) & (t_arr != 1)
    if not_binary.any():
        found = np.unique(t_arr[not_binary])[:5]
        raise ValueError(f"treatment must be 0 (control) or 1 (treated); found {found.tolist()}")
    n_treated = int(t_arr.sum())
    if n_treated == t_arr.shape[0]:
        raise ValueError("treatment is 1 for every row (all treated): no control group to compare")
    if n_treated == 0:
        raise ValueError(
            "treatment is 0 for every row (no one treated): no treated group to compare"
        )
    u_arr = None if uplift is None else _as_finite_1d(uplift, "uplift")

    weights = None
    if propensity is not None:
        p = _as_finite_1d(propensity, "propensity")
        outside = (p <= 0.0) | (p >= 1.0)
        if outside.any():
            raise ValueError(
                f"propensity must lie strictly in (0, 1): {int(outside.sum())} value(s) outside; "
                "a customer who could only ever be treated (or never) has no comparison"
            )
        # Inverse-propensity weights rebuild, within any slice of customers, the
        # treated/control comparison a randomised test would have given.
        weights = t_arr / p + (1.0 - t_arr) / (1.0 - p)
    return y_arr, t_arr, u_arr, weights


def _require_binary_y(y: FloatArray) -> None:
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError(
            "y must be binary (0/1) for the perfect curves and normalised scores, which "
            "assume each customer converts or not (as sklift's do)"
        )


def _descending_order(uplift: FloatArray) -> npt.NDArray[np.intp]:
    # sklift's order: a stable ascending sort, reversed. Among equal scores the row that
    # comes later in the input is therefore ranked first. Kept identical so uplift@k
    # values are comparable with sklift's when the cut falls inside a tie.
    return np.argsort(uplift, kind="mergesort")[::-1]


# ------------------------------------------------------------------------------- curves


def _cumulative(
    y: FloatArray, treatment: FloatArray, uplift: FloatArray, weights: FloatArray | None
) -> dict[str, FloatArray]:
    order = _descending_order(uplift)
    y_s, t_s, u_s = y[order], treatment[order], uplift[order]
    w_s = np.ones_like(y_s) if weights is None else weights[order]
    # One point per distinct score: customers with tied scores cannot be separated by
    # the model, so the curve only moves once the whole tie is targeted.
    thresholds = np.r_[np.flatnonzero(np.diff(u_s)), u_s.size - 1]
    n_all = (thresholds + 1).astype(np.float64)
    n_trmnt = np.cumsum(t_s)[thresholds]
    n_ctrl = n_all - n_trmnt
    w_trmnt = np.cumsum(w_s * t_s)[thresholds]
    w_ctrl = np.cumsum(w_s * (1.0 - t_s))[thresholds]
    y_trmnt = np.cumsum(w_s * t_s * y_s)[thresholds]
    y_ctrl = np.cumsum(w_s * (1.0 - t_s) * y_s)[thresholds]
    return {
        "n_all": n_all,
        "n_trmnt": n_trmnt,
        "n_ctrl": n_ctrl,
        "w_trmnt": w_trmnt,
        "w_ctrl": w_ctrl,
        "y_trmnt": y_trmnt,
        "y_ctrl": y_ctrl,
    }


def _safe_div(num: FloatArray, den: FloatArray) -> FloatArray:
    # sklift's convention: a group with nobody in it yet contributes 0.
    return np.divide(num, den, out=np.zeros_like(num), where=den != 0)


def _start_at_origin(x: FloatArray, values: FloatArray) -> Curve:
    return np.r_[0.0, x], np.r_[0.0, values]


def _qini_from_arrays(
    y: FloatArray, treatment: FloatArray, uplift: FloatArray, weights: FloatArray | None
) -> Curve:
    c = _cumulative(y, treatment, uplift, weights)
    # Y_T - Y_C * N_T / N_C; with weights each group's weighted total is rescaled to its
    # head count, so the units stay "conversions among the treated customers so far".
    values = c["y_trmnt"] * _safe_div(c["n_trmnt"], c["w_trmnt"]) - c["y_ctrl"] * _safe_div(
        c["n_trmnt"], c["w_ctrl"]
    )
    return _start_at_origin(c["n_all"], values)


def _uplift_from_arrays(
    y: FloatArray, treatment: FloatArray, uplift: FloatArray, weights: FloatArray | None
) -> Curve:
    c = _cumulative(y, treatment, uplift, weights)
    values = (_safe_div(c["y_trmnt"], c["w_trmnt"]) - _safe_div(c["y_ctrl"], c["w_ctrl"])) * c[
        "n_all"
    ]
    return _start_at_origin(c["n_all"], values)


def qini_curve(
    y: npt.ArrayLike,
    treatment: npt.ArrayLike,
    uplift: npt.ArrayLike,
    *,
    propensity: npt.ArrayLike | None = None,
) -> Curve:
    """Qini curve, as ``sklift.metrics.qini_curve``.

    At each distinct predicted-uplift threshold, with the ``N`` customers scoring at or
    above it: ``Y_T - Y_C * N_T / N_C``, the treated group's conversions minus what the
    control group's conversion rate predicts for that many treated customers.

    Parameters
    ----------
    y : array of shape (n,)
        Outcome (binary conversion or a continuous value such as revenue).
    treatment : array of {0, 1}, shape (n,)
        1 if the customer received the action, 0 if held out (no action).
    uplift : array of shape (n,)
        Predicted uplift; higher means "contact first".
    propensity : array of shape (n,), optional
        Probability each customer had of being treated, in (0, 1), for non-randomised
        logs; counts become inverse-propensity weighted. ``None``: randomised test.

    Returns
    -------
    x : numpy.ndarray
        Number of customers targeted, starting at 0.
    qini : numpy.ndarray
        Curve values, starting at 0.
    """
    y_arr, t_arr, u_arr, weights = _validate(y, treatment, uplift, propensity)
    assert u_arr is not None
    return _qini_from_arrays(y_arr, t_arr, u_arr, weights)


def uplift_curve(
    y: npt.ArrayLike,
    treatment: npt.ArrayLike,
    uplift: npt.ArrayLike,
    *,
    propensity: npt.ArrayLike | None = None,
) -> Curve:
    """Uplift curve, as ``sklift.metrics.uplift_curve``.

    At each distinct threshold: ``(Y_T / N_T - Y_C / N_C) * N``, the difference in
    conversion rate among the targeted customers scaled to their number. Parameters and
    returns as in :func:`qini_curve`.
    """
    y_arr, t_arr, u_arr, weights = _validate(y, treatment, uplift, propensity)
    assert u_arr is not None
    return _uplift_from_arrays(y_arr, t_arr, u_arr, weights)


def perfect_qini_curve(
    y: npt.ArrayLike,
    treatment: npt.ArrayLike,
    *,
    negative_effect: bool = True,
    propensity: npt.ArrayLike | None = None,
) -> Curve:
    """Best achievable Qini curve, as ``sklift.metrics.perfect_qini_curve``.

    With ``negative_effect=True`` it is the Qini curve of the oracle ranking
    ``y*t - y*(1-t)``: treated converters first, control converters (people who convert
    anyway, or whom the action would put off) last. With ``False`` it rises straight to
    the total effect and stays flat, ignoring harm. Requires binary ``y``.
    """
    if not isinstance(negative_effect, bool):
        raise TypeError(f"negative_effect must be bool, got {type(negative_effect).__name__}")
    y_arr, t_arr, _, weights = _validate(y, treatment, None, propensity)
    _require_binary_y(y_arr)
    if negative_effect:
        return _qini_from_arrays(y_arr, t_arr, y_arr * t_arr - y_arr * (1.0 - t_arr), weights)
    # Total effect = end point of any Qini curve (all customers targeted).
    total = float(_qini_from_arrays(y_arr, t_arr, np.zeros_like(y_arr), weights)[1][-1])
    if total < 0:
        # The curve would run backwards along x (sklift then fails inside sklearn's auc).
        raise ValueError(
            f"the overall effect in y is negative ({total:.6g} conversions): a perfect curve "
            "without negative effects is undefined; use negative_effect=True"
        )
    n = float(y_arr.shape[0])
    return np.array([0.0, total, n]), np.array([0.0, total, total])


def perfect_uplift_curve(
    y: npt.ArrayLike,
    treatment: npt.ArrayLike,
    *,
    propensity: npt.ArrayLike | None = None,
) -> Curve:
    """Best achievable uplift curve, as ``sklift.metrics.perfect_uplift_curve``.

    The oracle ranks treated converters and control non-converters first; sklift breaks
    the order between those two kinds by which of control converters / treated
    non-converters is more common. Requires binary ``y``.
    """
    y_arr, t_arr, _, weights = _validate(y, treatment, None, propensity)
    _require_binary_y(y_arr)
    w = np.ones_like(y_arr) if weights is None else weights
    control_responders = float(np.sum(w * ((y_arr == 1) & (t_arr == 0))))
    treated_non_responders = float(np.sum(w * ((y_arr == 0) & (t_arr == 1))))
    summand = y_arr if control_responders > treated_non_responders else t_arr
    oracle = 2.0 * (y_arr == t_arr) + summand
    return _uplift_from_arrays(y_arr, t_arr, oracle, weights)


def _normalised_area(actual: Curve, perfect: Curve) -> float:
    x_p, y_p = perfect
    # Random targeting: the straight line from nobody to everybody.
    baseline = np.trapezoid([0.0, y_p[-1]], [0.0, x_p[-1]])
    perfect_area = float(np.trapezoid(y_p, x_p) - baseline)
    actual_area = float(np.trapezoid(actual[1], actual[0]) - baseline)
    if perfect_area == 0.0:
        # No ranking can beat random (e.g. nobody converted): the ratio is undefined.
        return float("nan")
    return actual_area / perfect_area


def qini_auc_score(
    y: npt.ArrayLike,
    treatment: npt.ArrayLike,
    uplift: npt.ArrayLike,
    *,
    negative_effect: bool = True,
    propensity: npt.ArrayLike | None = None,
) -> float:
    """Normalised area under the Qini curve (Qini coefficient), as sklift computes it.

    ``(AUC(model) - AUC(random)) / (AUC(perfect) - AUC(random))`` where ``random`` is the
    straight line from ``(0, 0)`` to the perfect curve's end point and ``perfect`` is
    :func:`perfect_qini_curve`. 1 = oracle ranking, 0 = no better than random, negative =
    worse than random. Requires binary ``y``; NaN if the perfect curve has no area above
    random. Parameters as in :func:`qini_curve` and :func:`perfect_qini_curve`.
    """
    y_arr, t_arr, u_arr, weights = _validate(y, treatment, uplift, propensity)
    assert u_arr is not None
    actual = _qini_from_arrays(y_arr, t_arr, u_arr, weights)
    perfect = perfect_qini_curve(
        y_arr, t_arr, negative_effect=negative_effect, propensity=propensity
    )
    return _normalised_area(actual, perfect)


def uplift_auc_score(
    y: npt.ArrayLike,
    treatment: npt.ArrayLike,
    uplift: npt.ArrayLike,
    *,
    propensity: npt.ArrayLike | None = None,
) -> float:
    """Normalised area under the uplift curve (AUUC), as sklift computes it.

    Same normalisation as :func:`qini_auc_score`, with :func:`uplift_curve` and
    :func:`perfect_uplift_curve`. Requires binary ``y``.
    """
    y_arr, t_arr, u_arr, weights = _validate(y, treatment, uplift, propensity)
    assert u_arr is not None
    actual = _uplift_from_arrays(y_arr, t_arr, u_arr, weights)
    perfect = perfect_uplift_curve(y_arr, t_arr, propensity=propensity)
    return _normalised_area(actual, perfect)


# ---------------------------------------------------------------------------- uplift@k


def _weighted_mean(values: FloatArray, weights: FloatArray, group: str, strategy: str) -> float:
    if values.size == 0:
        # sklift returns NaN here (mean of an empty slice); an error says why.
        raise ValueError(
            f"no {group} customers among the top k with strategy={strategy!r}; increase k"
        )
    return float(np.average(values, weights=weights))


def uplift_at_k(
    y: npt.ArrayLike,
    treatment: npt.ArrayLike,
    uplift: npt.ArrayLike,
    k: float = 0.3,
    strategy: Literal["overall", "by_group"] = "by_group",
    *,
    propensity: npt.ArrayLike | None = None,
) -> float:
    """Treated minus control conversion rate among the top-k ranked customers.

    Same formula as ``sklift.metrics.uplift_at_k`` (0.5):

    - ``"overall"``: take the first ``int(n * k)`` customers by predicted uplift (both
      groups together), then mean(y | treated) - mean(y | control) among them.
    - ``"by_group"``: take the first ``int(n_treated * k)`` treated and the first
      ``int(n_control * k)`` control customers, each ranked within its own group, then
      the same difference. Each group keeps its share of the test, so the two rates
      describe comparable top-k slices even when the model's ranking is correlated with
      treatment.

    sklift has *no* default strategy (it must be passed); the default here is
    ``"by_group"``. Pass it explicitly when comparing with a published number. Ties in
    ``uplift`` are ordered as sklift orders them (reversed stable sort: among equal
    scores, the later row first), so results match sklift exactly.

    Parameters
    ----------
    y, treatment, uplift, propensity
        As in :func:`qini_curve`. With ``propensity`` the two means are
        inverse-propensity weighted.
    k : float or int, default 0.3
        A float in (0, 1): share of customers. An int in (0, n): number of customers
        (per group for ``"by_group"``, as in sklift).
    strategy : {"overall", "by_group"}, default "by_group"

    Returns
    -------
    float

    Raises
    ------
    ValueError
        Bad inputs, ``k`` out of range, or a group with nobody in the top k (sklift
        would return NaN there).
    """
    if strategy not in ("overall", "by_group"):
        raise ValueError(f"strategy must be 'overall' or 'by_group', got {strategy!r}")
    y_arr, t_arr, u_arr, weights = _validate(y, treatment, uplift, propensity)
    assert u_arr is not None
    n = y_arr.shape[0]
    k_kind = np.asarray(k).dtype.kind
    if k_kind not in ("i", "u", "f") or isinstance(k, bool):
        raise ValueError(f"k must be a float in (0, 1) or an int in (0, {n}), got {k!r}")
    if (k_kind == "f" and not 0.0 < k < 1.0) or (k_kind != "f" and not 0 < k < n):
        raise ValueError(f"k must be a float in (0, 1) or an int in (0, {n}), got {k!r}")

    order = _descending_order(u_arr)
    y_s, t_s = y_arr[order], t_arr[order]
    w_s = np.ones_like(y_s) if weights is None else weights[order]

    if strategy == "overall":
        n_top = int(n * k) if k_kind == "f" else int(k)
        y_top, t_top, w_top = y_s[:n_top], t_s[:n_top], w_s[:n_top]
        treated, control = t_top == 1, t_top == 0
        rate_t = _weighted_mean(y_top[treated], w_top[treated], "treated", strategy)
        rate_c = _weighted_mean(y_top[control], w_top[control], "control", strategy)
        return rate_t - rate_c

    treated, control = t_s == 1, t_s == 0
    n_treated, n_control = int(treated.sum()), int(control.sum())
    if k_kind == "f":
        k_t, k_c = int(n_treated * k), int(n_control * k)
    else:
        k_t = k_c = int(k)
        if k_c > n_control:
            raise ValueError(f"k={k} exceeds the number of control customers ({n_control})")
        if k_t > n_treated:
            raise ValueError(f"k={k} exceeds the number of treated customers ({n_treated})")
    rate_t = _weighted_mean(y_s[treated][:k_t], w_s[treated][:k_t], "treated", strategy)
    rate_c = _weighted_mean(y_s[control][:k_c], w_s[control][:k_c], "control", strategy)
    return rate_t - rate_c


# -------------------------------------------------------------------------------- plot


def plot_qini(
    ax: Axes,
    curves: Mapping[str, Curve],
    *,
    title: str = "Qini curve: who to contact first",
    x_label: str = X_LABEL,
    y_label: str = Y_LABEL,
    random_baseline: bool = True,
) -> Axes:
    """Draw Qini curves for a non-specialist reader.

    The x axis is the share of customers contacted, ranked by the model; the y axis the
    extra conversions the contact produced. The dashed diagonal is what contacting the
    same share at random would produce; a curve above it means the ranking helps.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        Where to draw.
    curves : mapping of str to (x, y)
        Legend label to a curve from :func:`qini_curve` (or :func:`perfect_qini_curve`).
        ``x`` is converted to a share by dividing by its last value.
    title, x_label, y_label : str
        Texts; the defaults are written for marketers.
    random_baseline : bool, default True
        Draw the random-targeting diagonal, from ``(0, 0)`` to the end point of the first
        curve (all curves are assumed to come from the same evaluation set).

    Returns
    -------
    matplotlib.axes.Axes
    """
    if len(curves) == 0:
        raise ValueError("curves is empty: pass at least one (x, y) curve")
    end_value: float | None = None
    for label, (x, values) in curves.items():
        x_arr, v_arr = np.asarray(x, dtype=np.float64), np.asarray(values, dtype=np.float64)
        if x_arr.shape != v_arr.shape or x_arr.ndim != 1 or x_arr.size < 2:
            raise ValueError(f"curves[{label!r}] must be two 1-d arrays of equal length >= 2")
        if x_arr[-1] <= 0:
            raise ValueError(f"curves[{label!r}] x must end at a positive number of customers")
        ax.plot(x_arr / x_arr[-1], v_arr, label=label, linewidth=2)
        if end_value is None:
            end_value = float(v_arr[-1])
    if random_baseline and end_value is not None:
        ax.plot(
            [0.0, 1.0], [0.0, end_value], linestyle="--", color="grey", label="Random targeting"
        )
    ax.axhline(0.0, color="black", linewidth=0.5)
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.set_title(title)
    ax.legend(loc="best")
    ax.grid(True, alpha=0.3)
    return ax
