"""Reasons explain each action's score: its uplift over no action (serving.reasons)."""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest

from features.catalog import load_catalog
from features.schema import STAGES
from features.spec import FeatureSpec
from serving.bundle import Bundle, load_bundle, save_bundle
from serving.reasons import _ZERO, _pick_top, contributions, explain
from serving.scoring import OutcomeScorer
from tests.serving.bundle_factory import ACTIONS, history

CATALOG = load_catalog(None)


def _booster(X: np.ndarray, y: np.ndarray, categorical: list[int] | None = None) -> lgb.Booster:
    params = {
        "objective": "binary",
        "num_leaves": 7,
        "min_data_in_leaf": 5,
        "verbose": -1,
        "num_threads": 1,
    }
    data = lgb.Dataset(X, y, categorical_feature=categorical or "auto")
    return lgb.train(params, data, num_boost_round=15)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """A shared_offset bundle whose offset depends on the action and on feature 0."""
    spec = FeatureSpec.from_data(history(), None, channels=CATALOG.channels)
    n = spec.n_features
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, n))
    action = rng.integers(0, len(ACTIONS), 3000).astype(float)
    y = (0.3 * X[:, 1] + 2 * (action > 0) * X[:, 0] + rng.normal(size=3000) > 0).astype(float)
    # Churn depends on feature 2 and, for actions, on feature 3: other reasons than conversion.
    y_churn = (X[:, 2] - 2 * (action > 0) * X[:, 3] + rng.normal(size=3000) > 0).astype(float)
    churn = OutcomeScorer(
        "shared_offset",
        ACTIONS,
        {
            "base": _booster(X, y_churn),
            "offset": _booster(np.column_stack([X, action]), y_churn, categorical=[n]),
        },
    )
    scorer = OutcomeScorer(
        "shared_offset",
        ACTIONS,
        {
            "base": _booster(X, y),
            "offset": _booster(np.column_stack([X, action]), y, categorical=[n]),
        },
    )
    folder = save_bundle(
        tmp_path_factory.mktemp("reasons"),
        model_version="r1",
        spec=spec,
        catalog=CATALOG,
        conversion=scorer,
        churn=churn,
    )
    return load_bundle(folder)


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p / (1 - p))


def test_action_contributions_add_up_to_the_uplift_in_log_odds(bundle: Bundle) -> None:
    """SHAP is additive, so an action's contributions decompose exactly its log-odds over
    none, and none's its log-odds over ``versus``, for each outcome: the base model,
    common to every action, drops out."""
    x = np.random.default_rng(1).normal(size=bundle.spec.n_features)
    codes = list(range(len(ACTIONS)))
    for scorer in (bundle.conversion, bundle.churn):
        _, contrib = contributions(scorer, x, codes, versus=3)
        logit = _logit(scorer.predict_raw(x[None, :]))[0]
        uplift = logit - logit[0]
        uplift[0] = logit[0] - logit[3]
        np.testing.assert_allclose(contrib.sum(axis=1), uplift, atol=1e-9)


def test_reasons_rank_both_outcomes_by_their_effect_on_the_score(bundle: Bundle) -> None:
    """The first reason is the feature with the largest effect on the score, whichever
    outcome it acts through; an action the models cannot tell from no action has none."""
    # (The weights use each code's own probabilities, as the service passes them.)
    rng = np.random.default_rng(2)
    objective = bundle.catalog.objective
    codes = list(range(len(ACTIONS)))
    seen = set()
    for _ in range(8):
        x = rng.normal(size=bundle.spec.n_features)
        pc = bundle.conversion.predict(x[None, :])[0]
        pch = bundle.churn.predict(x[None, :])[0]
        reasons = explain(bundle, x, codes, p_conversion=pc, p_churn=pch, versus=2)
        _, conv = contributions(bundle.conversion, x, codes, versus=2)
        _, churn = contributions(bundle.churn, x, codes, versus=2)
        # `none` is explained against the action it beats, here code 2.
        assert all(t.endswith(")") and f"over {ACTIONS[2]} (" in t for t in reasons[0])
        assert explain(bundle, x, [0])[0] == []  # nothing to compare with: no reasons
        seen |= {o for o in ("conversion", "churn") for r in reasons for t in r if f" {o} " in t}
        for code in codes[1:]:
            effect_conv = objective.conversion_value * pc[code] * (1 - pc[code]) * conv[code]
            effect_churn = objective.churn_cost * pch[code] * (1 - pch[code]) * churn[code]
            features = np.abs(np.concatenate([effect_conv[:-1], effect_churn[:-1]]))
            if max(np.abs(conv[code]).max(), np.abs(churn[code]).max()) < 1e-12:
                assert reasons[code] == []
                continue
            assert all("over no action" in t for t in reasons[code])
            if features.max() > 0:
                best = int(np.argmax(features))
                outcome = "conversion" if best < len(effect_conv) - 1 else "churn"
                name = bundle.spec.feature_names[best % (len(effect_conv) - 1)]
                assert reasons[code][0].startswith(f"{name}=")
                assert f" {outcome} odds over no action" in reasons[code][0]
            else:
                assert reasons[code][0].startswith("action=")
    assert seen == {"conversion", "churn"}  # both kinds of reason occur


def _top_columns_reference(
    logodds: np.ndarray, weight: np.ndarray, top: int
) -> list[list[tuple[int, int]]]:
    """The plain numpy ranking the compiled ``_pick_top`` replaced (one stable argsort)."""
    m, _, n_col = logodds.shape
    present = np.abs(logodds) >= _ZERO
    size = np.abs(weight[:, :, None] * logodds)
    features = np.where(present[:, :, :-1], size[:, :, :-1], -1.0).reshape(m, -1)
    order = np.argsort(-features, axis=1, kind="stable")[:, :top]
    own = np.where(present[:, :, -1], size[:, :, -1], -1.0)
    picked = []
    for i in range(m):
        chosen = [divmod(int(k), n_col - 1) for k in order[i] if features[i, k] >= 0]
        if not chosen and own[i].max() >= 0:
            chosen = [(int(np.argmax(own[i])), n_col - 1)]
        picked.append(chosen)
    return picked


def _compiled_top(logodds: np.ndarray, weight: np.ndarray, top: int) -> list[list[tuple[int, int]]]:
    """``_pick_top`` on ``logodds`` given as differences: each row minus a zero row."""
    m, _, n_col = logodds.shape
    zero = np.zeros((1, n_col))
    picks = _pick_top(
        np.vstack([logodds[:, 0], zero]),
        np.vstack([logodds[:, 1], zero]),
        np.column_stack([np.arange(m), np.full(m, m)]),
        weight[:, 0],
        weight[:, 1],
        top,
    )
    out = []
    for i in range(m):
        chosen = [(int(o), int(col), c) for o, col, c in picks[i] if o >= 0]
        assert all(picks[i, len(chosen) :, 0] == -1)  # the picks, then only the end mark
        assert [c for *_, c in chosen] == [logodds[i, o, col] for o, col, _ in chosen]
        out.append([(o, col) for o, col, _ in chosen])
    return out


def test_top_columns_equal_a_stable_sort() -> None:
    """Ties (equal sizes, zero weights), absent contributions, NaN and rows where only the
    action column moves: the compiled pick equals the stable argsort, pair for pair."""
    rng = np.random.default_rng(3)
    for trial in range(300):
        m, n_col = int(rng.integers(1, 6)), int(rng.integers(2, 12))
        logodds = rng.choice([0.0, 0.5, -0.5, 0.25, 1e-13, 2.0], size=(m, 2, n_col))
        logodds[rng.random(logodds.shape) < 0.3] = rng.normal(size=1)[0]
        if trial % 5 == 0:
            logodds[:, :, :-1] = 0.0  # only the action's own column is left
        weight = rng.choice([0.0, 1.0, -2.0, 0.5], size=(m, 2))
        if trial % 7 == 0:
            logodds[rng.random(logodds.shape) < 0.2] = np.nan
            weight[rng.random(weight.shape) < 0.2] = np.nan
        top = int(rng.integers(1, 5))
        assert _compiled_top(logodds, weight, top) == _top_columns_reference(logodds, weight, top)


# ---------------------------------------------------------------- the frozen reference
# explain and contributions as they were before the compiled fast path (serving.reasons at
# the time): plain numpy, the stable-sort ranking above.  The fast path must match them
# string for string.


def _reference_contributions(
    scorer: OutcomeScorer, x: np.ndarray, codes: list[int], versus: int | None
) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    n = x.size
    wanted = sorted({0, *codes, *([] if versus is None else [versus])})
    at = {c: i for i, c in enumerate(wanted)}
    with_action = np.empty((len(wanted), n + 1))
    with_action[:, :n] = x
    with_action[:, n] = wanted
    per = np.zeros((len(wanted) + 1, n + 1))
    if scorer.formulation == "single":
        per[:-1] = scorer.contributions("all", with_action)
    elif scorer.formulation == "shared_offset":
        per[:-1] = scorer.contributions("offset", with_action)
    else:
        for i, code in enumerate(wanted):
            per[i, :n] = scorer.contributions(scorer.actions[code], x[None, :])[0]
    none, other = at[0], (-1 if versus is None else at[versus])
    plus = [at[c] if c else none for c in codes]
    minus = [none if c else other for c in codes]
    out = per[plus] - per[minus]
    out[[c == 0 and versus is None for c in codes]] = 0.0
    return with_action[[at[c] for c in codes]], out


def _reference_readable(
    spec: FeatureSpec, name: str, value: float, actions: tuple[str, ...]
) -> str:
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


def _reference_explain(
    bundle: Bundle,
    x: np.ndarray,
    codes: list[int],
    p_conversion: np.ndarray | None,
    p_churn: np.ndarray | None,
    versus: int | None,
    top: int,
) -> list[list[str]]:
    objective = bundle.catalog.objective
    rows, conv = _reference_contributions(bundle.conversion, x, codes, versus)
    _, churn = _reference_contributions(bundle.churn, x, codes, versus)
    actions = bundle.conversion.actions
    pc = np.full(len(codes), 0.5) if p_conversion is None else np.asarray(p_conversion)
    pch = np.full(len(codes), 0.5) if p_churn is None else np.asarray(p_churn)
    weight = np.column_stack(
        [objective.conversion_value * pc * (1 - pc), -objective.churn_cost * pch * (1 - pch)]
    )
    logodds = np.stack([conv, churn], axis=1)
    picked = _top_columns_reference(logodds, weight, top) if top > 0 else [[] for _ in codes]
    names = bundle.spec.feature_names
    out: list[list[str]] = []
    for i, code in enumerate(codes):
        if code != 0:
            suffix = " over no action"
        elif versus is not None:
            suffix = f" over {actions[versus]}"
        else:
            out.append([])
            continue
        reasons = []
        for o, col in picked[i]:
            name = names[col] if col < len(names) else "action"
            shown = _reference_readable(bundle.spec, name, float(rows[i, col]), actions)
            c = float(logodds[i, o, col])
            verb = "raises" if c > 0 else "lowers"
            reasons.append(
                f"{name}={shown} {verb} {('conversion', 'churn')[o]} odds{suffix} ({c:+.2f})"
            )
        out.append(reasons)
    return out


@pytest.fixture(scope="module")
def formulations() -> dict[str, Bundle]:
    """One bundle per formulation, on a spec with tokens, a stage and a categorical
    attribute that the models use (so readable values of every kind are shown).  The
    ``single`` bundle's churn model is left to ``pred_contrib`` (no SHAP tables); in
    ``action_only`` (shared_offset conversion, single churn) no feature varies in training,
    so only the action's own column moves the uplift."""
    spec = FeatureSpec.from_data(
        history(), None, channels=CATALOG.channels, static_categorical={"region": ("n", "s")}
    )
    names, n = spec.feature_names, spec.n_features
    rng = np.random.default_rng(4)
    X = _request_rows(rng, spec, 1000)
    action = rng.integers(0, len(ACTIONS), len(X)).astype(float)
    token, stage, region = (names.index(c) for c in ("seq_token_1", "journey_stage", "attr_region"))
    signal = np.nan_to_num(X[:, 0]) + (X[:, token] == 2) - (X[:, stage] == 1) + X[:, region]
    noise = rng.normal(size=(2, len(X)))
    y = {
        "conversion": (signal * (action % 3 - 1) + noise[0] > 0).astype(float),
        "churn": (np.nan_to_num(X[:, 1]) * (action > 4) + noise[1] > 0).astype(float),
    }
    with_action = np.column_stack([X, action])
    flat = np.column_stack([np.zeros_like(X), action])
    boosters: dict[str, dict[str, dict[str, lgb.Booster]]] = {}
    for outcome, t in y.items():
        each = {a: _booster(X[action == k], t[action == k]) for k, a in enumerate(ACTIONS)}
        offset = _booster(with_action, t, categorical=[n])
        boosters[outcome] = {
            "single": {"all": offset},
            "per_action": each,
            "offset": {"base": _booster(X, t), **each},
            "shared_offset": {"base": _booster(X, t), "offset": offset},
        }
    action_only = _booster(flat, (action % 2 + noise[0] > 0.5).astype(float), categorical=[n])
    out = {}
    for formulation in ("single", "per_action", "offset", "shared_offset", "action_only"):
        if formulation == "action_only":
            conversion = OutcomeScorer(
                "shared_offset", ACTIONS, {"base": action_only, "offset": action_only}
            )
            churn = OutcomeScorer("single", ACTIONS, {"all": action_only})
        else:
            conversion, churn = (
                OutcomeScorer(formulation, ACTIONS, boosters[o][formulation]) for o in y
            )
        if formulation == "single":
            churn._shap["all"] = None  # pred_contrib: a non-contiguous result
        out[formulation] = Bundle(
            path=Path("."),
            model_version=formulation,
            actions=ACTIONS,
            spec=spec,
            catalog=CATALOG,
            conversion=conversion,
            churn=churn,
        )
    return out


def _request_rows(rng: np.random.Generator, spec: FeatureSpec, m: int) -> np.ndarray:
    """Feature rows mixing normals, small codes (tokens, stages, categories, in and out of
    their vocabularies) and NaN."""
    X = rng.normal(size=(m, spec.n_features))
    codes = rng.random(X.shape) < 0.4
    X[codes] = rng.integers(-1, len(spec.token_vocabulary) + 3, int(codes.sum()))
    X[rng.random(X.shape) < 0.05] = np.nan
    return X


def _probabilities(rng: np.random.Generator, m: int) -> np.ndarray | None:
    """None, or probabilities with exact 0 and 1 (zero weights: ties), NaN, float32."""
    kind = rng.integers(0, 4)
    if kind == 0:
        return None
    p = rng.random(m)
    if kind == 1:
        p[rng.random(m) < 0.5] = rng.choice([0.0, 1.0])
        p[rng.random(m) < 0.1] = np.nan
    return p.astype(np.float32) if kind == 2 else p


@pytest.mark.parametrize(
    "formulation", ["single", "per_action", "offset", "shared_offset", "action_only"]
)
def test_explain_equals_the_reference(formulations: dict[str, Bundle], formulation: str) -> None:
    """Random requests: any codes (with 0, repeated), ``versus`` or none, ``top`` from 0 to
    more than there are columns, NaN features and probabilities, zero weights (ties): the
    same strings in the same order as the plain numpy reference, and the same public
    :func:`contributions`."""
    bundle = formulations[formulation]
    rng = np.random.default_rng(5)
    X = _request_rows(rng, bundle.spec, 150)
    for x in X:
        m = int(rng.integers(1, 6))
        codes = [int(c) for c in rng.integers(0, len(ACTIONS), m)]
        if rng.random() < 0.3:
            codes[0] = 0
        versus = None if rng.random() < 0.3 else int(rng.integers(0, len(ACTIONS)))
        top = int(rng.choice([0, 1, 2, 3, 5, 400]))
        pc, pch = _probabilities(rng, m), _probabilities(rng, m)
        x_in = x.astype(np.float32) if rng.random() < 0.2 else x
        got = explain(bundle, x_in, codes, p_conversion=pc, p_churn=pch, versus=versus, top=top)
        want = _reference_explain(bundle, x_in, codes, pc, pch, versus, top)
        assert got == want
        for scorer in (bundle.conversion, bundle.churn):
            rows, contrib = contributions(scorer, x_in, codes, versus=versus)
            rows_ref, contrib_ref = _reference_contributions(scorer, x_in, codes, versus)
            np.testing.assert_array_equal(rows, rows_ref)
            np.testing.assert_array_equal(contrib, contrib_ref)
