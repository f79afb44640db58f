"""Readable reasons for a recommendation: which features make this action pay.

The policy ranks actions by expected value against no action,

    score(a) = V * (p_conv(a) - p_conv(none)) - C * (p_churn(a) - p_churn(none)) - cost(a),

so a reason names a feature that moves that score (``V``: the catalog's conversion value
times the bundle's ``conversion_effect_scale``, as the engine weighs it).  For each
outcome, LightGBM's ``pred_contrib`` (SHAP, log-odds) splits the action's uplift in
log-odds, ``logit p(x, a) - logit p(x, none)``, over the features; each contribution is
then put in the score's units with the slope of the probability, ``V * p(1 - p)`` for
conversion and ``-C * p(1 - p)`` for churn (first order), so that a conversion reason and
a churn reason can be ranked against each other.  The text shows the log-odds
contribution and which odds it moves:
``ch_email_open_rate=0.42 raises conversion odds over no action (+0.31)``,
``days_since_last_event=12 lowers churn odds over no action (-0.20)``.

For ``none`` itself the reasons say why leaving the customer alone beats the best action
(``versus``, the best-scoring other eligible action): the same contributions with the
roles swapped, ``logit p(x, none) - logit p(x, versus)``, written "... over sms_offer".
In the ``offset`` and ``shared_offset`` formulations the pooled base model is common to
every action and cancels in every such difference, so only the small offset boosters are
explained: reasons that differ between actions, at a fraction of the cost of explaining
the whole models (SHAP of a base model costs about a millisecond per row).  Calibration is monotone, so
the raw models' contributions keep their sign.

A ``shared_offset`` on the probability scale (``OutcomeScorer.offset_scale``) adds its
raw score to the base's probability, so its contributions are already changes of the
probability: they are put in the score's units with ``V`` and ``-C`` alone, and the text
shows them in percentage points: ``engagement=64% raises conversion probability over no
action (+1.2 pp)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from features.compiled import jit
from features.schema import STAGES
from features.spec import FeatureSpec
from serving.bundle import Bundle
from serving.engagement import ENGAGEMENT_COLUMN
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
    engagement: Sequence[float] | np.ndarray | None = None,
) -> list[list[str]]:
    """Reasons for each action code in ``codes`` (see the module docstring), best first.

    ``x`` is one feature row in ``spec.feature_names`` order.  ``p_conversion`` and
    ``p_churn`` are the probabilities of each code (for the slopes); without them both
    outcomes are weighted by their value alone.  ``versus`` is the action ``none`` is
    compared with (None: ``none`` gets no reasons).  ``engagement``: every action's, as
    the decision read it (``RowDecision.engagement``), so that it is not computed again.
    Returns one list of at most ``top`` readable strings per code.
    """
    codes = [int(c) for c in codes]
    if top <= 0:
        return [[] for _ in codes]
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    wanted, pairs = _rows(codes, versus)
    given = None if engagement is None else np.asarray(engagement, dtype=np.float64)[wanted]
    with_action = bundle.conversion.model_rows(
        x[None, :], wanted, None if given is None else given[None, :]
    )
    objective = bundle.catalog.objective
    # The slopes stay in numpy, in the probabilities' own precision (float32 in, float32
    # slopes): computed in the kernel they would round differently and could swap ties.
    pc = np.full(len(codes), 0.5) if p_conversion is None else np.asarray(p_conversion)
    pch = np.full(len(codes), 0.5) if p_churn is None else np.asarray(p_churn)
    picks = _pick_top(
        _explained(bundle.conversion, with_action, wanted),
        _explained(bundle.churn, with_action, wanted),
        np.array(pairs),
        objective.conversion_value * bundle.conversion_effect_scale * _slope(bundle.conversion, pc),
        -objective.churn_cost * _slope(bundle.churn, pch),
        top,
    ).tolist()
    on_probability = [s.offset_scale == "probability" for s in (bundle.conversion, bundle.churn)]
    actions, n = bundle.conversion.actions, x.size
    columns = _columns(bundle.spec, bundle.conversion)
    labels: dict[int, str] = {}  # "name=value" of the features shown: codes share them
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
        for o, col, c in picks[i]:
            if o < 0:  # past the last pick
                break
            j = int(col)
            if j >= n:  # the candidate's own columns: its engagement, its action code
                # (none's reasons compare it with versus: versus's engagement is the one)
                row = wanted.index(code if code or versus is None else versus)
                value = float(code) if j == len(columns) - 1 else float(with_action[row, j])
                label = _label(bundle.spec, columns, j, value, actions)
            else:
                label = labels.get(j) or _label(bundle.spec, columns, j, float(x[j]), actions)
                labels[j] = label
            verb = "raises" if c > 0 else "lowers"
            if on_probability[int(o)]:
                size = f"{_OUTCOMES[int(o)]} probability{suffix} ({100 * c:+.1f} pp)"
            else:
                size = f"{_OUTCOMES[int(o)]} odds{suffix} ({c:+.2f})"
            reasons.append(f"{label} {verb} {size}")
        out.append(reasons)
    return out


def contributions(
    scorer: OutcomeScorer, x: np.ndarray, codes: Sequence[int], *, versus: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The model rows ``(x, action)`` (``(x, engagement, action)`` with an engagement
    model) and one outcome's contributions that :func:`explain` ranks.

    Returns two ``(len(codes), n_columns)`` arrays (the last column is the action).
    For code ``a > 0`` the row of contributions sums to ``logit p(x, a) - logit p(x, none)``
    of the raw model; for code 0, to ``logit p(x, none) - logit p(x, versus)`` (zeros when
    ``versus`` is None).  With a probability-scale offset, to the differences of ``p``
    itself (before its clip).
    """
    codes = [int(c) for c in codes]
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    wanted, pairs = _rows(codes, versus)
    with_action = scorer.model_rows(x[None, :], wanted)
    per = _explained(scorer, with_action, wanted)
    plus, minus = np.array(pairs).T
    out = per[plus] - per[minus]
    out[[c == 0 and versus is None for c in codes]] = 0.0
    return with_action[[wanted.index(c) for c in codes]], out


def _rows(codes: list[int], versus: int | None) -> tuple[list[int], list[tuple[int, int]]]:
    """The actions to explain, ``wanted`` (each code, ``none`` and ``versus``, once,
    ascending), and per code the positions in ``wanted`` of the two rows whose difference
    is its contributions: ``a - none`` for ``a > 0``, ``none - versus`` for 0 (``none -
    none`` without ``versus``: nothing)."""
    wanted = sorted({0, *codes, *([] if versus is None else [versus])})
    none = wanted.index(0)
    other = none if versus is None else wanted.index(versus)
    return wanted, [(wanted.index(c), none) if c else (none, other) for c in codes]


def _columns(spec: FeatureSpec, scorer: OutcomeScorer) -> list[str]:
    """The names of the model rows' columns: the features, the engagement, the action."""
    engagement = [] if scorer.engagement is None else [ENGAGEMENT_COLUMN]
    return [*spec.feature_names, *engagement, "action"]


def _explained(scorer: OutcomeScorer, with_action: np.ndarray, wanted: list[int]) -> np.ndarray:
    """Row i: the contribution of each column to ``wanted[i]``'s log-odds, leaving out any
    part common to all actions (the base model of the offset formulations), so that the
    rows' differences are the uplifts' contributions."""
    if scorer.formulation == "single":
        return scorer.contributions("all", with_action)
    if scorer.formulation == "shared_offset":
        return scorer.contributions("offset", with_action)
    # offset and per_action: one booster per action, fed the plain row (no action column;
    # these formulations have no engagement column either)
    n = with_action.shape[1] - 1
    per = np.zeros_like(with_action)
    for i, code in enumerate(wanted):
        per[i, :n] = scorer.contributions(scorer.actions[code], with_action[i : i + 1, :n])[0]
    return per


def _slope(scorer: OutcomeScorer, p: np.ndarray) -> np.ndarray:
    """What a unit of the scorer's contributions is worth in probability: ``p (1 - p)``
    for log-odds (first order), 1 for a probability-scale offset."""
    return p * (1 - p) if scorer.offset_scale == "log_odds" else np.ones_like(p)


@jit(nogil=True)
def _pick_top(
    conv: np.ndarray,
    churn: np.ndarray,
    pairs: np.ndarray,
    w_conv: np.ndarray,
    w_churn: np.ndarray,
    top: int,
) -> np.ndarray:
    """Per code i, the ``top`` (outcome, column) pairs with the largest effect on the score.

    The contributions of code i are ``per[a] - per[b]``, ``(a, b) = pairs[i]``, for ``per``
    = ``conv`` and ``churn`` (log-odds, as :func:`_explained`); times ``w_conv[i]`` and
    ``w_churn[i]`` they are in score units.  Ties go to the lower (outcome, column).  The
    action's own column (the last) comes last: "action=email_promo raises conversion odds
    over no action" is true but tells a marketer nothing, so it is shown only when no
    feature moves the uplift.

    Returns ``(codes, top, 3)``: (outcome, column, log-odds) per pick, best first, outcome
    -1 past the last.  One compiled pass and one array out: in numpy this was ~25 calls on
    small arrays per request, and each array a compiled function returns costs ~1 µs.
    """
    m, n_col = pairs.shape[0], conv.shape[1]
    picks = np.full((m, top, 3), -1.0)
    size = np.empty(top)
    for i in range(m):
        a, b = pairs[i, 0], pairs[i, 1]
        k = 0
        for o in range(2):
            w = w_conv[i] if o == 0 else w_churn[i]
            for col in range(n_col - 1):  # the features, in (outcome, column) order
                c = conv[a, col] - conv[b, col] if o == 0 else churn[a, col] - churn[b, col]
                v = abs(w * c)
                if not (abs(c) >= _ZERO and v >= 0.0):  # absent (or NaN): never shown
                    continue
                pos = k  # after every kept entry at least as large: ties keep the order
                while pos > 0 and size[pos - 1] < v:
                    pos -= 1
                if pos >= top:
                    continue
                for j in range(min(k, top - 1), pos, -1):
                    size[j] = size[j - 1]
                    picks[i, j] = picks[i, j - 1]
                size[pos] = v
                picks[i, pos, 0], picks[i, pos, 1], picks[i, pos, 2] = o, col, c
                k = min(k + 1, top)
        if k == 0:  # no feature moves the uplift: the action's own column, if it does
            best, best_v, best_c, last = -1, -1.0, 0.0, n_col - 1
            for o in range(2):
                w = w_conv[i] if o == 0 else w_churn[i]
                c = conv[a, last] - conv[b, last] if o == 0 else churn[a, last] - churn[b, last]
                v = abs(w * c) if abs(c) >= _ZERO else -1.0
                if np.isnan(v):  # as np.argmax and max: a NaN wins, and is not shown
                    best = -1
                    break
                if v > best_v:
                    best, best_v, best_c = o, v, c
            if best >= 0 and best_v >= 0.0:
                picks[i, 0, 0], picks[i, 0, 1], picks[i, 0, 2] = best, last, best_c
    return picks


def _label(
    spec: FeatureSpec, columns: Sequence[str], col: int, value: float, actions: Sequence[str]
) -> str:
    """``name=value`` of column ``col`` of the model rows (:func:`_columns`)."""
    name = columns[col]
    return f"{name}={_readable_value(spec, name, value, actions)}"


def _readable_value(spec: FeatureSpec, name: str, value: float, actions: Sequence[str]) -> str:
    """A feature value as a marketer reads it: tokens, stages and categories by name."""
    if name == "action":
        code = int(value)
        return actions[code] if 0 <= code < len(actions) else str(code)
    if math.isnan(value):  # (np.isnan costs ~0.7 µs on a Python float)
        return "missing"
    if name == ENGAGEMENT_COLUMN:  # the chance the candidate is opened or clicked
        return f"{value:.0%}"
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
