"""The conversion effect scale (training/effect_scale.py): the pooled ratio of the
send-minus-no-action differences of the before-next-send and the logged labels, with its
fallbacks and bounds."""

from __future__ import annotations

import numpy as np
import pytest

from training.effect_scale import MAX_SCALE, conversion_effect_scale


def _labels(
    n: int, p_none: float, lift_logged: float, lift_before: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Half the rows no action, the rest three actions; the logged label lifted by
    ``lift_logged`` on sends, the before-next-send label (a subset of the logged
    purchases, as in training/labels.py) by ``lift_before``, from ``p_none * 0.6``."""
    rng = np.random.default_rng(seed)
    codes = np.where(rng.random(n) < 0.5, 0, rng.integers(1, 4, n))
    sent = codes > 0
    p_before = 0.6 * p_none + lift_before * sent
    p_logged = p_none + lift_logged * sent
    u = rng.random(n)
    y_before = (u < p_before).astype(float)
    # A purchase before the next send is one within the horizon too.
    y_logged = np.maximum(y_before, (u < p_logged).astype(float))
    return y_logged, y_before, codes


def test_the_scale_is_the_pooled_ratio_of_the_differences() -> None:
    y_logged, y_before, codes = _labels(400_000, 0.10, 0.01, 0.02)
    found = conversion_effect_scale(y_logged, y_before, codes)
    sent, none = codes > 0, codes == 0
    logged = y_logged[sent].mean() - y_logged[none].mean()
    before = y_before[sent].mean() - y_before[none].mean()
    assert found.logged_difference == pytest.approx(logged, abs=1e-15)
    assert found.before_send_difference == pytest.approx(before, abs=1e-15)
    assert found.scale == found.raw == pytest.approx(before / logged, rel=1e-12)
    assert found.scale == pytest.approx(2.0, abs=0.25)  # the lifts' ratio
    assert found.note == ""
    # Pooled: weighting each action's difference by its rows is the sends' mean difference.
    num = sum(
        (codes == a).sum() * (y_before[codes == a].mean() - y_before[none].mean())
        for a in (1, 2, 3)
    )
    den = sum(
        (codes == a).sum() * (y_logged[codes == a].mean() - y_logged[none].mean())
        for a in (1, 2, 3)
    )
    assert found.raw == pytest.approx(num / den, rel=1e-9)


def test_a_ratio_below_one_falls_back_to_the_logged_effects() -> None:
    y_logged, y_before, codes = _labels(400_000, 0.10, 0.02, 0.01)
    found = conversion_effect_scale(y_logged, y_before, codes)
    assert found.raw < 1 and found.scale == 1.0
    assert "kept within [1, 4]" in found.note


def test_a_ratio_above_the_bound_is_capped() -> None:
    y_logged, y_before, codes = _labels(400_000, 0.10, 0.005, 0.04)
    found = conversion_effect_scale(y_logged, y_before, codes)
    assert found.raw > MAX_SCALE and found.scale == MAX_SCALE


def test_a_logged_difference_within_its_noise_gives_one() -> None:
    y_logged, y_before, codes = _labels(2_000, 0.10, 0.0, 0.01)
    found = conversion_effect_scale(y_logged, y_before, codes)
    assert found.scale == 1.0 and np.isnan(found.raw)
    assert "standard errors" in found.note


@pytest.mark.parametrize("only", [0, 2])
def test_without_sends_or_without_no_action_rows_the_scale_is_one(only: int) -> None:
    y = np.array([0.0, 1.0, 0.0, 1.0])
    found = conversion_effect_scale(y, y, np.full(4, only))
    assert found.scale == 1.0 and np.isnan(found.raw)
    assert found.note.startswith("no sends" if only == 0 else "no 'no action' rows")


def test_rows_of_unequal_length_are_refused() -> None:
    with pytest.raises(ValueError, match="one value per row"):
        conversion_effect_scale(np.zeros(3), np.zeros(3), np.zeros(2, dtype=int))
