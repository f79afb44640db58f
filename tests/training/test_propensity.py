"""The propensity model as ``training.train`` now fits it: the ``side_job`` of
``fit_outcome_models``, with one LightGBM thread, on the worker the first finished outcome
frees.  It is the model the caller used to fit before the outcomes with two threads, the
outcome models do not change, and its failure reaches the caller."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from training.models import fit_outcome_models
from training.propensity import PropensityModel

ACTIONS = ("none", "email_promo", "sms_offer", "push_reminder")
FIT_KW = {"actions": ACTIONS, "num_rounds": 60, "early_stopping": 5, "seed": 2}


def _logged(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Features with NaNs, actions from a feature-dependent logging policy, two outcomes."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 12))
    X[rng.random(X.shape) < 0.05] = np.nan
    Z = np.nan_to_num(X)
    logits = Z[:, :4] @ rng.standard_normal((4, len(ACTIONS)))
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    a = (p.cumsum(axis=1) < rng.random((n, 1))).sum(axis=1).astype(np.int64)
    effect = np.array([0.0, 0.5, 0.2, -0.3])
    y = {
        "conversion": -1.5 + Z[:, 4] + effect[a] * (Z[:, 5] > 0),
        "churn": -2.0 - 0.8 * Z[:, 6] + 0.4 * effect[a],
    }
    labels = {k: (rng.random(n) < 1 / (1 + np.exp(-v))).astype(np.float64) for k, v in y.items()}
    return X, a, labels


def _split(n: int = 8000) -> tuple[tuple, tuple]:  # type: ignore[type-arg]
    X, a, y = _logged(n, 0)
    cut = n * 3 // 4
    return (
        (X[:cut], a[:cut], {k: v[:cut] for k, v in y.items()}),
        (X[cut:], a[cut:], {k: v[cut:] for k, v in y.items()}),
    )


def _text(model: PropensityModel) -> str:
    """The model text without its ``num_threads`` line, the one place the two paths differ."""
    lines = model.booster_.model_to_string().splitlines()
    assert sum(line.startswith("[num_threads: ") for line in lines) == 1
    return "\n".join(line for line in lines if not line.startswith("[num_threads: "))


def test_side_job_propensity_is_the_same_model_and_runs_once_a_chain_is_done() -> None:
    (X, a, y), (Xv, av, yv) = _split()
    before = PropensityModel(n_actions=len(ACTIONS), seed=5, num_rounds=40).fit(X, a, Xv, av)
    alone = fit_outcome_models(X, a, y, Xv, av, yv, formulation="shared_offset", **FIT_KW)

    after = PropensityModel(n_actions=len(ACTIONS), seed=5, num_rounds=40, num_threads=1)
    steps: list[str] = []
    seen: dict[str, object] = {}

    def side_job() -> None:
        seen["thread"] = threading.current_thread().name
        seen["steps"] = list(steps)  # what had finished when the job started
        after.fit(X, a, Xv, av)

    with_job = fit_outcome_models(
        X,
        a,
        y,
        Xv,
        av,
        yv,
        formulation="shared_offset",
        progress=steps.append,
        side_job=side_job,
        **FIT_KW,
    )
    assert seen["thread"] != threading.main_thread().name
    # It waited for a whole chain (the outcome's offset booster is its last stage).
    started_after = seen["steps"]
    assert isinstance(started_after, list)
    assert any(" offset: " in step for step in started_after), started_after
    # The propensity model is the one fitted alone with two threads...
    assert after.booster_.params["num_threads"] == 1
    assert after.booster_.best_iteration == before.booster_.best_iteration > 1
    assert _text(after) == _text(before)
    np.testing.assert_array_equal(after.predict_proba(Xv), before.predict_proba(Xv))
    # ...and the outcome models are the ones fitted without a side job.
    for outcome in y:
        for key, booster in alone[outcome][0].boosters.items():
            other = with_job[outcome][0].boosters[key]
            assert other.model_to_string() == booster.model_to_string()


def test_side_job_runs_in_the_other_formulations_too() -> None:
    (X, a, y), (Xv, av, yv) = _split(3000)
    ran: list[bool] = []
    fit_outcome_models(
        X, a, y, Xv, av, yv, formulation="per_action", side_job=lambda: ran.append(True), **FIT_KW
    )
    assert ran == [True]


def test_side_job_failure_reaches_the_caller() -> None:
    (X, a, y), (Xv, av, yv) = _split(3000)
    broken = PropensityModel(n_actions=len(ACTIONS), num_threads=1)
    with pytest.raises(Exception, match="[Ll]ength|size|match"):
        fit_outcome_models(
            X,
            a,
            y,
            Xv,
            av,
            yv,
            formulation="shared_offset",
            side_job=lambda: broken.fit(X, a[:-1], Xv, av),
            **FIT_KW,
        )
