"""Readable reasons for a recommendation: which features make this action pay.

The policy ranks actions by expected value against no action,

    score(a) = V * (p_conv(a) - p_conv(none)) - C * (p_churn(a) - p_churn(none)) - cost(a),

so a reason names a feature that moves that score.  For each outcome, LightGBM's
``pred_contrib`` (SHAP, log-odds) splits the action's uplift in log-odds,
``logit p(x, a) - logit p(x, none)``, over the features; each contribution is then put in
the score's units with the slope of the probability, ``V * p(1 - p)`` for conversion and
``-C * p(1 - p)`` for churn (first order), so that a conversion reason and a churn reason
can be ranked against each other.  The text shows the log-odds contribution and which
odds it moves: ``ch_email_open_rate=0.42 raises conversion odds over no action (+0.31)``,
``days_since_last_event=12 lowers churn odds over no action (-0.20)``.

For ``none`` itself the reasons say why leaving the customer alone beats the best action
(``versus``, the best-scoring other eligible action): the same contributions with the
roles swapped, ``logit p(x, none) - logit p(x, versus)``, written "... over sms_offer".
In the ``offset`` and ``shared_offset`` formulations the pooled base model is common to
every action and cancels in every such difference, so only the small offset boosters are
explained: reasons that differ between actions, at a fraction of the cost of explaining
the whole models (SHAP of a base model costs about a millisecond per row).  Calibration is monotone, so
the raw models' contributions keep their sign.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from features.compiled import jit
from features.schema import STAGES
from features.spec import FeatureSpec
from serving.bundle import Bundle
from serving.scoring import OutcomeScorer

__all__ = ["contributions", "explain"]

#: Contributions smaller than this (log-odds) are treated as none.
_ZERO = 1e-12
#: The outcomes in the order of the contribution arrays.
_OUTCOMES = ("conversion", "churn")


def explain(
    bundle: Bundle,
    x: np.ndarray,
    codes: Sequence[int],
    *,
    p_conversion: Sequence[float] | np.ndarray | None = None,
    p_churn: Sequence[float] | np.ndarray | None = None,
    versus: int | None = None,
    top: int = 3,
) -> list[list[str]]:
    """Reasons for each action code in ``codes`` (see the module docstring), best first.

    ``x`` is one feature row in ``spec.feature_names`` order.  ``p_conversion`` and
    ``p_churn`` are the probabilities of each code (for the slopes); without them both
    outcomes are weighted by their value alone.  ``versus`` is the action ``none`` is
    compared with (None: ``none`` gets no reasons).  Returns one list of at most ``top``
    readable strings per code.
    """
    codes = [int(c) for c in codes]
    objective = bundle.catalog.objective
    rows, conv = contributions(bundle.conversion, x, codes, versus=versus)
    _, churn = contributions(bundle.churn, x, codes, versus=versus)
    actions = bundle.conversion.actions
    pc = np.full(len(codes), 0.5) if p_conversion is None else np.asarray(p_conversion)
    pch = np.full(len(codes), 0.5) if p_churn is None else np.asarray(p_churn)
    weight = np.column_stack(
        [objective.conversion_value * pc * (1 - pc), -objective.churn_cost * pch * (1 - pch)]
    )
    logodds = np.stack([conv, churn], axis=1)  # (codes, outcomes, columns)
    picked = _top_columns(logodds, weight, top)
    names = bundle.spec.feature_names
    out: list[list[str]] = []
    for i, code in enumerate(codes):
        if code != 0:
            suffix = " over no action"
        elif versus is not None:
            suffix = f" over {actions[versus]}"
        else:  # nothing else is eligible: the suppressions are the reasons
            out.append([])
            continue
        reasons = []
        for o, col in picked[i]:
            name = names[col] if col < len(names) else "action"
            shown = _readable_value(bundle.spec, name, float(rows[i, col]), actions)
            c = float(logodds[i, o, col])
            verb = "raises" if c > 0 else "lowers"
            reasons.append(f"{name}={shown} {verb} {_OUTCOMES[o]} odds{suffix} ({c:+.2f})")
        out.append(reasons)
    return out


def contributions(
    scorer: OutcomeScorer, x: np.ndarray, codes: Sequence[int], *, versus: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The model rows ``(x, action)`` and one outcome's contributions that :func:`explain`
    ranks.

    Returns two ``(len(codes), n_features + 1)`` arrays (the last column is the action).
    For code ``a > 0`` the row of contributions sums to ``logit p(x, a) - logit p(x, none)``
    of the raw model; for code 0, to ``logit p(x, none) - logit p(x, versus)`` (zeros when
    ``versus`` is None).
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    n = x.size
    # Rows to explain: every requested action plus `none` (code 0), each once.
    wanted = sorted({0, *codes, *([] if versus is None else [versus])})
    at = {c: i for i, c in enumerate(wanted)}
    with_action = np.empty((len(wanted), n + 1))
    with_action[:, :n] = x
    with_action[:, n] = wanted
    # per[i, j]: contribution of column j to wanted[i]'s log-odds, leaving out any part
    # common to all actions (the base model of the offset formulations).  The last row
    # stays zero: the "versus" of `none` when there is none.
    per = np.zeros((len(wanted) + 1, n + 1))
    if scorer.formulation == "single":
        per[:-1] = scorer.contributions("all", with_action)
    elif scorer.formulation == "shared_offset":
        per[:-1] = scorer.contributions("offset", with_action)
    else:  # offset and per_action: one booster per action, fed the plain row
        for i, code in enumerate(wanted):
            per[i, :n] = scorer.contributions(scorer.actions[code], x[None, :])[0]
    # Code a > 0: a minus none.  Code 0: none minus versus (zero minus zero without one).
    none, other = at[0], (-1 if versus is None else at[versus])
    plus = [at[c] if c else none for c in codes]
    minus = [none if c else other for c in codes]
    out = per[plus] - per[minus]
    out[[c == 0 and versus is None for c in codes]] = 0.0
    return with_action[[at[c] for c in codes]], out


def _top_columns(logodds: np.ndarray, weight: np.ndarray, top: int) -> list[list[tuple[int, int]]]:
    """Per code, the ``top`` (outcome, column) pairs with the largest effect on the score.

    ``logodds`` is ``(codes, outcomes, columns)``: contributions in log-odds; times
    ``weight`` ``(codes, outcomes)`` they are in score units.  Ties go to the lower
    (outcome, column).  The action's own column comes last: "action=email_promo raises
    conversion odds over no action" is true but tells a marketer nothing, so it is shown
    only when no feature moves the uplift.
    """
    if top <= 0:
        return [[] for _ in range(logodds.shape[0])]
    picked = np.empty((logodds.shape[0], top, 2), dtype=np.int64)
    counts = _pick_top(np.ascontiguousarray(logodds), np.ascontiguousarray(weight), picked)
    return [[(int(o), int(c)) for o, c in picked[i, : counts[i]]] for i in range(len(counts))]


@jit(nogil=True)
def _pick_top(logodds: np.ndarray, weight: np.ndarray, picked: np.ndarray) -> np.ndarray:
    """:func:`_top_columns` in one compiled pass: it was ~15 numpy calls on a 4 x 340 array
    per request.  Fills ``picked[i, :count[i]]`` and returns ``count``."""
    m, n_out, n_col = logodds.shape
    top = picked.shape[1]
    counts = np.zeros(m, dtype=np.int64)
    size = np.empty(top)
    for i in range(m):
        k = 0
        for o in range(n_out):
            for col in range(n_col - 1):  # the features, in (outcome, column) order
                c = logodds[i, o, col]
                v = abs(weight[i, o] * c)
                if not (abs(c) >= _ZERO and v >= 0.0):  # absent (or NaN): never shown
                    continue
                pos = k  # after every kept entry at least as large: ties keep the order
                while pos > 0 and size[pos - 1] < v:
                    pos -= 1
                if pos >= top:
                    continue
                for j in range(min(k, top - 1), pos, -1):
                    size[j] = size[j - 1]
                    picked[i, j, 0], picked[i, j, 1] = picked[i, j - 1, 0], picked[i, j - 1, 1]
                size[pos] = v
                picked[i, pos, 0], picked[i, pos, 1] = o, col
                k = min(k + 1, top)
        if k == 0:  # no feature moves the uplift: the action's own column, if it does
            best, best_v = -1, -1.0
            for o in range(n_out):
                c = logodds[i, o, n_col - 1]
                v = abs(weight[i, o] * c) if abs(c) >= _ZERO else -1.0
                if np.isnan(v):  # as np.argmax and max: a NaN wins, and is not shown
                    best = -1
                    break
                if v > best_v:
                    best, best_v = o, v
            if best >= 0 and best_v >= 0.0:
                picked[i, 0, 0], picked[i, 0, 1] = best, n_col - 1
                k = 1
        counts[i] = k
    return counts


def _readable_value(spec: FeatureSpec, name: str, value: float, actions: Sequence[str]) -> str:
    """A feature value as a marketer reads it: tokens, stages and categories by name."""
    if name == "action":
        code = int(value)
        return actions[code] if 0 <= code < len(actions) else str(code)
    if np.isnan(value):
        return "missing"
    if name.startswith("seq_token_"):
        code = int(value)
        if code == 0:
            return "no event"
        if 1 <= code <= len(spec.token_vocabulary):
            return spec.token_vocabulary[code - 1]
        return "other"
    if name == "journey_stage" and 0 <= int(value) < len(STAGES):
        return STAGES[int(value)]
    if name.startswith("attr_") and name[5:] in spec.static_categorical:
        vocab = spec.static_categorical[name[5:]]
        return vocab[int(value)] if 0 <= int(value) < len(vocab) else "missing"
    return f"{value:.3g}"
