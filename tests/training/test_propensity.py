"""The propensity model as ``training.train`` now fits it: the ``side_job`` of
``fit_outcome_models``, with one LightGBM thread, on the worker the first finished outcome
frees, and with two once both outcome chains are done.  It is the model the caller used to
fit before the outcomes with two threads, whenever the switch comes; the outcome models do
not change; its failure reaches the caller; and a failed chain stops it (or keeps it from
starting) and is the error the caller gets."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import lightgbm as lgb
import numpy as np
import pytest

from training import models
from training.models import SideJobSignals, fit_outcome_models
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


def _lightgbm_threads() -> int:
    """The thread count LightGBM's next parallel loop will use (process-wide in LightGBM 4)."""
    return int(lgb.basic._LIB.OMP_NUM_THREADS())


class _Flag:
    """A ``Flag`` for ``PropensityModel.fit`` (asked once before each round): records the
    LightGBM thread count at each question, and answers True from question ``set_from``
    on (0-based; ``None``: never), or once ``event`` is set.  ``before`` runs first."""

    def __init__(
        self,
        set_from: int | None = None,
        event: threading.Event | None = None,
        before: Callable[[int], None] | None = None,
    ) -> None:
        self.set_from, self.event, self.before = set_from, event, before
        self.threads: list[int] = []

    def is_set(self) -> bool:
        asked = len(self.threads)
        if self.before is not None:
            self.before(asked)
        self.threads.append(_lightgbm_threads())
        if self.event is not None and self.event.is_set():
            return True
        return self.set_from is not None and asked >= self.set_from


def test_the_thread_switch_changes_the_threads_and_not_the_model() -> None:
    """Switched before round 0 or 11 of 30: the model of one thread and of two."""
    (X, a, _y), (Xv, av, _yv) = _split(4000)
    kw: dict[str, Any] = {"n_actions": len(ACTIONS), "seed": 5, "num_rounds": 30}
    one = PropensityModel(**kw, num_threads=1).fit(X, a, Xv, av)
    two = PropensityModel(**kw, num_threads=2).fit(X, a, Xv, av)
    assert _text(one) == _text(two)
    assert one.thread_switch_round_ is None
    for switch in (0, 11):
        model = PropensityModel(**kw, num_threads=1)
        watch = _Flag()  # asked first in each round: the threads that round trains with
        model.fit(X, a, Xv, av, more_threads=_Flag(set_from=switch), threads_then=2, stop=watch)
        assert model.thread_switch_round_ == switch
        assert watch.threads == [1] * (switch + 1) + [2] * (30 - switch - 1)
        assert _text(model) == _text(one), switch


def test_stop_ends_the_fit_before_the_next_round() -> None:
    (X, a, _y), (Xv, av, _yv) = _split(3000)
    model = PropensityModel(n_actions=len(ACTIONS), num_rounds=40, num_threads=1)
    stop = _Flag(set_from=3)
    with pytest.raises(Exception, match="stopped before round 3"):
        model.fit(X, a, Xv, av, stop=stop)
    assert len(stop.threads) == 4
    assert not hasattr(model, "booster_")


def test_side_job_propensity_is_the_same_model_and_runs_once_a_chain_is_done() -> None:
    (X, a, y), (Xv, av, yv) = _split()
    before = PropensityModel(n_actions=len(ACTIONS), seed=5, num_rounds=40).fit(X, a, Xv, av)
    alone = fit_outcome_models(X, a, y, Xv, av, yv, formulation="shared_offset", **FIT_KW)

    after = PropensityModel(n_actions=len(ACTIONS), seed=5, num_rounds=40, num_threads=1)
    steps: list[str] = []
    seen: dict[str, object] = {}

    def side_job(signals: SideJobSignals) -> None:
        seen["thread"] = threading.current_thread().name
        seen["steps"] = list(steps)  # what had finished when the job started
        after.fit(
            X,
            a,
            Xv,
            av,
            more_threads=signals.chains_done,
            threads_then=signals.num_threads,
            stop=signals.failed,
        )

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


def test_side_job_takes_more_threads_once_the_chains_are_done() -> None:
    """The job holds its round 1 until both chains are done: it started while one trained
    (one thread), and trains its last rounds after them, with two."""
    (X, a, y), (Xv, av, yv) = _split()
    before = PropensityModel(n_actions=len(ACTIONS), seed=5, num_rounds=40).fit(X, a, Xv, av)
    after = PropensityModel(n_actions=len(ACTIONS), seed=5, num_rounds=40, num_threads=1)
    held: list[bool] = []

    def side_job(signals: SideJobSignals) -> None:
        def hold(asked: int) -> None:
            if asked == 1:
                held.append(signals.chains_done.wait(60))

        watch = _Flag(event=signals.failed, before=hold)
        after.fit(
            X,
            a,
            Xv,
            av,
            more_threads=signals.chains_done,
            threads_then=signals.num_threads,
            stop=watch,
        )
        seen["threads"] = watch.threads

    seen: dict[str, list[int]] = {}
    fit_outcome_models(
        X, a, y, Xv, av, yv, formulation="shared_offset", side_job=side_job, **FIT_KW
    )
    assert held == [True]
    assert after.thread_switch_round_ in (0, 1)  # 0: the other chain was done already
    assert seen["threads"][0] == 1
    assert seen["threads"][2:] == [2] * 38
    assert _text(after) == _text(before)


@pytest.mark.parametrize(("num_threads", "chain_threads"), [(2, 1), (4, 2), (3, 1)])
def test_side_job_is_told_the_chains_thread_count(num_threads: int, chain_threads: int) -> None:
    """The only count the job may pass to LightGBM while a chain trains (SideJobSignals)."""
    (X, a, y), (Xv, av, yv) = _split(3000)
    told: list[tuple[int, int]] = []

    def side_job(signals: SideJobSignals) -> None:
        told.append((signals.chain_threads, signals.num_threads))

    kw = {**FIT_KW, "params": {"num_threads": num_threads}}
    fitted = fit_outcome_models(
        X, a, y, Xv, av, yv, formulation="shared_offset", side_job=side_job, **kw
    )
    assert told == [(chain_threads, num_threads)]
    for scorer, _report in fitted.values():
        for booster in scorer.boosters.values():
            assert int(booster.params["num_threads"]) == chain_threads


def test_side_job_runs_in_the_other_formulations_too() -> None:
    (X, a, y), (Xv, av, yv) = _split(3000)
    ran: list[bool] = []

    def side_job(signals: SideJobSignals) -> None:
        ran.append(signals.chains_done.is_set())  # alone, before the outcomes: all threads

    fit_outcome_models(X, a, y, Xv, av, yv, formulation="per_action", side_job=side_job, **FIT_KW)
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
            side_job=lambda _signals: broken.fit(X, a[:-1], Xv, av),
            **FIT_KW,
        )


def test_a_failed_chain_stops_the_other_and_the_queued_side_job_never_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Churn fails at once; conversion starts once it has, and stops before its first
    round; the side job, queued, never starts; the caller gets churn's error."""
    (X, a, y), (Xv, av, yv) = _split(3000)
    real = models._fit_chain
    stopped: list[str] = []

    def chain(*args: Any, stop: threading.Event | None = None) -> Any:
        if args[-1] == "churn":
            raise ValueError("churn chain broke")
        assert stop is not None and stop.wait(60)
        try:
            return real(*args, stop=stop)
        except Exception as error:
            stopped.append(type(error).__name__)
            raise

    monkeypatch.setattr(models, "_fit_chain", chain)
    steps: list[str] = []
    ran: list[bool] = []
    with pytest.raises(ValueError, match="churn chain broke"):
        fit_outcome_models(
            X,
            a,
            y,
            Xv,
            av,
            yv,
            formulation="shared_offset",
            progress=steps.append,
            side_job=lambda _signals: ran.append(True),
            **FIT_KW,
        )
    assert ran == []
    assert stopped == ["FitStopped"]
    assert not any(" conversion " in step for step in steps), steps


def test_a_failed_chain_stops_the_running_side_job_at_its_next_round(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Conversion finishes and the propensity model starts on its worker; churn fails once
    the model has trained round 0 (when it asks before round 1); the model stops there, and
    the caller gets churn's error, not the model's."""
    (X, a, y), (Xv, av, yv) = _split(3000)
    real = models._fit_chain
    round_0_done = threading.Event()

    def chain(*args: Any, stop: threading.Event | None = None) -> Any:
        if args[-1] == "churn":
            assert round_0_done.wait(60)
            raise ValueError("churn chain broke")
        return real(*args, stop=stop)

    monkeypatch.setattr(models, "_fit_chain", chain)
    model = PropensityModel(n_actions=len(ACTIONS), num_rounds=40, num_threads=1)
    raised: list[str] = []

    def side_job(signals: SideJobSignals) -> None:
        def wait_for_the_failure(asked: int) -> None:
            if asked == 1:
                round_0_done.set()
                assert signals.failed.wait(60)

        try:
            model.fit(X, a, Xv, av, stop=_Flag(event=signals.failed, before=wait_for_the_failure))
        except Exception as error:
            raised.append(f"{type(error).__name__}: {error}")
            raise

    with pytest.raises(ValueError, match="churn chain broke"):
        fit_outcome_models(
            X, a, y, Xv, av, yv, formulation="shared_offset", side_job=side_job, **FIT_KW
        )
    assert raised == ["FitStopped: propensity fit stopped before round 1"]
    assert not hasattr(model, "booster_")


def test_a_failed_side_job_stops_the_chains_and_its_error_reaches_the_caller(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Conversion finishes, the side job fails on its worker, churn (held until then) stops
    before its first round: the caller gets the side job's error, not churn's stop."""
    (X, a, y), (Xv, av, yv) = _split(3000)
    real = models._fit_chain
    stopped: list[str] = []

    def chain(*args: Any, stop: threading.Event | None = None) -> Any:
        if args[-1] == "churn":
            assert stop is not None and stop.wait(60)
            try:
                return real(*args, stop=stop)
            except Exception as error:
                stopped.append(type(error).__name__)
                raise
        return real(*args, stop=stop)

    def side_job(_signals: SideJobSignals) -> None:
        raise RuntimeError("side job broke")

    monkeypatch.setattr(models, "_fit_chain", chain)
    with pytest.raises(RuntimeError, match="side job broke"):
        fit_outcome_models(
            X, a, y, Xv, av, yv, formulation="shared_offset", side_job=side_job, **FIT_KW
        )
    assert stopped == ["FitStopped"]
