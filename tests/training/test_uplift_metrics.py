"""Uplift metrics: hand-computed curves and scores, directional checks, validation."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from matplotlib.figure import Figure

from training.uplift_metrics import (
    perfect_qini_curve,
    perfect_uplift_curve,
    plot_qini,
    qini_auc_score,
    qini_curve,
    uplift_at_k,
    uplift_auc_score,
    uplift_curve,
)

# Six customers, already in descending order of predicted uplift (all scores distinct).
Y = np.array([1, 0, 1, 0, 1, 0])
T = np.array([1, 1, 0, 0, 1, 0])
U = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])

# Running totals after the top N customers (N_T treated converting Y_T, N_C control
# converting Y_C):
#   N  row(t, y)  N_T Y_T N_C Y_C   Qini = Y_T - Y_C*N_T/N_C   uplift = (Y_T/N_T - Y_C/N_C)*N
#   1  (1, 1)      1   1   0   0    1 - 0         =  1         (1   - 0  ) * 1 =  1
#   2  (1, 0)      2   1   0   0    1 - 0         =  1         (1/2 - 0  ) * 2 =  1
#   3  (0, 1)      2   1   1   1    1 - 1*2/1     = -1         (1/2 - 1  ) * 3 = -3/2
#   4  (0, 0)      2   1   2   1    1 - 1*2/2     =  0         (1/2 - 1/2) * 4 =  0
#   5  (1, 1)      3   2   2   1    2 - 1*3/2     =  1/2       (2/3 - 1/2) * 5 =  5/6
#   6  (0, 0)      3   2   3   1    2 - 1*3/3     =  1         (2/3 - 1/3) * 6 =  2
QINI_BY_HAND = [0, 1, 1, -1, 0, 0.5, 1]
UPLIFT_BY_HAND = [0, 1, 1, -1.5, 0, 5 / 6, 2]


def test_qini_curve_by_hand() -> None:
    x, qini = qini_curve(Y, T, U)
    np.testing.assert_allclose(x, np.arange(7))
    np.testing.assert_allclose(qini, QINI_BY_HAND)


def test_uplift_curve_by_hand() -> None:
    x, values = uplift_curve(Y, T, U)
    np.testing.assert_allclose(x, np.arange(7))
    np.testing.assert_allclose(values, UPLIFT_BY_HAND)


def test_curves_step_over_ties_and_ignore_order_within_them() -> None:
    # Scores tied in pairs: points only after N = 2, 4, 6 (the rows above, in pairs).
    tied = np.array([0.9, 0.9, 0.5, 0.5, 0.1, 0.1])
    x, qini = qini_curve(Y, T, tied)
    np.testing.assert_allclose(x, [0, 2, 4, 6])
    np.testing.assert_allclose(qini, [0, 1, 0, 1])
    # Swapping rows inside each tie cannot move the curve.
    swap = np.array([1, 0, 3, 2, 5, 4])
    x2, qini2 = qini_curve(Y[swap], T[swap], tied[swap])
    np.testing.assert_allclose(x2, x)
    np.testing.assert_allclose(qini2, qini)


def test_perfect_curves_by_hand() -> None:
    # Oracle score y*t - y*(1-t) = [1, 0, -1, 0, 1, 0]:
    #   top 2 (score 1): two treated converters          -> Y_T=2, N_T=2, N_C=0 -> 2
    #   top 5 (+ score 0): one treated, two control, none convert -> 2 - 0*3/2 = 2
    #   all 6 (+ score -1): a control converter           -> 2 - 1*3/3 = 1
    x, values = perfect_qini_curve(Y, T)
    np.testing.assert_allclose(x, [0, 2, 5, 6])
    np.testing.assert_allclose(values, [0, 2, 2, 1])
    # Without negative effects: rise to the total effect (1) and stay there.
    x, values = perfect_qini_curve(Y, T, negative_effect=False)
    np.testing.assert_allclose(x, [0, 1, 6])
    np.testing.assert_allclose(values, [0, 1, 1])
    # Perfect uplift: control responders (1) are not more than treated non-responders
    # (1), so the oracle is 2*(y == t) + t = [3, 1, 0, 2, 3, 2]:
    #   N=2 (3s):  Y_T/N_T = 2/2, nobody in control   -> (1 - 0) * 2   = 2
    #   N=4 (2s):  two control non-converters         -> (1 - 0) * 4   = 4
    #   N=5 (1):   a treated non-converter            -> (2/3 - 0) * 5 = 10/3
    #   N=6 (0):   a control converter                -> (2/3 - 1/3) * 6 = 2
    x, values = perfect_uplift_curve(Y, T)
    np.testing.assert_allclose(x, [0, 2, 4, 5, 6])
    np.testing.assert_allclose(values, [0, 2, 4, 10 / 3, 2])


def test_normalised_areas_by_hand() -> None:
    # Qini: model area by trapezoids over QINI_BY_HAND
    #   0.5 + 1 + 0 - 0.5 + 0.25 + 0.75 = 2
    # random line (0,0)-(6,1): 3; perfect area 2 + 6 + 1.5 = 9.5
    # score = (2 - 3) / (9.5 - 3) = -2/13
    assert qini_auc_score(Y, T, U) == pytest.approx(-2 / 13)
    # Uplift: model area 0.5 + 1 - 0.25 - 0.75 + 5/12 + 17/12 = 7/3
    # random line (0,0)-(6,2): 6; perfect area 2 + 6 + 11/3 + 8/3 = 43/3
    # score = (7/3 - 6) / (43/3 - 6) = -11/25
    assert uplift_auc_score(Y, T, U) == pytest.approx(-11 / 25)


def test_normalised_scores_are_one_for_the_oracle_ranking() -> None:
    assert qini_auc_score(Y, T, Y * T - Y * (1 - T)) == pytest.approx(1.0)
    assert uplift_auc_score(Y, T, 2 * (Y == T) + T) == pytest.approx(1.0)


# uplift@k: eight customers in descending score order, 5 treated and 3 control.
Y8 = np.array([1, 0, 1, 1, 0, 1, 0, 1])
T8 = np.array([1, 1, 1, 0, 1, 1, 0, 0])
U8 = np.array([0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])


def test_uplift_at_k_overall_by_hand() -> None:
    # k=0.5: top int(8*0.5)=4 rows; treated rows 0,1,2 -> (1+0+1)/3; control row 3 -> 1
    assert uplift_at_k(Y8, T8, U8, k=0.5, strategy="overall") == pytest.approx(2 / 3 - 1)
    # k=5 (a count): rows 0-4; treated 0,1,2,4 -> 2/4; control row 3 -> 1
    assert uplift_at_k(Y8, T8, U8, k=5, strategy="overall") == pytest.approx(0.5 - 1.0)


def test_uplift_at_k_by_group_by_hand() -> None:
    # k=0.5: top int(5*0.5)=2 treated (rows 0,1 -> 1/2), int(3*0.5)=1 control (row 3 -> 1)
    assert uplift_at_k(Y8, T8, U8, k=0.5, strategy="by_group") == pytest.approx(0.5 - 1.0)
    # k=2 (a count per group): treated rows 0,1 -> 1/2; control rows 3,6 -> 1/2
    assert uplift_at_k(Y8, T8, U8, k=2, strategy="by_group") == pytest.approx(0.0)
    # The default strategy is by_group and k=0.3: int(5*0.3)=1 treated (row 0 -> 1),
    # int(3*0.3)=0 control -> nobody, which is an error rather than sklift's NaN.
    with pytest.raises(ValueError, match="no control customers"):
        uplift_at_k(Y8, T8, U8)
    assert uplift_at_k(Y8, T8, U8, 0.5) == uplift_at_k(Y8, T8, U8, 0.5, "by_group")


def test_uplift_at_k_breaks_ties_like_sklift() -> None:
    # All scores tied. sklift's order (stable ascending sort, reversed) puts the later
    # row first: rows 3, 2, 1, 0. Top 2 = row 3 (control, y=1) and row 2 (treated, y=0).
    y, t, u = np.array([1, 1, 0, 1]), np.array([1, 0, 1, 0]), np.full(4, 0.5)
    assert uplift_at_k(y, t, u, k=2, strategy="overall") == pytest.approx(0.0 - 1.0)
    # Deterministic: same answer every call.
    assert uplift_at_k(y, t, u, k=2, strategy="overall") == uplift_at_k(
        y, t, u, k=2, strategy="overall"
    )


def test_uplift_at_k_rejects_bad_k_and_strategy() -> None:
    for k in (0.0, 1.0, -0.2, 0, 8, True, "0.3"):
        with pytest.raises(ValueError, match="^k must"):
            uplift_at_k(Y8, T8, U8, k=k, strategy="overall")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="exceeds the number of control"):
        uplift_at_k(Y8, T8, U8, k=4, strategy="by_group")
    with pytest.raises(ValueError, match="^strategy"):
        uplift_at_k(Y8, T8, U8, strategy="first")  # type: ignore[arg-type]


# ----------------------------------------------------------------- synthetic behaviour


def _synthetic(n: int = 4_000, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    base = 0.10 + 0.05 * (x > 0)
    effect = np.clip(0.15 * x, -0.05, 0.3)  # some are put off, many are persuadable
    treatment = rng.integers(0, 2, size=n)
    y = (rng.random(n) < base + effect * treatment).astype(int)
    return {"x": x, "y": y, "t": treatment, "effect": effect}


def test_true_ranking_beats_random_ranking() -> None:
    data = _synthetic()
    y, t = data["y"], data["t"]
    random_score = np.random.default_rng(1).random(y.size)
    # The "perfect" curves rank by each customer's realised outcome, which no model of
    # expected effects can match, so even the true effect scores well below 1.
    assert qini_auc_score(y, t, data["effect"]) > qini_auc_score(y, t, random_score) + 0.1
    assert uplift_auc_score(y, t, data["effect"]) > uplift_auc_score(y, t, random_score) + 0.05
    for strategy in ("overall", "by_group"):
        assert uplift_at_k(y, t, data["effect"], 0.3, strategy) > 0.05 + uplift_at_k(
            y, t, random_score, 0.3, strategy
        )
    # Random ranking is near zero on the normalised scale.
    assert abs(qini_auc_score(y, t, random_score)) < 0.05


def test_propensity_weights_undo_confounded_treatment() -> None:
    rng = np.random.default_rng(4)
    n = 40_000
    x = rng.normal(size=n)
    propensity = 1.0 / (1.0 + np.exp(-1.5 * x))  # likely buyers were contacted more
    t = (rng.random(n) < propensity).astype(int)
    true_effect = 0.05
    y = (rng.random(n) < 0.1 + 0.2 * (x > 0) + true_effect * t).astype(int)
    score = rng.random(n)
    # The uplift curve's end point is (rate_T - rate_C) * n.
    naive = uplift_curve(y, t, score)[1][-1] / n
    weighted = uplift_curve(y, t, score, propensity=propensity)[1][-1] / n
    assert naive > 2 * true_effect  # selection bias inflates the naive difference
    assert weighted == pytest.approx(true_effect, abs=0.02)


def test_constant_propensity_changes_nothing() -> None:
    half = np.full(Y.size, 0.5)
    np.testing.assert_allclose(qini_curve(Y, T, U, propensity=half)[1], QINI_BY_HAND)
    np.testing.assert_allclose(uplift_curve(Y, T, U, propensity=half)[1], UPLIFT_BY_HAND)
    assert qini_auc_score(Y, T, U, propensity=half) == pytest.approx(-2 / 13)
    assert uplift_at_k(Y8, T8, U8, 0.5, "overall", propensity=np.full(8, 0.3)) == pytest.approx(
        2 / 3 - 1
    )


def test_continuous_outcomes_work_for_curves_and_uplift_at_k() -> None:
    revenue = np.array([20.0, 0.0, 35.0, 0.0, 10.0, 0.0])
    # Top 1: treated spends 20, no control yet -> 20 - 0
    assert qini_curve(revenue, T, U)[1][1] == pytest.approx(20.0)
    assert uplift_at_k(revenue, T, U, k=4, strategy="overall") == pytest.approx(10.0 - 17.5)
    with pytest.raises(ValueError, match="^y must be binary"):
        qini_auc_score(revenue, T, U)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"y": Y[:5]}, r"y=5, treatment=6, uplift=6"),
        ({"uplift": U[:4]}, r"uplift=4"),
        ({"treatment": np.array([1, 2, 0, 0, 1, 0])}, r"^treatment must be 0"),
        ({"treatment": np.ones(6, dtype=int)}, r"^treatment .*all treated"),
        ({"treatment": np.zeros(6, dtype=int)}, r"^treatment .*no one treated"),
        ({"y": np.array([1, np.nan, 1, 0, 1, 0])}, r"^y contains"),
        ({"uplift": np.array([0.9, 0.8, np.nan, 0.6, 0.5, 0.4])}, r"^uplift contains"),
        ({"treatment": np.array([1, 1, np.nan, 0, 1, 0])}, r"^treatment contains"),
        ({"y": Y.reshape(2, 3)}, r"^y must be 1-dimensional"),
        ({"propensity": np.array([0.5, 1.0, 0.5, 0.5, 0.5, 0.5])}, r"^propensity"),
        ({"propensity": np.full(5, 0.5)}, r"propensity=5"),
    ],
)
@pytest.mark.parametrize(
    "metric", [qini_curve, uplift_curve, qini_auc_score, uplift_auc_score, uplift_at_k]
)
def test_validation_names_the_bad_input(kwargs: dict[str, Any], pattern: str, metric: Any) -> None:
    inputs: dict[str, Any] = {"y": Y, "treatment": T, "uplift": U, **kwargs}
    with pytest.raises(ValueError, match=pattern):
        metric(**inputs)


def test_perfect_qini_without_negative_effects_needs_a_positive_total_effect() -> None:
    with pytest.raises(ValueError, match="overall effect"):
        perfect_qini_curve(np.array([0, 0, 1, 1]), np.array([1, 1, 0, 0]), negative_effect=False)
    with pytest.raises(TypeError, match="negative_effect"):
        perfect_qini_curve(Y, T, negative_effect=1)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------- plot


def test_plot_qini_speaks_plain_words() -> None:
    data = _synthetic(n=1_000)
    y, t = data["y"], data["t"]
    ax = Figure().subplots()
    returned = plot_qini(
        ax,
        {"Model": qini_curve(y, t, data["effect"]), "Best possible": perfect_qini_curve(y, t)},
    )
    assert returned is ax
    assert ax.get_xlabel() == "Customers targeted (share, ranked by predicted uplift)"
    assert ax.get_ylabel() == "Extra conversions vs. random targeting"
    assert ax.get_title()
    legend = ax.get_legend()
    assert legend is not None
    assert [text.get_text() for text in legend.get_texts()] == [
        "Model",
        "Best possible",
        "Random targeting",
    ]
    model_line = ax.get_lines()[0]
    assert np.asarray(model_line.get_xdata())[-1] == pytest.approx(1.0)  # shares, not head counts
    with pytest.raises(ValueError, match="^curves"):
        plot_qini(ax, {})
