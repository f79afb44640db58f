"""The Hillstrom e-mail test as a documented, end-to-end example (docs/HILLSTROM.md).

Kevin Hillstrom's MineThatData file (64,000 customers) is a real randomized experiment over
"which touchpoint next, if any": each customer was sent a Mens e-mail, a Womens e-mail or
nothing, with probability exactly 1/3 each, and visits, conversions and spend were tracked
for two weeks.  Because the logging policy is known exactly, the value of *any* policy over
{mens_email, womens_email, none} can be estimated without bias on held-out customers.

This module

1. maps the file onto the public contract (:func:`hillstrom_to_contract`): a canonical event
   log, a customers table and a decision table with one decision per customer;
2. computes the features with the project's own pipeline (``features.pipeline``);
3. fits the LightGBM outcome models of ``training.models`` on a 50/50 split;
4. evaluates the expected-value policy of ``serving.policy`` against every static arm and
   the random logging policy by IPS / SNIPS / DR, and the visit and conversion uplift by
   uplift@30% and Qini coefficients (:func:`run_hillstrom`, :func:`format_report`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final, Literal, cast

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from features.catalog import Catalog, Objective, load_catalog
from features.ingest import normalize_events
from features.pipeline import compute_features
from features.schema import NO_ACTION
from features.spec import FeatureSpec
from serving.policy import action_costs, expected_values, greedy
from serving.scoring import Formulation, OutcomeScorer
from training.models import classification_metrics, fit_outcome_model
from training.ope import evaluate_policies
from training.uplift_metrics import qini_auc_score, uplift_at_k

__all__ = [
    "ACTIONS",
    "ATTRIBUTE_COLUMNS",
    "DEFAULT_CATALOG_PATH",
    "HILLSTROM_COLUMNS",
    "PROPENSITY",
    "SEGMENT_TO_ACTION",
    "T0",
    "HillstromResult",
    "format_report",
    "hillstrom_to_contract",
    "load_hillstrom",
    "run_hillstrom",
]

#: Columns of the MineThatData file (all required).
HILLSTROM_COLUMNS: Final = (
    "recency",
    "history_segment",
    "history",
    "mens",
    "womens",
    "zip_code",
    "newbie",
    "channel",
    "segment",
    "visit",
    "conversion",
    "spend",
)
#: Pre-send customer attributes, as named in the customers table.  The file's ``channel``
#: (where the customer bought last year: Phone/Web/Multichannel) becomes
#: ``purchase_channel`` so it cannot be mistaken for the contract's event ``channel``.
ATTRIBUTE_COLUMNS: Final = (
    "recency",
    "history_segment",
    "history",
    "mens",
    "womens",
    "zip_code",
    "newbie",
    "purchase_channel",
)
#: Arm of the test -> catalog action id.
SEGMENT_TO_ACTION: Final[Mapping[str, str]] = {
    "Mens E-Mail": "mens_email",
    "Womens E-Mail": "womens_email",
    "No E-Mail": NO_ACTION,
}
#: Action codes used by every model here: ``none`` first (code 0), as ``serving`` expects.
ACTIONS: Final = (NO_ACTION, "mens_email", "womens_email")
#: Every arm was drawn with probability exactly 1/3 (the test's design, not an estimate).
PROPENSITY: Final = 1.0 / 3.0
#: The common decision time.  The file has no dates; the data set is dated 2008-03-20, so
#: a send on 1 March with its two-week window closed by then is a plausible, fixed choice.
T0: Final = pd.Timestamp("2008-03-01T00:00:00Z")
#: Responses are placed one day after the send: inside the 14-day window, after ``T0`` so
#: that no response can leak into the features of the decision at ``T0``.
RESPONSE_DELAY: Final = pd.Timedelta(days=1)
#: Channel of the inbound responses: Hillstrom's visits and purchases are on the web site.
RESPONSE_CHANNEL: Final = "web"
#: The packaged example catalog.
DEFAULT_CATALOG_PATH: Final = (
    Path(__file__).resolve().parents[1] / "examples" / ("hillstrom_catalog.yaml")
)
#: Share of the training half kept aside for early stopping and calibration.
VALID_SHARE: Final = 0.25
#: The uplift@k cut-off of the published scikit-uplift example.
UPLIFT_K: Final = 0.3
#: Formulations fitted and compared (see ``training/models.py``).
FORMULATIONS: Final[tuple[Formulation, ...]] = ("offset", "single")

#: One LightGBM thread: the data are small (at most 24,000 rows, 8 informative columns),
#: and measured on a busy 2-core machine two OpenMP threads were 10-20x slower than one
#: (threads spin while waiting for a core).  Results are identical.
FIT_PARAMS: Final[Mapping[str, object]] = {"num_threads": 1}

Strategy = Literal["overall", "by_group"]
Progress = Callable[[str], None]


# ----------------------------------------------------------------------------- loading
def load_hillstrom(path: str | Path) -> pd.DataFrame:
    """Read the MineThatData CSV and check its columns and arms.

    Parameters
    ----------
    path : str or Path
        ``hillstrom.csv`` (the MineThatData challenge file).

    Returns
    -------
    DataFrame
        The file as read, with a fresh ``RangeIndex``.

    Raises
    ------
    FileNotFoundError
        When the file does not exist (the message says where it was looked for).
    ValueError
        When a column is missing (named) or a value is invalid (see
        :func:`hillstrom_to_contract`).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"Hillstrom data not found at {p.resolve()}: expected the MineThatData e-mail "
            "test CSV (64,000 rows; see ../shared/data/README.md)"
        )
    df = pd.read_csv(p)
    _check_columns(df)
    return df.reset_index(drop=True)


def _check_columns(df: pd.DataFrame) -> None:
    missing = [c for c in HILLSTROM_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(
            f"Hillstrom data is missing column(s) {', '.join(repr(c) for c in missing)}; "
            f"expected {', '.join(HILLSTROM_COLUMNS)}"
        )
    unknown = sorted(set(df["segment"].dropna().astype(str)) - set(SEGMENT_TO_ACTION))
    if unknown or df["segment"].isna().any():
        raise ValueError(
            f"column 'segment' must be one of {sorted(SEGMENT_TO_ACTION)}; found {unknown or 'NaN'}"
        )
    for col in ("visit", "conversion", "mens", "womens", "newbie"):
        bad = ~pd.to_numeric(df[col], errors="coerce").isin([0, 1])
        if bad.any():
            raise ValueError(f"column {col!r} must be 0/1{_first_rows(bad)}")
    # A stray text value would otherwise turn a numeric column into a categorical one,
    # silently: the customers' attributes are typed from the data.
    for col in ("spend", "recency", "history"):
        values = pd.to_numeric(df[col], errors="coerce")
        bad = values.isna() | (values < 0)
        if bad.any():
            raise ValueError(f"column {col!r} must be a number >= 0 on every row{_first_rows(bad)}")


def _first_rows(bad: pd.Series, n: int = 5) -> str:
    """``"; bad at row 2, 7 (and 3 more)"``: the first bad rows, numbered as in the file
    (its header is line 1)."""
    rows = (np.flatnonzero(bad.to_numpy()) + 2).tolist()
    shown = ", ".join(str(r) for r in rows[:n])
    return f"; bad at row {shown}" + (f" (and {len(rows) - n} more)" if len(rows) > n else "")


# ----------------------------------------------------------------------------- mapping
def hillstrom_to_contract(
    df: pd.DataFrame, *, t0: pd.Timestamp = T0
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Map the Hillstrom table onto the contract: events, customers and decisions.

    Parameters
    ----------
    df : DataFrame
        The MineThatData table (:data:`HILLSTROM_COLUMNS`).
    t0 : Timestamp, default :data:`T0`
        The common decision (send) time.

    Returns
    -------
    events : DataFrame
        The canonical event table (``features/schema.py``), built through the contract's
        own validation (``features.ingest.normalize_events``, strict): per customer a
        ``sent`` on ``email`` at ``t0`` with the arm's action and propensity 1/3 (treated
        arms only), then ``visit`` and ``purchase`` (``value`` = spend) on ``web`` at
        ``t0 + 1 day`` when they happened.  ``decision_id`` is ``hillstrom-<customer_id>``.
    customers : DataFrame
        ``customer_id`` (the row position, as a string) and :data:`ATTRIBUTE_COLUMNS`.
    decisions : DataFrame
        One row per customer: ``customer_id, decision_time, action`` (the contract's
        decision key; ``none`` for No E-Mail), ``propensity`` (1/3), then the outcomes
        ``visit``, ``conversion``, ``spend`` within the two weeks.

    Notes
    -----
    The decision table carries the ``none`` decisions that an event log cannot express
    (there is no "not sent" event): in this randomized test they are real decisions with
    a known propensity, so they are taken from the design, not sampled as
    ``features.pipeline.decision_points`` would do for an observational log.
    """
    _check_columns(df)
    t0 = pd.Timestamp(t0)
    if t0.tzinfo is None:  # the contract reads a time without offset as UTC
        t0 = t0.tz_localize("UTC")
    n = len(df)
    ids = np.arange(n).astype(str)
    action = df["segment"].astype(str).map(SEGMENT_TO_ACTION).to_numpy(dtype=object)
    visit = df["visit"].to_numpy(dtype=np.int64)
    conversion = df["conversion"].to_numpy(dtype=np.int64)
    spend = pd.to_numeric(df["spend"]).to_numpy(dtype=np.float64)

    customers = pd.DataFrame({"customer_id": ids})
    for col in ATTRIBUTE_COLUMNS:
        src = "channel" if col == "purchase_channel" else col
        customers[col] = df[src].to_numpy()

    decisions = pd.DataFrame(
        {
            "customer_id": ids,
            "decision_time": pd.Series([t0] * n, dtype="datetime64[ns, UTC]"),
            "action": pd.Categorical(action, categories=list(ACTIONS)),
            "propensity": np.full(n, PROPENSITY),
            "visit": visit,
            "conversion": conversion,
            "spend": spend,
        }
    )

    treated = action != NO_ACTION
    t_resp = t0 + RESPONSE_DELAY
    parts = [
        pd.DataFrame(
            {
                "customer_id": ids[treated],
                "timestamp": t0,
                "channel": "email",
                "event_type": "sent",
                "action": action[treated],
                "value": np.nan,
                "propensity": PROPENSITY,
                "event_id": np.char.add(ids[treated], ":sent"),
            }
        ),
        pd.DataFrame(
            {
                "customer_id": ids[visit == 1],
                "timestamp": t_resp,
                "channel": RESPONSE_CHANNEL,
                "event_type": "visit",
                "value": np.nan,
                "event_id": np.char.add(ids[visit == 1], ":visit"),
            }
        ),
        pd.DataFrame(
            {
                "customer_id": ids[conversion == 1],
                "timestamp": t_resp,
                "channel": RESPONSE_CHANNEL,
                "event_type": "purchase",
                "value": spend[conversion == 1],
                "event_id": np.char.add(ids[conversion == 1], ":purchase"),
            }
        ),
    ]
    raw = pd.concat(parts, ignore_index=True)
    raw["decision_id"] = "hillstrom-" + raw["customer_id"]
    raw["timestamp"] = raw["timestamp"].astype(str)
    # Strict: a mapping bug must fail here rather than quietly lose rows.
    events = normalize_events(raw, strict=True, source="hillstrom").events
    return events, customers, decisions


# ----------------------------------------------------------------------------- result
@dataclass(frozen=True)
class HillstromResult:
    """Everything :func:`run_hillstrom` measured on the held-out half.

    Attributes
    ----------
    seed : int
        Seed of the split, the models and the bootstrap.
    n_customers, n_train, n_valid, n_test : int
        Customers in the file; in the model-fitting part, the early-stopping part (both
        from the training half) and the held-out half.
    test_arm_counts : dict of str to int
        Held-out customers per logged action.
    conversion_value : float
        Value of one conversion used by the policy (mean spend of training converters).
    costs : dict of str to float
        Cost per send of every action (``none`` = 0).
    formulation : str
        Conversion-model formulation behind :attr:`model_policy`, chosen on the
        validation part (highest DR value of the spend − cost reward).
    valid_dr : dict of str to float
        That validation DR value per formulation.
    policy_values : DataFrame
        ``reward, policy, estimator, value, ci_low, ci_high, std_error, ess, n`` for the
        rewards ``spend_minus_cost`` and ``conversion`` on the held-out half.
    differences : DataFrame
        ``reward, policy, versus, ips_diff, ci_low, ci_high``: IPS of the selected model
        policy minus IPS of every other policy, with a paired 95 % bootstrap interval.
    arm_means : DataFrame
        ``reward, action, n, mean, ips_identity``: each arm's observed mean reward on the
        held-out half and ``3 * sum(reward in arm) / n_test``, which is what IPS of the
        static policy must equal exactly.
    policy_shares : DataFrame
        ``formulation, action, share``: how often each model policy picks each action.
    conversion_metrics : DataFrame
        ``formulation`` plus AUC / log-loss / Brier / ECE / rate of P(conversion | x, a)
        on the held-out half (logged actions).
    uplift_at_k : DataFrame
        ``split, formulation, strategy, value``: visit uplift@30%, Womens vs No E-Mail.
        ``split`` is ``ours`` (the womens/none rows of our 50/50 split) or ``sklift`` (the
        exact split of scikit-uplift's example: womens/none rows only,
        ``train_test_split(test_size=0.5, random_state=seed)``).
    qini : DataFrame
        ``formulation, target, action, qini``: Qini coefficient of each arm against no
        e-mail on the held-out half, ranking by that arm's predicted uplift.
    """

    seed: int
    n_customers: int
    n_train: int
    n_valid: int
    n_test: int
    test_arm_counts: dict[str, int]
    conversion_value: float
    costs: dict[str, float]
    formulation: str
    valid_dr: dict[str, float]
    policy_values: pd.DataFrame
    differences: pd.DataFrame
    arm_means: pd.DataFrame
    policy_shares: pd.DataFrame
    conversion_metrics: pd.DataFrame
    uplift_at_k: pd.DataFrame
    qini: pd.DataFrame
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def model_policy(self) -> str:
        """Name of the selected model policy in :attr:`policy_values`."""
        return f"model_{self.formulation}"

    def policy_value(
        self, policy: str, estimator: str = "ips", reward: str = "spend_minus_cost"
    ) -> pd.Series:
        """The row of :attr:`policy_values` for one policy, estimator and reward."""
        pv = self.policy_values
        rows = pv[
            (pv["policy"] == policy) & (pv["estimator"] == estimator) & (pv["reward"] == reward)
        ]
        if len(rows) != 1:
            raise KeyError(f"no policy value for {policy!r} / {estimator!r} / {reward!r}")
        return rows.iloc[0]


# ----------------------------------------------------------------------------- helpers
def _features(
    events: pd.DataFrame,
    customers: pd.DataFrame,
    decisions: pd.DataFrame,
    catalog: Catalog,
) -> tuple[np.ndarray, list[str]]:
    """The feature matrix of every decision, by the project's pipeline."""
    spec = FeatureSpec.from_data(events, customers, channels=catalog.channels)
    table = compute_features(events, decisions, customers, spec=spec)
    names = list(spec.feature_names)
    return table[names].to_numpy(dtype=np.float64), names


def _one_hot(codes: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros((len(codes), k))
    out[np.arange(len(codes)), codes] = 1.0
    return out


def _fit(
    X: np.ndarray,
    a: np.ndarray,
    y: np.ndarray,
    fit_idx: np.ndarray,
    valid_idx: np.ndarray,
    *,
    actions: tuple[str, ...],
    formulation: Formulation,
    seed: int,
    names: list[str],
) -> OutcomeScorer:
    scorer, _ = fit_outcome_model(
        X[fit_idx],
        a[fit_idx],
        y[fit_idx],
        X[valid_idx],
        a[valid_idx],
        y[valid_idx],
        actions=actions,
        formulation=formulation,
        params=FIT_PARAMS,
        seed=seed,
        feature_names=names,
    )
    return scorer


def _carve_valid(idx: np.ndarray, strata: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split training rows into a fitting part and a validation part (for early stopping).

    Stratified on (action, outcome): conversions are under 1 %, and a validation part
    that happens to be short of them in one arm makes early stopping erratic.
    """
    fit_idx, valid_idx = train_test_split(
        idx, test_size=VALID_SHARE, random_state=seed, stratify=strata[idx]
    )
    return np.sort(fit_idx), np.sort(valid_idx)


def _visit_uplift_at_k(
    X: np.ndarray,
    a: np.ndarray,
    visit: np.ndarray,
    train_idx: np.ndarray,
    test_idx: np.ndarray,
    *,
    split: str,
    seed: int,
    names: list[str],
) -> list[dict[str, object]]:
    """uplift@30% of visit, Womens E-Mail vs No E-Mail, for a model fit on ``train_idx``.

    Only womens/none rows are used (both for fitting and for scoring), as in
    scikit-uplift's example; the action codes become 0 = none, 1 = womens_email.
    """
    womens = ACTIONS.index("womens_email")
    two = np.flatnonzero(np.isin(a, (0, womens)))
    tr = np.intersect1d(train_idx, two)
    te = np.intersect1d(test_idx, two)
    a2 = np.where(a == womens, 1, 0).astype(np.int64)
    fit_idx, valid_idx = _carve_valid(tr, a2 * 2 + visit, seed)
    rows: list[dict[str, object]] = []
    for formulation in FORMULATIONS:
        scorer = _fit(
            X,
            a2,
            visit,
            fit_idx,
            valid_idx,
            actions=(NO_ACTION, "womens_email"),
            formulation=formulation,
            seed=seed,
            names=names,
        )
        p = scorer.predict(X[te])
        uplift = p[:, 1] - p[:, 0]
        for strategy in cast(tuple[Strategy, ...], ("overall", "by_group")):
            value = uplift_at_k(visit[te], a2[te], uplift, k=UPLIFT_K, strategy=strategy)
            rows.append(
                {
                    "split": split,
                    "formulation": formulation,
                    "strategy": strategy,
                    "value": value,
                    "n_test": len(te),
                }
            )
    return rows


def _paired_differences(
    policies: Mapping[str, np.ndarray],
    model: str,
    *,
    action: np.ndarray,
    reward: np.ndarray,
    pscore: np.ndarray,
    n_bootstrap: int,
    seed: int,
    alpha: float = 0.05,
) -> list[dict[str, object]]:
    """IPS of ``model`` minus IPS of every other policy, with a paired bootstrap CI.

    Two separate intervals that overlap say little about the difference: both estimates
    are made on the same customers, so their errors are correlated.  The difference of
    the two IPS estimates is itself a mean over rounds, ``(w_model - w_other) * r``, and is
    bootstrapped as one statistic.
    """
    rows_idx = np.arange(len(action))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(action), size=(n_bootstrap, len(action)))
    w_model = policies[model][rows_idx, action] / pscore
    out: list[dict[str, object]] = []
    for name, dist in policies.items():
        if name == model:
            continue
        d = (w_model - dist[rows_idx, action] / pscore) * reward
        reps = d[draws].mean(axis=1)
        low, high = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
        out.append(
            {
                "policy": model,
                "versus": name,
                "ips_diff": float(d.mean()),
                "ci_low": float(low),
                "ci_high": float(high),
            }
        )
    return out


def _qini_rows(
    formulation: str,
    target: str,
    p: np.ndarray,
    a: np.ndarray,
    y: np.ndarray,
) -> list[dict[str, object]]:
    """Qini coefficient of each arm against no e-mail, ranking by the arm's Δp."""
    rows: list[dict[str, object]] = []
    for code in range(1, len(ACTIONS)):
        rows_arm = np.isin(a, (0, code))
        uplift = p[rows_arm, code] - p[rows_arm, 0]
        treatment = (a[rows_arm] == code).astype(np.float64)
        rows.append(
            {
                "formulation": formulation,
                "target": target,
                "action": ACTIONS[code],
                "qini": qini_auc_score(y[rows_arm], treatment, uplift),
            }
        )
    return rows


# ----------------------------------------------------------------------------- the run
def run_hillstrom(
    path: str | Path,
    *,
    seed: int = 42,
    catalog: Catalog | str | Path | None = None,
    n_bootstrap: int = 1000,
    progress: Progress | None = None,
) -> HillstromResult:
    """Train and evaluate the next-best-touchpoint policy on the Hillstrom e-mail test.

    Parameters
    ----------
    path : str or Path
        ``hillstrom.csv``.
    seed : int, default 42
        Seed of the 50/50 split (``sklearn.model_selection.train_test_split(test_size=0.5,
        random_state=seed)``, not stratified, as scikit-uplift's example), of LightGBM and
        of the bootstrap.
    catalog : Catalog or path, optional
        Default: ``examples/hillstrom_catalog.yaml``.  Its actions must be
        ``mens_email`` and ``womens_email``.  Its ``objective.conversion_value`` is
        replaced by the mean spend of the converters of the training half.
    n_bootstrap : int, default 1000
        Bootstrap replicates of the policy-value intervals (95 %).
    progress : callable, optional
        Called with one line of text per step.

    Returns
    -------
    HillstromResult

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    ValueError
        When a column is missing (it is named) or holds invalid values.
    """
    import time

    say = progress or (lambda _msg: None)
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = now - clock
        clock = now

    df = load_hillstrom(path)
    cat = _resolve_catalog(catalog)
    say(f"loaded {len(df):,} customers")
    events, customers, decisions = hillstrom_to_contract(df)
    X, names = _features(events, customers, decisions, cat)
    lap("features")
    say(f"contract: {len(events):,} events; features: {X.shape[1]} columns")

    a = decisions["action"].cat.codes.to_numpy(dtype=np.int64)  # categories = ACTIONS
    visit = decisions["visit"].to_numpy(dtype=np.float64)
    conv = decisions["conversion"].to_numpy(dtype=np.float64)
    spend = decisions["spend"].to_numpy(dtype=np.float64)
    pscore = decisions["propensity"].to_numpy(dtype=np.float64)
    n = len(decisions)

    # 50/50 split, unstratified, exactly as scikit-uplift's example splits its rows.
    train_idx, test_idx = train_test_split(np.arange(n), test_size=0.5, random_state=seed)
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    fit_idx, valid_idx = _carve_valid(train_idx, a * 2 + conv.astype(np.int64), seed)

    # What one conversion is worth, learned from the training half only.
    converters = train_idx[conv[train_idx] == 1]
    conversion_value = float(spend[converters].mean())
    cat = replace(cat, objective=Objective(conversion_value, cat.objective.churn_cost))
    costs = action_costs(cat, ACTIONS)
    say(f"conversion_value = {conversion_value:.2f} (mean spend of {len(converters)} converters)")

    # ---- conversion models and their policies
    policies: dict[str, np.ndarray] = {}
    shares: list[dict[str, object]] = []
    metrics: list[dict[str, object]] = []
    qini: list[dict[str, object]] = []
    q_spend: dict[str, np.ndarray] = {}
    valid_dr: dict[str, float] = {}
    k = len(ACTIONS)
    for formulation in FORMULATIONS:
        scorer = _fit(
            X,
            a,
            conv,
            fit_idx,
            valid_idx,
            actions=ACTIONS,
            formulation=formulation,
            seed=seed,
            names=names,
        )
        p_valid = scorer.predict(X[valid_idx])
        p_test = scorer.predict(X[test_idx])

        def policy_of(p: np.ndarray) -> np.ndarray:
            ev = expected_values(
                p,
                np.zeros_like(p),  # Hillstrom has no churn: p_churn = 0 for every action
                costs,
                conversion_value=conversion_value,
                churn_cost=0.0,
            )
            return greedy(ev, np.ones_like(ev, dtype=bool))

        # Select the formulation on validation, never on the held-out half.
        v = valid_idx
        reward_v = spend[v] - costs[a[v]]
        q_v = conversion_value * p_valid - costs[None, :]
        dr_v = evaluate_policies(
            {"m": _one_hot(policy_of(p_valid), k)},
            action=a[v],
            reward=reward_v,
            pscore=pscore[v],
            estimated_rewards=q_v,
            estimators=("dr",),
            n_bootstrap=2,
            seed=seed,
        )
        valid_dr[formulation] = float(dr_v["value"].iloc[0])

        choice = policy_of(p_test)
        policies[f"model_{formulation}"] = _one_hot(choice, k)
        q_spend[formulation] = conversion_value * p_test - costs[None, :]
        for code, action in enumerate(ACTIONS):
            shares.append(
                {
                    "formulation": formulation,
                    "action": action,
                    "share": float(np.mean(choice == code)),
                }
            )
        p_logged = scorer.predict_logged(X[test_idx], a[test_idx])
        metrics.append(
            {"formulation": formulation, **classification_metrics(conv[test_idx], p_logged)}
        )
        qini += _qini_rows(formulation, "conversion", p_test, a[test_idx], conv[test_idx])
        say(
            f"conversion model ({formulation}): valid DR {valid_dr[formulation]:.4f}, "
            f"test AUC {metrics[-1]['auc']:.3f}"
        )

        # Visit model on all three arms, for the visit Qini of each arm.
        vfit, vvalid = _carve_valid(train_idx, a * 2 + visit.astype(np.int64), seed)
        visit_scorer = _fit(
            X,
            a,
            visit,
            vfit,
            vvalid,
            actions=ACTIONS,
            formulation=formulation,
            seed=seed,
            names=names,
        )
        qini += _qini_rows(
            formulation, "visit", visit_scorer.predict(X[test_idx]), a[test_idx], visit[test_idx]
        )
    lap("conversion_and_visit_models")
    formulation_chosen = max(FORMULATIONS, key=lambda f: valid_dr[f])
    say(f"selected formulation: {formulation_chosen}")

    # ---- policy values on the held-out half
    t = test_idx
    n_test = len(t)
    static = {
        f"all_{action}": _one_hot(np.full(n_test, code), k) for code, action in enumerate(ACTIONS)
    }
    all_policies = {**policies, **static, "random_logging": np.full((n_test, k), 1.0 / k)}
    tables = []
    rewards = {
        "spend_minus_cost": (spend[t] - costs[a[t]], q_spend[formulation_chosen]),
        "conversion": (conv[t], None),
    }
    for reward_name, (reward, q_hat) in rewards.items():
        if q_hat is None:
            # DR for conversion uses the chosen conversion model's probabilities.
            q_hat = (q_spend[formulation_chosen] + costs[None, :]) / conversion_value
        table = evaluate_policies(
            all_policies,
            action=a[t],
            reward=reward,
            pscore=pscore[t],
            estimated_rewards=q_hat,
            n_bootstrap=n_bootstrap,
            seed=seed,
        )
        table.insert(0, "reward", reward_name)
        tables.append(table)
    policy_values = pd.concat(tables, ignore_index=True)
    diff_rows = []
    for reward_name, (reward, _) in rewards.items():
        for row in _paired_differences(
            all_policies,
            f"model_{formulation_chosen}",
            action=a[t],
            reward=reward,
            pscore=pscore[t],
            n_bootstrap=n_bootstrap,
            seed=seed,
        ):
            diff_rows.append({"reward": reward_name, **row})
    lap("policy_values")

    arm_rows = []
    for reward_name, (reward, _) in rewards.items():
        for code, action in enumerate(ACTIONS):
            in_arm = a[t] == code
            arm_rows.append(
                {
                    "reward": reward_name,
                    "action": action,
                    "n": int(in_arm.sum()),
                    "mean": float(reward[in_arm].mean()),
                    "ips_identity": float(reward[in_arm].sum() / PROPENSITY / n_test),
                }
            )

    # ---- visit uplift@30%, Womens vs No E-Mail: our split, then scikit-uplift's split
    uplift_rows = _visit_uplift_at_k(
        X, a, visit, train_idx, test_idx, split="ours", seed=seed, names=names
    )
    two = np.flatnonzero(a != ACTIONS.index("mens_email"))
    sk_train, sk_test = train_test_split(two, test_size=0.5, random_state=seed)
    uplift_rows += _visit_uplift_at_k(
        X, a, visit, np.sort(sk_train), np.sort(sk_test), split="sklift", seed=seed, names=names
    )
    lap("visit_uplift")

    return HillstromResult(
        seed=seed,
        n_customers=n,
        n_train=len(fit_idx),
        n_valid=len(valid_idx),
        n_test=n_test,
        test_arm_counts={action: int((a[t] == c).sum()) for c, action in enumerate(ACTIONS)},
        conversion_value=conversion_value,
        costs={action: float(costs[c]) for c, action in enumerate(ACTIONS)},
        formulation=formulation_chosen,
        valid_dr=valid_dr,
        policy_values=policy_values,
        differences=pd.DataFrame(diff_rows),
        arm_means=pd.DataFrame(arm_rows),
        policy_shares=pd.DataFrame(shares),
        conversion_metrics=pd.DataFrame(metrics),
        uplift_at_k=pd.DataFrame(uplift_rows),
        qini=pd.DataFrame(qini),
        timings=timings,
    )


def _resolve_catalog(catalog: Catalog | str | Path | None) -> Catalog:
    cat = catalog if isinstance(catalog, Catalog) else load_catalog(catalog or DEFAULT_CATALOG_PATH)
    if set(cat.action_ids) != set(ACTIONS[1:]):
        raise ValueError(
            f"the Hillstrom catalog must list exactly the actions {list(ACTIONS[1:])}, "
            f"got {list(cat.action_ids)}"
        )
    return cat


# ----------------------------------------------------------------------------- report
def format_report(result: HillstromResult) -> str:
    """The measurements as a plain-text report (fixed-width tables)."""
    r = result
    lines = [
        "Hillstrom e-mail test: next-best-touchpoint policy on the held-out half",
        f"customers {r.n_customers:,}; model fit {r.n_train:,} + early stopping {r.n_valid:,}; "
        f"held out {r.n_test:,} ({', '.join(f'{k} {v:,}' for k, v in r.test_arm_counts.items())})",
        f"seed {r.seed}; propensity 1/3; conversion_value {r.conversion_value:.2f}; "
        f"costs {', '.join(f'{k} {v:.2f}' for k, v in r.costs.items())}",
        f"conversion model: {r.formulation} (validation DR: "
        + ", ".join(f"{f} {v:.4f}" for f, v in r.valid_dr.items())
        + ")",
        "",
    ]
    for reward, unit in (
        ("spend_minus_cost", "$ per customer"),
        ("conversion", "conversions per customer"),
    ):
        lines.append(f"Policy value, reward = {reward} ({unit}), 95% bootstrap CI")
        pv = r.policy_values[r.policy_values["reward"] == reward]
        wide = pv.pivot(index="policy", columns="estimator", values="value")
        order = list(dict.fromkeys(pv["policy"]))
        lines.append(
            f"  {'policy':<22}{'IPS':>10}  {'IPS 95% CI':<22}{'SNIPS':>10}{'DR':>10}{'ESS':>10}"
        )
        for policy in order:
            ips = pv[(pv["policy"] == policy) & (pv["estimator"] == "ips")].iloc[0]
            mark = " *" if policy == r.model_policy else ""
            ci = f"[{ips['ci_low']:.4f}, {ips['ci_high']:.4f}]"
            lines.append(
                f"  {policy + mark:<22}{ips['value']:>10.4f}  {ci:<22}"
                f"{wide.loc[policy, 'snips']:>10.4f}{wide.loc[policy, 'dr']:>10.4f}"
                f"{ips['ess']:>10.0f}"
            )
        lines.append("")
    lines.append("Selected model policy minus each other policy (IPS, paired 95% bootstrap CI)")
    for row in r.differences.itertuples():
        lines.append(
            f"  {row.reward:<18}vs {row.versus:<18}{row.ips_diff:>+10.4f}  "
            f"[{row.ci_low:+.4f}, {row.ci_high:+.4f}]"
        )
    lines.append("")
    lines.append("  * the selected model policy. Actions it picks (share of held-out customers):")
    for formulation, grp in r.policy_shares.groupby("formulation", sort=False):
        shares = ", ".join(f"{row.action} {row.share:.1%}" for row in grp.itertuples())
        lines.append(f"    {formulation}: {shares}")
    lines.append("")
    lines.append("Observed mean reward per arm on the held-out half (what a static policy earns)")
    for row in r.arm_means.itertuples():
        lines.append(
            f"  {row.reward:<18}{row.action:<14} n={row.n:<7,} mean {row.mean:.4f}  "
            f"(IPS identity 3*sum/n = {row.ips_identity:.4f})"
        )
    lines.append("")
    lines.append("Conversion model on the held-out half (logged actions)")
    for row in r.conversion_metrics.itertuples():
        lines.append(
            f"  {row.formulation:<8} AUC {row.auc:.4f}  log-loss {row.logloss:.5f}  "
            f"Brier {row.brier:.5f}  ECE {row.ece:.5f}"
        )
    lines.append("")
    lines.append("Visit uplift@30%, Womens E-Mail vs No E-Mail (scikit-uplift example: 0.0661)")
    lines.append(f"  {'split':<8}{'formulation':<13}{'overall':>10}{'by_group':>10}{'n':>8}")
    u = r.uplift_at_k
    for key, grp in u.groupby(["split", "formulation"], sort=False):
        split, form = (str(k) for k in cast(tuple[str, str], key))
        vals = dict(zip(grp["strategy"], grp["value"], strict=True))
        lines.append(
            f"  {split:<8}{form:<13}{vals['overall']:>10.4f}{vals['by_group']:>10.4f}"
            f"{int(grp['n_test'].iloc[0]):>8,}"
        )
    lines.append("")
    lines.append("Qini coefficient per arm vs No E-Mail (held-out half; 0 = random, 1 = oracle)")
    qn = r.qini
    forms = list(dict.fromkeys(qn["formulation"]))
    lines.append(f"  {'target':<12}{'action':<14}" + "".join(f"{f:>10}" for f in forms))
    for target, action in dict.fromkeys(zip(qn["target"], qn["action"], strict=True)):
        cells = [
            float(
                qn.loc[
                    (qn["target"] == target) & (qn["action"] == action) & (qn["formulation"] == f),
                    "qini",
                ].iloc[0]
            )
            for f in forms
        ]
        lines.append(f"  {target:<12}{action:<14}" + "".join(f"{v:>10.4f}" for v in cells))
    return "\n".join(lines)
