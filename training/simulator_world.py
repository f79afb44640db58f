"""The synthetic world behind :mod:`training.simulator`: customers, dynamics, logging policy.

Everything that decides *how the world behaves* lives here, written once and used both by
the forward simulation and by the closed-form ground truth, so that the two can never
drift apart.  The daily dynamics of an active customer are (see ``docs/SIMULATOR.md``)::

    churn hazard     h_c = 1 - exp(-c0 * exp(A + KAPPA_FATIGUE * F))
    purchase hazard  h_p = 1 - exp(-(lam0 + B))
    end of day       B <- RHO_BOOST * B + dB(send)
                     A <- RHO_ANNOY * A + dA(send)
                     F <- RHO_FATIGUE * F + 1{send}

where ``B`` (purchase boost), ``A`` (log churn shift) and ``F`` (decayed count of recent
sends, the fatigue) form the dynamic state, and ``dB``/``dA`` depend on the action, the
customer's latent channel affinity and the fatigue at send time.  Nothing random (a
visit, a purchase, an open) feeds back into ``B``, ``A`` or ``F``: given the state and
the future sends, the hazards are deterministic, which is what makes the ground truth
exact.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

# --- dynamics constants (the causal structure; documented in docs/SIMULATOR.md) -------
#: Daily decay of the purchase boost ``B`` that a send creates.
RHO_BOOST = 0.75
#: Daily decay of the log churn shift ``A`` (annoyance > 0, retention < 0).
RHO_ANNOY = 0.9
#: Daily decay of the fatigue ``F`` (an exponentially weighted count of recent sends).
RHO_FATIGUE = 0.8
#: Log churn hazard added per unit of fatigue: over-contacting drives customers away.
KAPPA_FATIGUE = 0.05
#: Benefits (purchase boost, retention) of a send shrink by ``exp(-FATIGUE_DAMPING * F)``.
FATIGUE_DAMPING = 0.4
#: Annoyance of a send grows by ``1 + FATIGUE_ANNOY * F``.
FATIGUE_ANNOY = 0.3
#: Slope of the receptiveness ``g = sigmoid(AFFINITY_SLOPE * z)`` in the affinity ``z``.
AFFINITY_SLOPE = 1.5
#: Standard deviation of the latent (unobserved) part of each channel affinity.
AFFINITY_NOISE = 0.2

AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
AGE_PROBS = (0.14, 0.20, 0.19, 0.17, 0.15, 0.15)
REGIONS = ("north", "south", "east", "west")
REGION_PROBS = (0.30, 0.25, 0.25, 0.20)
DEVICES = ("ios", "android", "desktop")


@dataclass(frozen=True)
class ActionEffect:
    """How one action moves the hazards of a customer with receptiveness ``g``.

    ``dB = boost * g * damp`` is added to the daily purchase hazard; ``dA = -retention *
    g * damp + annoyance * (1 - g) * (1 + FATIGUE_ANNOY * F)`` to the log churn hazard.
    """

    boost: float
    retention: float
    annoyance: float


#: Effects of the default catalog's actions.  Unknown actions fall back on their channel.
ACTION_EFFECTS: dict[str, ActionEffect] = {
    "email_promo": ActionEffect(0.0184, 0.00, 0.25),
    "email_content": ActionEffect(0.0076, 0.15, 0.05),
    "sms_offer": ActionEffect(0.0281, 0.00, 0.60),
    "push_reminder": ActionEffect(0.0248, 0.05, 0.35),
    "phone_call": ActionEffect(0.0216, 1.00, 1.20),
    "chat_invite": ActionEffect(0.0162, 0.20, 0.15),
    "store_invitation": ActionEffect(0.0248, 0.60, 0.10),
    "social_ad": ActionEffect(0.0130, 0.00, 0.08),
    "display_ad": ActionEffect(0.0076, 0.00, 0.04),
    "direct_mail_offer": ActionEffect(0.0259, 0.30, 0.10),
}
_GENERIC_EFFECT = ActionEffect(0.004, 0.05, 0.15)


@dataclass(frozen=True)
class ChannelResponse:
    """Response behaviour of a channel: logits of open and click, base unsubscribe rate."""

    open_logit: float | None  # None: the channel has no "open" (ads: impressions)
    click_logit: float
    unsubscribe: float


CHANNEL_RESPONSES: dict[str, ChannelResponse] = {
    "email": ChannelResponse(-0.6, -1.6, 0.004),
    "sms": ChannelResponse(1.0, -1.8, 0.008),
    "push": ChannelResponse(-0.3, -1.5, 0.010),
    "phone": ChannelResponse(-0.2, -2.5, 0.015),
    "chat": ChannelResponse(-0.8, -1.2, 0.004),
    "store": ChannelResponse(-0.5, -2.5, 0.003),
    "social": ChannelResponse(None, -3.0, 0.001),
    "ads": ChannelResponse(None, -3.5, 0.0005),
    "direct_mail": ChannelResponse(-0.4, -2.8, 0.004),
}
_GENERIC_RESPONSE = ChannelResponse(-0.5, -2.0, 0.005)

#: Share of customers who consent to a channel (push: mobile and desktop users apart).
CONSENT_RATES: dict[str, float] = {
    "email": 0.95,
    "sms": 0.60,
    "phone": 0.55,
    "chat": 0.90,
    "store": 0.90,
    "social": 0.85,
    "ads": 0.92,
    "direct_mail": 0.75,
}


def default_catalog() -> dict[str, Any]:
    """Load ``features/default_catalog.yaml`` as a plain dict (no dependency on catalog.py)."""
    try:
        resource = importlib.resources.files("features").joinpath("default_catalog.yaml")
        text = resource.read_text(encoding="utf-8")
    except (NotADirectoryError, TypeError, FileNotFoundError):
        # ``features`` without an ``__init__.py`` is a namespace package, which some
        # importlib.resources versions cannot read under an editable install.
        from features import schema

        text = Path(schema.__file__).with_name("default_catalog.yaml").read_text(encoding="utf-8")
    loaded = yaml.safe_load(text)
    if not isinstance(loaded, dict):  # pragma: no cover - the shipped file is a mapping
        raise ValueError("default_catalog.yaml is not a mapping")
    return loaded


def _sigmoid(x: FloatArray) -> FloatArray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class World:
    """Static per-customer parameters (``n`` customers, ``a`` actions, ``k`` channels).

    Attributes are arrays indexed by customer; ``effect_boost``/``effect_retain``/
    ``effect_annoy`` are ``(n, a)``: the undamped benefit and harm of each action.
    """

    attrs: dict[str, np.ndarray]
    action_ids: list[str]
    action_channel: IntArray  # (a,) index into ``channels``
    action_cost: FloatArray  # (a,)
    channels: list[str]  # the action channels, in first-appearance order
    affinity: FloatArray  # (n, k) latent channel affinity z
    consent: BoolArray  # (n, k)
    lam0: FloatArray  # base daily purchase hazard
    c0: FloatArray  # base daily churn hazard
    visit_rate: FloatArray  # expected visits per active day
    app_share: FloatArray  # share of visits/purchases in the app (vs web)
    support_rate: FloatArray
    value_mu: FloatArray  # mean log purchase value
    effect_boost: FloatArray = field(repr=False)
    effect_retain: FloatArray = field(repr=False)
    effect_annoy: FloatArray = field(repr=False)

    @property
    def n(self) -> int:
        """Number of customers."""
        return len(self.lam0)

    def receptiveness(self) -> FloatArray:
        """``g`` in (0, 1) per customer and action: how well the action's channel lands."""
        z = self.affinity[:, self.action_channel]
        return _sigmoid(AFFINITY_SLOPE * z)


def make_world(rng: np.random.Generator, n: int, actions: list[dict[str, Any]]) -> World:
    """Draw ``n`` customers: observed attributes, latent affinities, rates and consents."""
    age = rng.choice(len(AGE_BANDS), size=n, p=AGE_PROBS)
    age_z = ((age - 2.5) / 1.7).astype(np.float64)
    # Older customers use desktops more; the young are mobile-first.
    p_desktop = 0.10 + 0.10 * age
    u = rng.random(n)
    device = np.where(u < p_desktop, 2, np.where(u < p_desktop + (1 - p_desktop) / 2, 0, 1))
    region = rng.choice(len(REGIONS), size=n, p=REGION_PROBS)
    tenure = np.minimum(np.floor(rng.exponential(30.0, size=n)), 180).astype(np.int64)
    loyalty = rng.random(n) < _sigmoid((-1.2 + 0.04 * tenure).astype(np.float64))
    tenure_z = (np.log1p(tenure) - 3.0).astype(np.float64)

    desktop = (device == 2).astype(float)
    mobile = 1.0 - desktop
    young = (age <= 1).astype(float)
    mid = ((age >= 2) & (age <= 3)).astype(float)
    old = (age >= 4).astype(float)
    loyal = loyalty.astype(float)
    north_east = np.isin(region, (0, 2)).astype(float)
    south = (region == 1).astype(float)

    # Observed attributes drive the mean affinity of each channel; the rest is latent.
    means: dict[str, FloatArray] = {
        "email": -0.4 + 1.1 * desktop + 0.3 * mid - 0.4 * young,
        "sms": -0.4 + 0.5 * mobile + 0.6 * ((age >= 1) & (age <= 2)) - 0.8 * old + 0.5 * south,
        "push": -1.4 + 1.9 * mobile - 0.5 * age_z,
        "phone": -0.5 + 1.1 * age_z,
        "chat": -0.3 + 0.7 * desktop + 0.2 * mid,
        "store": -0.9 + 1.2 * loyal + 0.7 * north_east - 0.3 * young,
        "social": -0.4 - 0.8 * age_z + 0.3 * mobile,
        "ads": -0.3 + 0.0 * age_z,
        "direct_mail": -0.8 + 0.7 * age_z + 0.6 * loyal,
    }
    channels: list[str] = []
    for a in actions:
        if a["channel"] not in channels:
            channels.append(a["channel"])
    k = len(channels)
    affinity = np.empty((n, k))
    consent = np.empty((n, k), dtype=bool)
    for j, ch in enumerate(channels):
        mean = means.get(ch, np.full(n, -0.3))
        affinity[:, j] = mean + AFFINITY_NOISE * rng.standard_normal(n)
        if ch == "push":  # push needs the app: rare on desktop-only customers
            rate = np.where(device == 2, 0.15, 0.75)
        else:
            rate = np.full(n, CONSENT_RATES.get(ch, 0.8))
        consent[:, j] = rng.random(n) < rate

    # Base purchase and churn hazards: loyal, long-tenured customers buy more, churn less.
    lam0 = 0.0055 * np.exp(0.35 * loyal + 0.1 * tenure_z + 0.4 * rng.standard_normal(n))
    c0 = 0.0018 * np.exp(
        -0.45 * loyal - 0.3 * tenure_z + 0.15 * young + 0.35 * rng.standard_normal(n)
    )
    # Engaged customers (high lam0) also visit more: the confounder the logging policy uses.
    visit_rate = 0.13 + 0.20 * (lam0 / 0.0055) ** 0.6 * np.exp(0.3 * rng.standard_normal(n))
    app_share = np.where(device == 2, 0.1, 0.7)
    support_rate = 0.003 + 1.5 * c0
    value_mu = np.log(45.0) + 0.3 * rng.standard_normal(n)

    action_ids = [str(a["id"]) for a in actions]
    action_channel = np.array([channels.index(a["channel"]) for a in actions], dtype=np.int64)
    action_cost = np.array([float(a.get("cost", 0.0)) for a in actions])
    eff = [ACTION_EFFECTS.get(aid, _GENERIC_EFFECT) for aid in action_ids]
    world = World(
        attrs={
            "age_band": np.asarray(AGE_BANDS, dtype=object)[age],
            "region": np.asarray(REGIONS, dtype=object)[region],
            "device": np.asarray(DEVICES, dtype=object)[device],
            "tenure_months": tenure,
            "loyalty_member": loyalty,
        },
        action_ids=action_ids,
        action_channel=action_channel,
        action_cost=action_cost,
        channels=channels,
        affinity=affinity,
        consent=consent,
        lam0=lam0,
        c0=c0,
        visit_rate=visit_rate,
        app_share=app_share,
        support_rate=support_rate,
        value_mu=value_mu,
        effect_boost=np.empty(0),
        effect_retain=np.empty(0),
        effect_annoy=np.empty(0),
    )
    g = world.receptiveness()
    world.effect_boost = g * np.array([e.boost for e in eff])
    # Store invitations retain loyal members especially well (they have a store habit).
    retain = g * np.array([e.retention for e in eff])
    world.effect_retain = retain
    world.effect_annoy = (1.0 - g) * np.array([e.annoyance for e in eff])
    return world


@dataclass
class State:
    """The dynamic state that drives the hazards; everything else is an observation."""

    boost: FloatArray  # B: extra daily purchase hazard from recent sends
    annoy: FloatArray  # A: shift of the log churn hazard from recent sends
    fatigue: FloatArray  # F: exponentially decayed count of recent sends

    @classmethod
    def zeros(cls, n: int) -> State:
        """A customer nobody has contacted lately."""
        return cls(np.zeros(n), np.zeros(n), np.zeros(n))

    def take(self, idx: IntArray) -> State:
        """A copy of the state of the customers at ``idx`` (repeats allowed)."""
        return State(self.boost[idx].copy(), self.annoy[idx].copy(), self.fatigue[idx].copy())


# --- the hazard functions: the single source of truth for simulation and ground truth --


def purchase_hazard(world: World, state: State, idx: IntArray) -> FloatArray:
    """Daily probability of (at least one) purchase for the customers ``idx``."""
    return 1.0 - np.exp(-np.maximum(world.lam0[idx] + state.boost, 0.0))


def churn_hazard(world: World, state: State, idx: IntArray) -> FloatArray:
    """Daily probability of churning for the customers ``idx`` (``state`` is theirs)."""
    log_shift = state.annoy + KAPPA_FATIGUE * state.fatigue
    return 1.0 - np.exp(-world.c0[idx] * np.exp(log_shift))


def send_effects(
    world: World, fatigue: FloatArray, idx: IntArray, action: IntArray
) -> tuple[FloatArray, FloatArray]:
    """Increments ``(dB, dA)`` of a send of ``action`` to customers ``idx`` at ``fatigue``.

    Benefits shrink and annoyance grows with fatigue: the tenth message of the week is
    worth less and irritates more than the first.
    """
    damp = np.exp(-FATIGUE_DAMPING * fatigue)
    d_boost = world.effect_boost[idx, action] * damp
    d_annoy = -world.effect_retain[idx, action] * damp + world.effect_annoy[idx, action] * (
        1.0 + FATIGUE_ANNOY * fatigue
    )
    return d_boost, d_annoy


def end_of_day(
    world: World,
    state: State,
    send_pos: IntArray | None = None,
    send_idx: IntArray | None = None,
    send_action: IntArray | None = None,
) -> None:
    """Advance ``state`` (of the customers it holds) to the next midnight, in place.

    ``send_pos`` are positions *within the state arrays* of customers who received a send
    today, ``send_idx`` their customer indices in ``world`` and ``send_action`` the
    actions.  A send's effect is computed at today's fatigue and first acts tomorrow.
    """
    if send_pos is not None and send_idx is not None and send_action is not None:
        d_boost, d_annoy = send_effects(world, state.fatigue[send_pos], send_idx, send_action)
    state.boost *= RHO_BOOST
    state.annoy *= RHO_ANNOY
    state.fatigue *= RHO_FATIGUE
    if send_pos is not None and send_idx is not None and send_action is not None:
        state.boost[send_pos] += d_boost
        state.annoy[send_pos] += d_annoy
        state.fatigue[send_pos] += 1.0


def apply_send_now(world: World, state: State, idx: IntArray, action: IntArray) -> None:
    """Apply a send at a midnight (the ground truth's ``as_of``): it acts from today on.

    Same increments as :func:`end_of_day`, so "send at as_of" and "send on the last day of
    the history" put the customer in the same state for the first day after the send.
    """
    d_boost, d_annoy = send_effects(world, state.fatigue, idx, action)
    state.boost += d_boost
    state.annoy += d_annoy
    state.fatigue += 1.0


# --- the logging policy -----------------------------------------------------------------


@dataclass(frozen=True)
class LoggingPolicy:
    """The company's historical (confounded) targeting rule.

    ``P(send) = sigmoid(intercept + recency_w * exp(-days_since_activity / 7) + value_w *
    log1p(spend / 50) - fatigue_w * F)``; given a send, the action is drawn by a softmax
    over ``-cost_w * log(cost)`` (cheap channels first) plus ``premium_w * log1p(spend /
    50)`` for actions costing at least $0.50 (the expensive touches go to big spenders),
    restricted to eligible actions (consent given, channel not unsubscribed).
    """

    intercept: float = -2.2
    recency_w: float = 1.5
    value_w: float = 0.45
    fatigue_w: float = 0.5
    cost_w: float = 0.35
    premium_w: float = 0.6

    def probabilities(
        self,
        days_since_activity: FloatArray,
        spend: FloatArray,
        fatigue: FloatArray,
        eligible: BoolArray,
        cost: FloatArray,
    ) -> tuple[FloatArray, FloatArray]:
        """``(p_send (m,), p_action_given_send (m, a))`` for ``m`` customers.

        Customers with no eligible action have ``p_send = 0``.
        """
        value_score = np.log1p(spend / 50.0)
        logit = (
            self.intercept
            + self.recency_w * np.exp(-days_since_activity / 7.0)
            + self.value_w * value_score
            - self.fatigue_w * fatigue
        )
        p_send = _sigmoid(logit)
        pref = -self.cost_w * np.log(np.maximum(cost, 1e-4))
        premium = (cost >= 0.5).astype(float)
        scores = pref[None, :] + self.premium_w * value_score[:, None] * premium[None, :]
        weights = np.exp(scores - scores.max(axis=1, keepdims=True)) * eligible
        total = weights.sum(axis=1)
        has_any = total > 0
        probs = np.divide(
            weights, total[:, None], out=np.zeros_like(weights), where=has_any[:, None]
        )
        return np.where(has_any, p_send, 0.0), probs
