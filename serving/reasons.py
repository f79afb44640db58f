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

from features.schema import STAGES
from features.spec import FeatureSpec
from serving.bundle import Bundle
from serving.scoring import OutcomeScorer

__all__ = ["contributions", "explain"]

#: Contributions smaller than this (log-odds) are treated as none.
_ZERO = 1e-12


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
    weight_conv = objective.conversion_value * pc * (1 - pc)
    weight_churn = -objective.churn_cost * pch * (1 - pch)
    names = [*bundle.spec.feature_names, "action"]
    out: list[list[str]] = []
    for i, code in enumerate(codes):
        if code != 0:
            suffix = " over no action"
        elif versus is not None:
            suffix = f" over {actions[versus]}"
        else:  # nothing else is eligible: the suppressions are the reasons
            out.append([])
            continue
        candidates = [
            ("conversion", conv[i], weight_conv[i] * conv[i]),
            ("churn", churn[i], weight_churn[i] * churn[i]),
        ]
        out.append(_readable(bundle.spec, names, rows[i], candidates, suffix, top, actions))
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
    x = np.asarray(x, dtype=np.float64).reshape(1, -1)
    n = x.shape[1]
    # Rows to explain: every requested action plus `none` (code 0), each once.
    wanted = sorted({0, *codes, *([] if versus is None else [versus])})
    at = {c: i for i, c in enumerate(wanted)}
    with_action = np.hstack(
        [np.repeat(x, len(wanted), axis=0), np.asarray(wanted, dtype=np.float64)[:, None]]
    )
    # per[i, j]: contribution of column j to wanted[i]'s log-odds, leaving out any part
    # common to all actions (the base model of the offset formulations).
    per = np.zeros((len(wanted), n + 1))
    if scorer.formulation == "single":
        per[:] = scorer.contributions("all", with_action)
    elif scorer.formulation == "shared_offset":
        per[:] = scorer.contributions("offset", with_action)
    else:  # offset and per_action: one booster per action, fed the plain row
        for i, code in enumerate(wanted):
            per[i, :n] = scorer.contributions(scorer.actions[code], x)[0]
    out = np.empty((len(codes), n + 1))
    for i, code in enumerate(codes):
        if code == 0:
            out[i] = 0.0 if versus is None else per[at[0]] - per[at[versus]]
        else:
            out[i] = per[at[code]] - per[at[0]]
    return with_action[[at[c] for c in codes]], out


def _readable(
    spec: FeatureSpec,
    names: Sequence[str],
    row: np.ndarray,
    candidates: Sequence[tuple[str, np.ndarray, np.ndarray]],
    suffix: str,
    top: int,
    actions: Sequence[str],
) -> list[str]:
    """The ``top`` contributions with the largest effect on the score, as text.

    ``candidates`` holds, per outcome, its log-odds contributions and the same in score
    units.  The action's own column comes last: "action=email_promo raises conversion
    odds over no action" is true but tells a marketer nothing, so it is shown only when
    no feature moves the uplift.
    """
    # All (outcome, column) pairs at once in numpy; text is built for the chosen few only.
    outcomes = [outcome for outcome, _, _ in candidates]
    logodds = np.stack([lo for _, lo, _ in candidates])  # (n_outcomes, n_columns)
    effect = np.abs(np.stack([e for _, _, e in candidates]))
    present = np.abs(logodds) >= _ZERO
    features = np.where(present[:, :-1], effect[:, :-1], -1.0).ravel()
    order = np.argsort(-features, kind="stable")[:top]
    picked = [divmod(int(k), logodds.shape[1] - 1) for k in order if features[k] >= 0]
    if not picked:  # no feature moves the uplift: the action's own column, if anything
        own = np.where(present[:, -1], effect[:, -1], -1.0)
        if own.max() >= 0:
            picked = [(int(np.argmax(own)), logodds.shape[1] - 1)]
    chosen = [(outcomes[o], col, float(logodds[o, col])) for o, col in picked]
    reasons = []
    for outcome, col, c in chosen:
        shown = _readable_value(spec, names[col], float(row[col]), actions)
        verb = "raises" if c > 0 else "lowers"
        reasons.append(f"{names[col]}={shown} {verb} {outcome} odds{suffix} ({c:+.2f})")
    return reasons


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
