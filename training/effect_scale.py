"""How much the logged conversion label understates one send's own effect.

The conversion label is "a purchase within the horizon after the decision" while the
logging policy carries on: it sends again within days to both arms, and it sends *less*
soon after a send (fatigue), so part of a send's effect is taken back by the follow-ups
the other arm gets instead.  The policy recommends one send, and what it should weigh is
that send's own effect.  The ``conversion_before_send`` label (training/labels.py, a
purchase before the company's next send) is free of the follow-ups, so the ratio of its
send-minus-no-action difference to the logged label's, pooled over the actions, says by
how much the logged effects are diluted:

    k = sum_a n_a (mean_a(y_before_send) - mean_none(y_before_send))
        / sum_a n_a (mean_a(y_logged) - mean_none(y_logged))

over the training rows (``n_a``: the rows of action ``a``).  The policy then weighs the
conversion uplift at ``k`` times the model's (serving/engine.py); the probabilities it
returns stay the model's, calibrated to the logged label.  One pooled number, not one per
action: correcting each action's mean effect on its own was measured and lost
(docs/TRAINING.md, "The offset's scale").  A raw
difference is confounded by the logging policy's targeting, but both labels share the
targeting, and the ratio is what is used.

The estimate falls back to 1 (the logged effects as they are) where it cannot be trusted:
no sends or no "no action" rows, or a logged difference that is not above twice its
standard error; and it is kept within ``[MIN_SCALE, MAX_SCALE]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Below 1 the before-next-send window would be missing purchases that come after a later
#: send (a slow effect), not showing a smaller effect of the send itself: the logged
#: effects are then the better estimate.
MIN_SCALE = 1.0
#: Above this the estimate is driven by a small logged difference rather than by the
#: follow-ups; on fourteen simulated (world, seed) pairs it was 1.36-1.87 (docs/TRAINING.md).
MAX_SCALE = 4.0
#: The logged send-minus-no-action difference must be above this many standard errors.
MIN_Z = 2.0


@dataclass(frozen=True)
class EffectScale:
    """The conversion effect scale and how it was reached."""

    scale: float
    #: The pooled ratio before the fallback and the bounds (nan where it has none).
    raw: float
    #: Mean difference send - no action of the logged and before-next-send labels.
    logged_difference: float
    before_send_difference: float
    #: Why the scale is not the raw ratio ("" when it is).
    note: str = ""


def conversion_effect_scale(
    y_logged: np.ndarray, y_before_send: np.ndarray, action_codes: np.ndarray
) -> EffectScale:
    """The pooled ratio above on the rows given (action code 0 is no action)."""
    y_logged = np.asarray(y_logged, dtype=np.float64)
    y_before = np.asarray(y_before_send, dtype=np.float64)
    codes = np.asarray(action_codes, dtype=np.int64)
    if not (len(y_logged) == len(y_before) == len(codes)):
        raise ValueError("the labels and the action codes must have one value per row")
    none, sent = codes == 0, codes > 0
    if not none.any() or not sent.any():
        what = "no 'no action' rows" if not none.any() else "no sends"
        return EffectScale(1.0, float("nan"), float("nan"), float("nan"), f"{what}: 1")
    # sum_a n_a (mean_a - mean_none) = sum over sends of y - n_sent * mean_none
    logged_diff = float(y_logged[sent].mean() - y_logged[none].mean())
    before_diff = float(y_before[sent].mean() - y_before[none].mean())
    se = float(np.sqrt(y_logged[sent].var() / sent.sum() + y_logged[none].var() / none.sum()))
    if not logged_diff > MIN_Z * se:
        return EffectScale(
            1.0, float("nan"), logged_diff, before_diff,
            f"logged difference {logged_diff:+.4f} is not above {MIN_Z:g} standard errors "
            f"({se:.4f}): 1",
        )  # fmt: skip
    raw = before_diff / logged_diff
    scale = float(np.clip(raw, MIN_SCALE, MAX_SCALE))
    note = "" if scale == raw else f"{raw:.3f} kept within [{MIN_SCALE:g}, {MAX_SCALE:g}]"
    return EffectScale(scale, raw, logged_diff, before_diff, note)
