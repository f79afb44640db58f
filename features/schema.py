"""The touchpoint-log contract (CONTRACT §1–2) as constants shared by every package.

The *canonical event table* that ingestion produces and that every other module consumes
is a pandas DataFrame with exactly :data:`EVENT_COLUMNS`, in that order:

========================  ==========================  =====================================
column                    dtype                       notes
========================  ==========================  =====================================
``customer_id``           ``category``                never empty
``timestamp``             ``datetime64[ns, UTC]``     naive input is taken as UTC
``channel``               ``category``                lower-cased, open vocabulary
``event_type``            ``category``                one of :data:`EVENT_TYPES`
``action``                ``category``                catalog action id; NaN when absent
``value``                 ``float64``                 NaN when absent
``propensity``            ``float64``                 in (0, 1]; NaN when absent
``event_id``              ``object`` (str or None)    None when absent
``decision_id``           ``object`` (str or None)    None when absent
========================  ==========================  =====================================

Rows are sorted by ``(customer_id, timestamp)`` with ties kept in input order, and the
index is a fresh ``RangeIndex``.  Consumers must not rely on the category codes of
``customer_id`` being shared between tables: factorize against the union when joining.
"""

from __future__ import annotations

from typing import Final

#: Every column of the canonical event table, in order.
EVENT_COLUMNS: Final = (
    "customer_id",
    "timestamp",
    "channel",
    "event_type",
    "action",
    "value",
    "propensity",
    "event_id",
    "decision_id",
)
#: Columns a log must have.
REQUIRED_EVENT_COLUMNS: Final = ("customer_id", "timestamp", "channel", "event_type")
#: Columns stored as pandas ``category``.
CATEGORY_EVENT_COLUMNS: Final = ("customer_id", "channel", "event_type", "action")
#: Columns stored as float64.
FLOAT_EVENT_COLUMNS: Final = ("value", "propensity")
#: Columns stored as optional strings.
STRING_EVENT_COLUMNS: Final = ("event_id", "decision_id")

#: Outbound touchpoints, chosen by the company.
OUTBOUND_TYPES: Final = frozenset({"sent"})
#: Responses to an outbound touchpoint.
RESPONSE_TYPES: Final = frozenset({"open", "click"})
#: Inbound touchpoints, chosen by the customer.
INBOUND_TYPES: Final = frozenset(
    {"visit", "support", "feedback", "review", "referral", "purchase", "unsubscribe", "churn"}
)
#: The closed event-type vocabulary.
EVENT_TYPES: Final = OUTBOUND_TYPES | RESPONSE_TYPES | INBOUND_TYPES
#: A stable order of event types, used wherever types become feature columns.
EVENT_TYPE_ORDER: Final = (
    "sent",
    "open",
    "click",
    "visit",
    "support",
    "feedback",
    "review",
    "referral",
    "purchase",
    "unsubscribe",
    "churn",
)

#: The channels that the default catalog and the simulator use.  The vocabulary is open:
#: a log may carry others, and the feature spec learns them from the catalog and the data.
KNOWN_CHANNELS: Final = (
    "web",
    "app",
    "email",
    "sms",
    "push",
    "phone",
    "chat",
    "store",
    "social",
    "ads",
    "direct_mail",
    "review",
)

#: The id used for "leave the customer alone" everywhere: decision points, models, policy.
NO_ACTION: Final = "none"

#: Prefix of consent columns in the customers table (``consent_sms`` etc.).
CONSENT_PREFIX: Final = "consent_"

#: The seven journey stages, in journey order; a stage's code is its index here.
STAGES: Final = (
    "pre-awareness",
    "awareness",
    "consideration",
    "purchase",
    "usage",
    "advocacy",
    "loyalty",
)

#: Columns that lead the decision-point table, before the features.
DECISION_KEY_COLUMNS: Final = ("customer_id", "decision_time", "action")
