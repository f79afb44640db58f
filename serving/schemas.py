"""Request and response bodies of the HTTP API (CONTRACT §5), as pydantic models.

Event rows are deliberately lax (every field optional, numbers may arrive as strings):
the event contract is checked by ``features.ingest.normalize_events``, exactly as for a
file (inline histories by ``serving/inline_events.py``, which gives the same answers
without pandas), so one bad row is reported with its row number and reason instead of
failing the whole request.  Unknown fields are rejected (a misspelt field would otherwise vanish).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

__all__ = [
    "BatchRecommendationRequest",
    "BatchRecommendationResponse",
    "EventIn",
    "EventsRequest",
    "EventsResponse",
    "ReloadRequest",
    "ReloadResponse",
    "Recommendation",
    "RecommendationRequest",
    "RecommendationResponse",
    "RequestError",
    "RowError",
    "Suppression",
]

MAX_K = 20
MAX_BATCH = 1000
MAX_EVENTS = 10_000

CustomerId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=256)]


class RequestError(Exception):
    """A request that is well-formed JSON but breaks the contract; becomes a 422."""

    def __init__(self, loc: Sequence[str | int], msg: str, type_: str = "value_error") -> None:
        super().__init__(msg)
        self.loc = list(loc)
        self.msg = msg
        self.type = type_

    def detail(self) -> list[dict[str, Any]]:
        return [{"loc": self.loc, "msg": self.msg, "type": self.type}]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EventIn(BaseModel):
    """One touchpoint (CONTRACT §1); validated row by row by the ingestion code."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    customer_id: str | None = None
    timestamp: str | None = Field(default=None, description="ISO-8601; no offset means UTC")
    channel: str | None = None
    event_type: str | None = None
    action: str | None = None
    value: float | str | None = None
    propensity: float | str | None = None
    event_id: str | None = None
    decision_id: str | None = None


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
#: The decision times pandas (and the features) can hold: ns since the epoch in int64.
_MIN_NS = int(pd.Timestamp.min.as_unit("ns").value)
_MAX_NS = int(pd.Timestamp.max.as_unit("ns").value)


class RecommendationRequest(_Strict):
    """``POST /v1/recommendations``."""

    customer_id: CustomerId
    k: int | None = Field(default=None, ge=1, le=MAX_K, description="default: server's default_k")
    as_of: datetime | None = Field(
        default=None, description="decision time (ISO-8601, no offset = UTC); default now"
    )
    events: list[EventIn] | None = Field(
        default=None,
        max_length=MAX_EVENTS,
        description="inline history (stateless use); when given, the store is not read",
    )
    context: dict[str, Any] | None = Field(default=None, description="logged with the decision")

    @field_validator("as_of")
    @classmethod
    def _as_of_in_range(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        # Integer arithmetic, not pd.Timestamp(value): that cost ~40 µs per request.
        ns = (value - _EPOCH) // _MICROSECOND * 1000
        if not _MIN_NS <= ns <= _MAX_NS:
            raise ValueError("as_of is out of the supported range (1677-2262)")
        return value


class Recommendation(BaseModel):
    action: str
    channel: str
    score: float = Field(description="expected value against no action")
    p_conversion: float
    p_churn: float
    propensity: float = Field(description="probability the serving policy picks this action")
    reasons: list[str]


class Suppression(BaseModel):
    action: str
    rule: str


class RecommendationResponse(BaseModel):
    decision_id: str
    model_version: str
    customer_id: str
    as_of: datetime
    chosen: str = Field(description="the action the policy picked (first recommendation)")
    explored: bool = Field(description="true when the pick is not the best-scoring action")
    recommendations: list[Recommendation]
    suppressed: list[Suppression]


class BatchRecommendationRequest(_Strict):
    """``POST /v1/recommendations:batch``."""

    requests: list[RecommendationRequest] = Field(min_length=1, max_length=MAX_BATCH)


class BatchRecommendationResponse(BaseModel):
    responses: list[RecommendationResponse]


class EventsRequest(_Strict):
    """``POST /v1/events``."""

    events: list[EventIn] = Field(max_length=MAX_EVENTS)


class RowError(BaseModel):
    row: int = Field(description="1-based position in `events`")
    reason: str


class EventsResponse(BaseModel):
    accepted: int
    duplicates: int
    errors: list[RowError]


class ReloadRequest(_Strict):
    model: str | None = Field(default=None, description="bundle folder; default: the current one")


class ReloadResponse(BaseModel):
    model_version: str
    previous_version: str
    path: str
