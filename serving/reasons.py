"""Readable reasons for a recommendation: which features make this action pay.

The policy ranks actions by their *uplift* over no action, so that is what a reason
explains.  For an action ``a``, the reasons are the features with the largest LightGBM
``pred_contrib`` (SHAP, log-odds) contributions to

    logit P(conversion | x, a) - logit P(conversion | x, none)

and for ``none`` itself, to ``logit P(conversion | x, none)`` (why the customer converts,
or not, if left alone).  In the ``offset`` and ``shared_offset`` formulations the pooled
base model is common to every action and cancels in the difference, so only the small
offset booster is explained: a tenth of the cost of explaining the whole model, and
reasons that differ between actions instead of repeating the base model's.
Calibration is monotone, so the raw model's contributions keep their sign.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from features.schema import STAGES
from features.spec import FeatureSpec
from serving.bundle import Bundle

__all__ = ["contributions", "explain"]


def explain(
    bundle: Bundle, x: np.ndarray, codes: Sequence[int], *, top: int = 3
) -> list[list[str]]:
    """Reasons for each action code in ``codes`` (see the module docstring), best first.

    ``x`` is one feature row in ``spec.feature_names`` order; returns one list of at most
    ``top`` readable strings per code.
    """
    codes = [int(c) for c in codes]
    rows, contribs = contributions(bundle, x, codes)
    names = [*bundle.spec.feature_names, "action"]
    actions = bundle.conversion.actions
    return [
        _readable(bundle, names, row, values, "" if code == 0 else " over no action", top, actions)
        for code, row, values in zip(codes, rows, contribs, strict=True)
    ]


def contributions(
    bundle: Bundle, x: np.ndarray, codes: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """The model rows ``(x, action)`` and the contributions that :func:`explain` ranks.

    Returns two ``(len(codes), n_features + 1)`` arrays (the last column is the action).
    For code ``a > 0`` the row of contributions sums to ``logit p(x, a) - logit p(x, none)``
    of the raw conversion model; for code 0, to ``logit p(x, none)`` minus the models'
    bias.
    """
    scorer = bundle.conversion
    x = np.asarray(x, dtype=np.float64).reshape(1, -1)
    n = x.shape[1]
    # Rows to explain: every requested action plus `none` (code 0), each once.
    wanted = sorted({0, *codes})
    at = {c: i for i, c in enumerate(wanted)}
    with_action = np.hstack(
        [np.repeat(x, len(wanted), axis=0), np.asarray(wanted, dtype=np.float64)[:, None]]
    )
    # per[i, j]: contribution of column j to wanted[i]'s conversion log-odds, leaving out
    # any part common to all actions (the base model of the offset formulations).
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
            out[i] = per[at[0]]
            if scorer.formulation in ("offset", "shared_offset"):
                # `none` on its own: add the base model back, it is all of `none`'s story.
                out[i, :n] += scorer.contributions("base", x)[0]
        else:
            out[i] = per[at[code]] - per[at[0]]
    return with_action[[at[c] for c in codes]], out


def _readable(
    bundle: Bundle,
    names: Sequence[str],
    row: np.ndarray,
    values: np.ndarray,
    suffix: str,
    top: int,
    actions: Sequence[str],
) -> list[str]:
    """The ``top`` largest contributions as text.  The action's own column comes last:
    "action=email_promo raises conversion odds over no action" is true but tells a
    marketer nothing, so it is shown only when no feature moves the uplift."""
    features = values[:-1]
    order = [int(j) for j in np.argsort(-np.abs(features), kind="stable")[:top]]
    order = [j for j in order if abs(features[j]) >= 1e-12] or [len(values) - 1]
    reasons = []
    for j in order:
        c = float(values[j])
        if abs(c) < 1e-12:
            break
        value = _readable_value(bundle.spec, names[j], float(row[j]), actions)
        verb = "raises" if c > 0 else "lowers"
        reasons.append(f"{names[j]}={value} {verb} conversion odds{suffix} ({c:+.2f})")
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
