"""Benchmark of model training on a synthetic decision-point table.

Usage::

    python bench/bench_training.py --rows 1000000 [--features 170] \\
        [--formulations shared_offset,offset,single,per_action] [--repeats 1]
    python bench/bench_training.py --rows 50000          # smoke run, well under a minute

Every measurement (one formulation, one repeat) runs in a fresh subprocess, so that its
peak RSS is its own.  The child generates a seeded table in-process (vectorized numpy): ~170
float features (counts, recencies with NaN for "never", rates with NaN for "no
denominator", small-integer codes), 11 action codes (``none`` on about half the rows, the
rest chosen by a feature-dependent logging policy), and binary conversion (~10%) and churn
(~5%) labels with action × feature interactions.  It splits the table 80/20 at random into
train / validation and then times, with the data generation outside the timed region:

- the logging-policy (propensity) models, cross-fitted on stand-ins for the validation and
  test parts (``fit_propensities``; ``--propensity-fit split``: one model on the training
  rows, the path before), with one LightGBM thread, two once both outcome chains are done,
  beside the outcome models, as ``training.train`` fits them (the ``side_job`` of
  :func:`training.models.fit_outcome_models`); "propensity s" is then when they were done,
  counted from the start (and ``propensity_started_s``, ``propensity_fit_s`` when they
  started and how long they took).  With ``--no-thread-switch``, one thread to the end (the
  path before the switch); with ``--sequential-propensity`` (implied by ``--per-outcome``),
  before them with two threads (the earlier path, for comparisons);
- the conversion and the churn model together (:func:`training.models.fit_outcome_models`,
  as ``training.train`` fits them, with its defaults: LightGBM parameters, the negative
  subsample, 1000 rounds at most, early-stopping patience), in the requested formulation,
  calibration choice included; its steps (binning, each booster) are recorded with their
  times.  With ``--per-outcome``, :func:`training.models.fit_outcome_model` once per outcome
  instead (the path before the Datasets were shared; the same models, timed per outcome).

With ``--refit`` (``shared_offset``), the child then also times the refit of ``touchpoint
train --refit pre-test`` (:func:`training.refit.refit_outcomes`, one outcome after the
other, on the training and validation rows with 1.2x the chosen rounds) as ``refit_s``; the
times and the 60 s target stay the fit's, but the fit's peak RSS then includes the refit.

``--offset-members K`` (``shared_offset``) fits the offset as a bag of K boosters
(``training/offset_bagging.py``; default as ``touchpoint train``, one).
``--offset-interactions pairwise|free`` (``shared_offset``; default as ``touchpoint train``,
``pairwise``) says how the offset trees may combine features, and ``--offset-features
effects|all`` (default as ``touchpoint train``, ``effects``) what they may split on
(``training/effect_features.py``; the synthetic features bear other names, so
:func:`effect_stand_ins` picks their stand-ins).  The restriction changes the rounds the
offset takes, not the work per round (``feature_contri``).

``--engagement on|off`` (``shared_offset``; default as ``touchpoint train``, ``on``): the
engagement model (``training/engagement.py``) is fitted first, on the send rows, as
``training.train`` does, and its column added to the offset's; its time (``engagement_s``)
is in the total.  The synthetic sends' opens depend on :func:`engagement_stand_ins` and
the action's channel.

``--offset-scale probability|log_odds`` (``shared_offset``; default as ``touchpoint
train``, ``training.train.OFFSET_SCALE``): on the probability scale the offset trains on
every training row (``training/models.py``), not on the negative sample.

Peak RSS is reported twice: for the fit alone (the child resets ``VmHWM`` through
``/proc/self/clear_refs`` once the data is in memory, then reads it after the fit) and for the
whole child process, data generation included (the larger of ``ru_maxrss`` from ``os.wait4``
in the parent and the child's ``VmHWM`` just before the reset, since the reset also lowers
``ru_maxrss``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.memory import reset_peak, status_mb  # noqa: E402
from features.catalog import load_catalog  # noqa: E402
from training.engagement import fit_engagement  # noqa: E402
from training.models import (  # noqa: E402
    DEFAULT_EARLY_STOPPING,
    DEFAULT_PARAMS,
    DEFAULT_ROUNDS,
    NEGATIVE_KEEP,
    SideJobSignals,
    fit_outcome_model,
    fit_outcome_models,
)
from training.offset_bagging import OFFSET_MEMBERS  # noqa: E402
from training.propensity import EARLY_STOPPING as PROPENSITY_EARLY_STOPPING  # noqa: E402
from training.propensity import PropensityModel, cross_fitted_distribution  # noqa: E402
from training.refit import refit_outcomes  # noqa: E402
from training.train import OFFSET_SCALE  # noqa: E402

#: ``none`` (code 0) and the default catalog's ten actions (features/default_catalog.yaml).
ACTIONS = (
    "none", "email_promo", "email_content", "sms_offer", "push_reminder", "phone_call",
    "chat_invite", "store_invitation", "social_ad", "display_ad", "direct_mail_offer",
)  # fmt: skip
FORMULATIONS = ("shared_offset", "offset", "single", "per_action")
#: The target from the issue: training on 1M decision points in at most 60 s on 2 cores.
TARGET_SECONDS = 60.0
#: docs/MEASURED.md "Training": 1.23M rows x 70 features, 300 rounds, 63 leaves, 2 threads.
REFERENCE_SECONDS = 46.0
REFERENCE = "1.23M x 70 features, 300 rounds, 63 leaves, 2 threads: 46 s, 2.4 GB"


# --------------------------------------------------------------------------- data


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _intercept_for_rate(logit: np.ndarray, rate: float) -> float:
    """The constant ``b`` with ``mean(sigmoid(b + logit)) == rate`` (bisection)."""
    lo, hi = -20.0, 20.0
    for _ in range(40):
        mid = (lo + hi) / 2
        if _sigmoid(mid + logit).mean() < rate:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _feature_layout(n_features: int) -> dict[str, int]:
    n_counts = max(4, round(n_features * 0.35))
    n_rec = max(3, round(n_features * 0.25))
    n_rates = max(3, round(n_features * 0.25))
    n_codes = max(2, n_features - n_counts - n_rec - n_rates)
    return {"counts": n_counts, "recencies": n_rec, "rates": n_rates, "codes": n_codes}


def synthetic_table(
    n_rows: int, n_features: int = 170, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """``X`` (C-ordered float64), action codes, conversion and churn labels, feature names.

    Features come in four kinds, driven by per-row latent factors (activity ``z``, value
    affinity ``v``) so that they are correlated like real behavioural features:
    counts over windows (Poisson), recencies in days (NaN when the event never happened),
    rates in [0, 1] (NaN when there is no denominator), and small-integer codes (stage,
    last channel tokens).
    """
    rng = np.random.default_rng(seed)
    layout = _feature_layout(n_features)
    n_cols = sum(layout.values())
    z = rng.standard_normal(n_rows)  # activity
    v = rng.standard_normal(n_rows)  # value affinity
    Xf = np.empty((n_rows, n_cols), dtype=np.float64, order="F")
    names: list[str] = []
    col = 0
    activity = np.exp(0.6 * z)
    for j in range(layout["counts"]):
        base = np.exp(rng.uniform(np.log(0.05), np.log(20.0)))
        noise = np.exp(0.3 * rng.standard_normal(n_rows))
        Xf[:, col] = rng.poisson(base * activity * noise)
        names.append(f"count_{j}")
        col += 1
    for j in range(layout["recencies"]):
        scale = np.exp(rng.uniform(np.log(2.0), np.log(120.0)))
        days = rng.exponential(scale, n_rows) / activity
        never = rng.random(n_rows) < _sigmoid(rng.uniform(-3.0, 0.5) - 1.0 * z)
        Xf[:, col] = np.where(never, np.nan, np.minimum(days, 365.0))
        names.append(f"recency_{j}")
        col += 1
    for j in range(layout["rates"]):
        centre = rng.uniform(-3.0, 0.0)
        rate = _sigmoid(centre + 0.5 * v + 0.2 * z + 0.5 * rng.standard_normal(n_rows))
        no_denominator = rng.random(n_rows) < _sigmoid(-2.5 - 0.8 * z)
        Xf[:, col] = np.where(no_denominator, np.nan, rate)
        names.append(f"rate_{j}")
        col += 1
    for j in range(layout["codes"]):
        k = int(rng.integers(3, 13))
        if j == 0:  # lifecycle stage: follows activity
            codes = np.clip(np.floor(2 + 1.2 * z + rng.standard_normal(n_rows)), 0, k - 1)
        else:  # last-n tokens and the like: skewed categorical codes
            p = rng.dirichlet(np.ones(k))
            codes = rng.choice(k, n_rows, p=p).astype(np.float64)
        Xf[:, col] = codes
        names.append(f"code_{j}")
        col += 1

    # First column of each kind: counts at 0, then recencies, rates, codes.
    r0 = layout["counts"]
    q0 = r0 + layout["recencies"]
    k0 = q0 + layout["rates"]
    cnt = np.log1p(Xf[:, 0:4])
    rec_raw = Xf[:, r0 : r0 + 3]
    rec = np.log1p(np.nan_to_num(rec_raw, nan=730.0))
    rate = np.nan_to_num(Xf[:, q0 : q0 + 3], nan=0.0)
    stage = Xf[:, k0]
    token = Xf[:, n_cols - 1]

    # Logging policy: "none" on about half the rows, sends depend on the features.
    n_act = len(ACTIONS)
    p_none = _sigmoid(0.1 - 0.4 * z + 0.3 * (rate[:, 0] - rate[:, 0].mean()) * 4)
    w = rng.normal(0.0, 0.5, (n_act - 1, 3))
    share = np.log(rng.dirichlet(np.full(n_act - 1, 3.0)))
    logits = share[None, :] + np.column_stack([z, v, stage - stage.mean()]) @ w.T
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    cum = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1)
    send_code = 1 + (rng.random(n_rows)[:, None] > cum).sum(axis=1)
    action = np.where(rng.random(n_rows) < p_none, 0, np.minimum(send_code, n_act - 1))
    del logits, probs, cum

    # Outcomes: main effects plus action x feature interactions (none has no effect).
    main_conv = (
        0.5 * cnt[:, 0]
        + 0.3 * cnt[:, 1]
        - 0.35 * rec[:, 0]
        + 1.2 * (rate[:, 0] - 0.3)
        + 0.25 * np.minimum(stage, 3)
        + 0.3 * v
        + 0.4 * np.isnan(rec_raw[:, 1])
    )
    main_churn = (
        -0.6 * z - 0.4 * cnt[:, 2] + 0.3 * rec[:, 1] - 0.8 * rate[:, 1] + 0.3 * (stage == 0)
    )
    alpha = rng.uniform(-0.1, 0.4, n_act)
    beta = rng.normal(0.0, 0.6, n_act)
    gamma = rng.normal(0.0, 0.4, n_act)
    fatigue = rng.uniform(0.0, 0.25, n_act)
    rescue = rng.normal(0.0, 0.3, n_act)
    alpha[0] = beta[0] = gamma[0] = fatigue[0] = rescue[0] = 0.0
    which = action % 3
    rate_a = rate[np.arange(n_rows), which] - 0.3
    tau_conv = alpha[action] + beta[action] * rate_a * 2 + gamma[action] * (token == action % 4)
    tau_churn = fatigue[action] * cnt[:, 3] + rescue[action] * (z < -0.5)
    conv_logit = main_conv + tau_conv
    churn_logit = main_churn + tau_churn
    conv_logit += _intercept_for_rate(conv_logit, 0.10)
    churn_logit += _intercept_for_rate(churn_logit, 0.05)
    y_conv = (rng.random(n_rows) < _sigmoid(conv_logit)).astype(np.float64)
    y_churn = (rng.random(n_rows) < _sigmoid(churn_logit)).astype(np.float64)

    X = np.ascontiguousarray(Xf)
    del Xf
    return X, action.astype(np.int64), y_conv, y_churn, names


# --------------------------------------------------------------------------- child


def effect_stand_ins(names: list[str]) -> list[str]:
    """The synthetic table's stand-in for ``training.effect_features``, the columns
    ``touchpoint train`` lets the shared offset split on by default: every ``rate_*`` column
    (its action effects live in rates, as the simulator's live in the channel open and click
    rates), ``count_3`` and the last ``code_*`` column (the other inputs of its effects).
    44 of 170 columns, against 28 of 173 for ``touchpoint train`` on the default catalog: if
    anything the benchmark's offset has more columns to choose from than the real one."""
    codes = [name for name in names if name.startswith("code_")]
    keep = {name for name in names if name.startswith("rate_")} | {"count_3", codes[-1]}
    return [name for name in names if name in keep]


def _cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _rounds(best: dict[str, int]) -> dict[str, Any]:
    """Rounds used (best iterations) of one outcome model, summed over its boosters."""
    per_action = {k: v for k, v in best.items() if k not in ("all", "base")}
    out: dict[str, Any] = {"best_iterations": best}
    if "all" in best:
        out["summary"] = str(best["all"])
    elif "base" in best:
        out["summary"] = f"{best['base']}+{sum(per_action.values())}"
    else:
        out["summary"] = f"{sum(per_action.values())} (max {max(per_action.values())})"
    # Trees actually grown: early stopping runs `patience` rounds past the best one.
    out["trained_est"] = sum(
        min(b + DEFAULT_EARLY_STOPPING, DEFAULT_ROUNDS) for b in best.values() if b > 0
    )
    return out


#: Rows of the stand-in for a real split's validation part, against the bench's 20% held
#: out (the test part's stand-in): ``touchpoint train`` on the default world splits its
#: rows 244k / 52k / 78k, so its validation part is two thirds of its test part.
VALID_TO_TEST = 2 / 3


def fit_propensities(
    how: str,
    Xt: np.ndarray,
    at: np.ndarray,
    Xv: np.ndarray,
    av: np.ndarray,
    seed: int,
    **threads: Any,
) -> list[int]:
    """The logging-policy models one training run fits; their best rounds.

    ``cross`` (``training.train`` now): :func:`training.propensity.cross_fitted_distribution`
    on a stand-in for the validation part (a seeded sample of ``VALID_TO_TEST`` × the
    held-out rows, drawn from the training rows) and on the held-out rows as the test part,
    each row its own customer.  ``split`` (the path before): one
    :class:`training.propensity.PropensityModel` on the training rows, early-stopped on the
    held-out ones.
    """
    if how == "split":
        model = PropensityModel(
            n_actions=len(ACTIONS), seed=seed, num_threads=threads.pop("num_threads", 2)
        )
        model.fit(Xt, at, Xv, av, **threads)
        return [int(model.booster_.best_iteration)]
    n_valid = int(round(len(av) * VALID_TO_TEST))
    valid = np.sort(np.random.default_rng(seed + 2).choice(len(at), n_valid, replace=False))
    rounds: list[int] = []
    for X_part, a_part in ((Xt[valid], at[valid]), (Xv, av)):
        _dist, fold_rounds = cross_fitted_distribution(
            X_part, a_part, np.arange(len(a_part)), n_actions=len(ACTIONS), seed=seed, **threads
        )
        rounds.extend(fold_rounds)
    return rounds


def engagement_stand_ins(names: list[str]) -> list[str]:
    """The synthetic table's stand-ins for the customer attributes the engagement model
    reads (``attr_*`` in ``touchpoint train``; 5 on the default catalog): the first four
    ``code_*`` columns and the first ``rate_*``."""
    codes = [name for name in names if name.startswith("code_")][:4]
    rates = [name for name in names if name.startswith("rate_")][:1]
    return [*codes, *rates]


def _engaged(X: np.ndarray, a: np.ndarray, names: list[str], seed: int) -> np.ndarray:
    """Synthetic opens of the send rows: a third on average, by channel and stand-ins."""
    rng = np.random.default_rng(seed + 2)
    cols = [names.index(name) for name in engagement_stand_ins(names)]
    w = rng.normal(0.0, 0.4, (len(ACTIONS), len(cols)))
    inputs = np.nan_to_num(X[:, cols])
    inputs = (inputs - inputs.mean(axis=0)) / (inputs.std(axis=0) + 1e-9)
    logit = -0.7 + (inputs * w[a]).sum(axis=1)
    return (a > 0) & (rng.random(len(a)) < _sigmoid(logit))


def run_child(
    rows: int,
    n_features: int,
    formulation: str,
    seed: int,
    per_outcome: bool = False,
    sequential_propensity: bool = False,
    thread_switch: bool = True,
    refit: bool = False,
    propensity_fit: str = "cross",
    offset_members: int = OFFSET_MEMBERS,
    offset_interactions: str = "pairwise",
    offset_features: str = "effects",
    engagement: str = "on",
    offset_scale: str = OFFSET_SCALE,
) -> dict[str, Any]:
    t = time.perf_counter()
    X, a, y_conv, y_churn, names = synthetic_table(rows, n_features, seed)
    perm = np.random.default_rng(seed + 1).permutation(rows)
    n_train = int(round(rows * 0.8))
    tr, va = np.sort(perm[:n_train]), np.sort(perm[n_train:])
    Xt, Xv = X[tr], X[va]
    at, av = a[tr], a[va]
    yct, ycv, yht, yhv = y_conv[tr], y_conv[va], y_churn[tr], y_churn[va]
    del X, perm
    res: dict[str, Any] = {
        "formulation": formulation,
        "rows": rows,
        "rows_train": len(tr),
        "rows_valid": len(va),
        "features": Xt.shape[1],
        "generate_s": round(time.perf_counter() - t, 2),
        "conversion_rate": round(float(y_conv.mean()), 4),
        "churn_rate": round(float(y_churn.mean()), 4),
        "none_share": round(float((a == 0).mean()), 3),
        "nan_share": round(float(np.isnan(Xt).mean()), 3),
        "offset_members": offset_members,
        "offset_interactions": offset_interactions,
        "offset_features": offset_features,
        "engagement": engagement if formulation == "shared_offset" else "off",
        "offset_scale": offset_scale if formulation == "shared_offset" else "log_odds",
    }
    with_engagement = formulation == "shared_offset" and engagement == "on"
    engaged_t = _engaged(Xt, at, names, seed) if with_engagement else None
    engaged_v = _engaged(Xv, av, names, seed + 1) if with_engagement else None
    del tr, va, a, y_conv, y_churn
    res["generate_peak_mb"] = round(status_mb("VmHWM"), 1)
    res["data_rss_mb"] = round(status_mb("VmRSS"), 1)
    reset = reset_peak()

    load_before = os.getloadavg()
    wall0, cpu0 = time.perf_counter(), _cpu_seconds()

    t, c = time.perf_counter(), _cpu_seconds()
    sequential_propensity = sequential_propensity or per_outcome  # no side job there
    res["propensity_beside"] = not sequential_propensity
    res["propensity_fit"] = propensity_fit
    prop_rounds: list[int] = []
    if sequential_propensity:  # the path before it ran beside the outcome models
        prop_rounds = fit_propensities(propensity_fit, Xt, at, Xv, av, seed)
        res["propensity_s"] = round(time.perf_counter() - t, 2)
        res["propensity_cpu_s"] = round(_cpu_seconds() - c, 2)
    else:  # as training.train does: the outcome fit's side job, on the first free thread
        done: list[float] = []
        res["propensity_thread_switch"] = thread_switch

        def side_job(signals: SideJobSignals) -> None:
            done.append(time.perf_counter())
            prop_rounds.extend(
                fit_propensities(
                    propensity_fit,
                    Xt,
                    at,
                    Xv,
                    av,
                    seed,
                    num_threads=1,
                    more_threads=signals.chains_done if thread_switch else None,
                    threads_then=signals.num_threads,
                    stop=signals.failed,
                )
            )
            done.append(time.perf_counter())

    res["propensity_early_stopping"] = PROPENSITY_EARLY_STOPPING

    res["path"] = "per_outcome" if per_outcome else "shared"
    # The settings that decide the cost, recorded with the figures they produced.
    res["negative_keep"] = NEGATIVE_KEEP
    res["early_stopping"] = DEFAULT_EARLY_STOPPING
    res["feature_fraction"] = DEFAULT_PARAMS.get("feature_fraction")
    t, c = time.perf_counter(), _cpu_seconds()
    if per_outcome:
        for target, yt, yv in (("conversion", yct, ycv), ("churn", yht, yhv)):
            t1, c1 = time.perf_counter(), _cpu_seconds()
            _scorer, report = fit_outcome_model(
                Xt,
                at,
                yt,
                Xv,
                av,
                yv,
                actions=ACTIONS,
                formulation=formulation,  # type: ignore[arg-type]
                seed=seed,
                feature_names=names,
            )
            res[f"{target}_s"] = round(time.perf_counter() - t1, 2)
            res[f"{target}_cpu_s"] = round(_cpu_seconds() - c1, 2)
            res[f"{target}_rounds"] = _rounds(report.best_iterations)
            res[f"{target}_calibrated"] = report.calibrated
            del _scorer
    else:
        steps: list[str] = []
        shared = formulation == "shared_offset"
        interactions = offset_interactions if shared else "free"
        restrict = effect_stand_ins(names) if shared and offset_features == "effects" else None
        model = None
        if engaged_t is not None and engaged_v is not None:
            # First, as training.train does: the offset's datasets need its column.
            t3 = time.perf_counter()
            stand_ins = set(engagement_stand_ins(names))
            model = fit_engagement(
                Xt, at, engaged_t, Xv, av, engaged_v,
                feature_names=[f"attr_{n}" if n in stand_ins else n for n in names],
                actions=ACTIONS, catalog=load_catalog(None), seed=seed,
            )  # fmt: skip
            res["engagement_s"] = round(time.perf_counter() - t3, 2)
        fits = fit_outcome_models(
            Xt,
            at,
            {"conversion": yct, "churn": yht},
            Xv,
            av,
            {"conversion": ycv, "churn": yhv},
            actions=ACTIONS,
            formulation=formulation,  # type: ignore[arg-type]
            seed=seed,
            feature_names=names,
            offset_members=offset_members,
            offset_interactions=interactions,  # type: ignore[arg-type]
            offset_features=restrict,
            engagement=model,
            offset_scale=res["offset_scale"],
            progress=steps.append,
            side_job=None if sequential_propensity else side_job,
        )
        for target, (_scorer, report) in fits.items():
            res[f"{target}_rounds"] = _rounds(report.best_iterations)
            res[f"{target}_calibrated"] = report.calibrated
        res["outcome_steps"] = [step.strip() for step in steps]
        if refit and formulation == "shared_offset":
            # As `touchpoint train --refit pre-test`: after the fit, both outcomes refit
            # on more rows (here train and validation) with 1.2x the rounds chosen.
            t2, c2 = time.perf_counter(), _cpu_seconds()
            X_all, a_all = np.concatenate([Xt, Xv]), np.concatenate([at, av])
            refit_outcomes(
                X_all, a_all,
                {"conversion": np.concatenate([yct, ycv]), "churn": np.concatenate([yht, yhv])},
                {target: report for target, (_scorer, report) in fits.items()},
                actions=ACTIONS, seed=seed, feature_names=names,
                offset_interactions=interactions, offset_features=restrict, engagement=model,
                offset_scale=res["offset_scale"],
            )  # fmt: skip
            del X_all
            res["refit_rows"] = len(a_all)
            res["refit_s"] = round(time.perf_counter() - t2, 2)
            res["refit_cpu_s"] = round(_cpu_seconds() - c2, 2)
        del fits
    if not sequential_propensity:
        # Wall seconds from the start until the propensity model was done (it shares the
        # cores with the outcome models); its CPU is in the total.
        res["propensity_s"] = round(done[1] - wall0, 2)
        res["propensity_started_s"] = round(done[0] - wall0, 2)
        res["propensity_fit_s"] = round(done[1] - done[0], 2)
    res["outcomes_s"] = round(time.perf_counter() - t - res.get("refit_s", 0.0), 2)
    res["outcomes_cpu_s"] = round(_cpu_seconds() - c - res.get("refit_cpu_s", 0.0), 2)
    res["propensity_rounds"] = "/".join(map(str, prop_rounds))

    # The total is the fit's, as the target reads; a refit is reported on its own.
    res["total_s"] = round(time.perf_counter() - wall0 - res.get("refit_s", 0.0), 2)
    res["total_cpu_s"] = round(_cpu_seconds() - cpu0 - res.get("refit_cpu_s", 0.0), 2)
    res["fit_peak_rss_mb"] = round(status_mb("VmHWM"), 1) if reset else None
    res["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY", "(unset)")
    res["load_1m_during"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
    return res


# --------------------------------------------------------------------------- parent


def _measure(args: argparse.Namespace, formulation: str, repeat: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", formulation, "--rows", str(args.rows)]
    cmd += ["--features", str(args.features), "--seed", str(args.seed)]
    cmd += ["--per-outcome"] if args.per_outcome else []
    cmd += ["--sequential-propensity"] if args.sequential_propensity else []
    cmd += ["--no-thread-switch"] if args.no_thread_switch else []
    cmd += ["--refit"] if args.refit else []
    cmd += ["--propensity-fit", args.propensity_fit]
    cmd += ["--offset-members", str(args.offset_members)]
    cmd += ["--offset-interactions", args.offset_interactions]
    cmd += ["--offset-features", args.offset_features]
    cmd += ["--engagement", args.engagement]
    cmd += ["--offset-scale", args.offset_scale]
    env = os.environ.copy()
    if args.omp_wait_policy != "inherit":
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy.upper()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    out = proc.stdout.read()
    proc.stdout.close()
    # wait4 gives this child's own rusage (RUSAGE_CHILDREN would be a max over all children).
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"child failed ({proc.returncode}): {shlex.join(cmd)}")
    res = json.loads(out.strip().splitlines()[-1])
    res["repeat"] = repeat
    # Resetting VmHWM in the child also lowers the ru_maxrss the kernel reports at exit, so
    # the whole-process peak is the larger of it and the peak seen before the reset.
    res["process_peak_rss_mb"] = round(max(usage.ru_maxrss / 1024, res["generate_peak_mb"]), 1)
    res["meets_target"] = res["total_s"] <= TARGET_SECONDS
    res["x_reference"] = round(res["total_s"] / REFERENCE_SECONDS, 2)
    return res


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


COLUMNS = [
    ("formulation", "formulation"),
    ("rows", "rows (train/valid)"),
    ("features", "features"),
    ("propensity_s", "propensity s"),
    ("propensity_beside", "propensity beside"),
    ("outcomes_s", "conversion + churn s"),
    ("total_s", "total s"),
    ("total_cpu_s", "total CPU s"),
    ("rounds", "rounds conv / churn / prop"),
    ("fit_peak_rss_mb", "peak RSS fit MB"),
    ("process_peak_rss_mb", "peak RSS process MB"),
    ("meets_target", "≤ 60 s"),
    ("x_reference", "× ref 46 s"),
    ("load", "load 1m"),
]


def _cell(res: dict[str, Any], key: str) -> str:
    if key == "rows":
        return f"{res['rows']:,} ({res['rows_train']:,}/{res['rows_valid']:,})"
    if key == "rounds":
        conv, churn = res["conversion_rounds"]["summary"], res["churn_rounds"]["summary"]
        return f"{conv} / {churn} / {res['propensity_rounds']}"
    if key == "outcomes_s" and res.get("path") == "per_outcome":
        return f"{res['conversion_s']} + {res['churn_s']}"
    if key in ("meets_target", "propensity_beside"):
        return "yes" if res.get(key) else "no"
    if key == "load":
        return "{} → {}".format(*res["load_1m_during"])
    return str(res.get(key))


def markdown_table(results: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(h for _, h in COLUMNS) + " |"]
    lines.append("|" + "---|" * len(COLUMNS))
    for res in results:
        lines.append("| " + " | ".join(_cell(res, k) for k, _ in COLUMNS) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="decision points in all")
    parser.add_argument("--features", type=int, default=170)
    parser.add_argument("--formulations", default=",".join(FORMULATIONS))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--omp-wait-policy",
        choices=["inherit", "passive", "active"],
        default="inherit",
        help="OMP_WAIT_POLICY for the children; on a shared, busy machine the default (spinning)"
        " policy made LightGBM ~10x slower, `passive` avoids that",
    )
    parser.add_argument(
        "--per-outcome",
        action="store_true",
        help="fit conversion and churn with one fit_outcome_model call each (the path before "
        "the Datasets were shared, for comparisons); default: fit_outcome_models, both at once",
    )
    parser.add_argument(
        "--sequential-propensity",
        action="store_true",
        help="fit the propensity model before the outcome models, with two LightGBM threads "
        "(the path before it ran beside them, for comparisons); default: as training.train, "
        "on its own thread while the outcome models train",
    )
    parser.add_argument(
        "--no-thread-switch",
        action="store_true",
        help="keep the propensity side job on one LightGBM thread after the outcome chains are "
        "done (the path before it moved to two, for comparisons)",
    )
    parser.add_argument(
        "--refit",
        action="store_true",
        help="shared_offset: then time the refit of touchpoint train --refit pre-test on "
        "the train and validation rows (refit_s; not in total_s)",
    )
    parser.add_argument(
        "--propensity-fit",
        choices=["cross", "split"],
        default="cross",
        help="cross: cross-fit the logging propensities on the validation and test parts' "
        "stand-ins, as training.train does; split: one model on the training rows (the path "
        "before, for comparisons)",
    )
    parser.add_argument(
        "--offset-members",
        type=int,
        default=OFFSET_MEMBERS,
        help=f"shared_offset: boosters in the offset's bag (default {OFFSET_MEMBERS}, as "
        "touchpoint train; training/offset_bagging.py)",
    )
    parser.add_argument(
        "--offset-interactions",
        choices=["pairwise", "free"],
        default="pairwise",
        help="shared_offset: each branch of an offset tree splits on the action and one "
        "other feature (pairwise, the default, as touchpoint train) or on any (free)",
    )
    parser.add_argument(
        "--offset-features",
        choices=["effects", "all"],
        default="effects",
        help="shared_offset: the offset splits on the synthetic stand-ins of the effect "
        "features (effects, the default, as touchpoint train; effect_stand_ins) or on all",
    )
    parser.add_argument(
        "--engagement",
        choices=["on", "off"],
        default="on",
        help="shared_offset: fit the engagement model first and give the offset its column "
        "(on, the default, as touchpoint train; training/engagement.py) or not",
    )
    parser.add_argument(
        "--offset-scale",
        choices=["probability", "log_odds"],
        default=OFFSET_SCALE,
        help=f"shared_offset: the offset adds to the base's probability or its log-odds "
        f"(default {OFFSET_SCALE}, as touchpoint train; serving/scoring.py)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child = run_child(
            args.rows,
            args.features,
            args.child,
            args.seed,
            args.per_outcome,
            args.sequential_propensity,
            not args.no_thread_switch,
            args.refit,
            args.propensity_fit,
            args.offset_members,
            args.offset_interactions,
            args.offset_features,
            args.engagement,
            args.offset_scale,
        )
        print(json.dumps(child))
        return 0
    formulations = [f.strip() for f in args.formulations.split(",") if f.strip()]
    unknown = set(formulations) - set(FORMULATIONS)
    if unknown:
        parser.error(f"unknown formulations {sorted(unknown)}; choose from {FORMULATIONS}")

    command = shlex.join(["python", "bench/bench_training.py", *(argv or sys.argv[1:])])
    before = _uptime()
    print(f"uptime before: {before}", flush=True)
    results = []
    for formulation in formulations:
        for repeat in range(args.repeats):
            res = _measure(args, formulation, repeat)
            results.append(res)
            print(json.dumps(res), flush=True)
    after = _uptime()
    print(f"uptime after:  {after}")
    print()
    print(markdown_table(results))
    print()
    for res in results:
        if "engagement_s" in res:
            print(f"  engagement model: {res['engagement_s']} s, before the outcome models")
        if res.get("outcome_steps"):
            print(f"{res['formulation']} (repeat {res['repeat']}), conversion + churn, by step:")
            print("\n".join(f"  {step}" for step in res["outcome_steps"]))
        if "propensity_fit_s" in res:
            if "refit_s" in res:
                print(
                    f"  refit on {res['refit_rows']:,} rows: {res['refit_s']} s "
                    f"({res['refit_cpu_s']} CPU s), after the fit"
                )
            print(
                f"  propensity: started at {res['propensity_started_s']} s, fit "
                f"{res['propensity_fit_s']} s, done at {res['propensity_s']} s, "
                f"{res['propensity_fit']}, rounds {res['propensity_rounds']} (+ patience each)"
            )
    print()
    print(f"target: ≤ {TARGET_SECONDS:.0f} s for the full fit (propensity + conversion + churn)")
    print(f"reference (docs/MEASURED.md): {REFERENCE}")
    for formulation in formulations:
        totals = sorted(r["total_s"] for r in results if r["formulation"] == formulation)
        median = totals[len(totals) // 2]
        verdict = "met" if median <= TARGET_SECONDS else "NOT met"
        print(
            f"{formulation}: median total {median:.1f} s → target {verdict}; "
            f"{median / REFERENCE_SECONDS:.2f}× the reference"
        )
    print(f"command: {command}")
    if args.json:
        payload = {"command": command, "uptime_before": before, "uptime_after": after}
        args.json.write_text(json.dumps({**payload, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
