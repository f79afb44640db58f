"""Settings of the HTTP service: one pydantic ``BaseSettings``, read from ``TOUCHPOINT_*``.

Every field can be given as a keyword (the CLI does that for ``--model``, ``--events``,
``--host`` and ``--port``) or as an environment variable ``TOUCHPOINT_<FIELD>`` (e.g.
``TOUCHPOINT_API_KEY``); a keyword wins over the environment.  docs/SERVING.md lists every
default.  Nothing is read at import time.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServingSettings(BaseSettings):
    """Configuration of ``touchpoint serve`` (see docs/SERVING.md)."""

    model_config = SettingsConfigDict(env_prefix="TOUCHPOINT_", extra="ignore")

    model: Path = Field(description="Model bundle folder (from `touchpoint train`).")
    store_path: Path = Field(
        default=Path("touchpoint-store.db"), description="SQLite file of the history store."
    )
    decision_log_path: Path = Field(
        default=Path("touchpoint-decisions.db"), description="SQLite file of the decision log."
    )
    events_path: Path | None = Field(
        default=None, description="Event log (CSV/Parquet) loaded into the store at startup."
    )
    customers_path: Path | None = Field(
        default=None, description="Customers table loaded into the store at startup."
    )
    api_key: SecretStr | None = Field(
        default=None,
        description="Key required by POST /v1/events and /admin/reload; None = open.",
    )
    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Worker processes sharing the port (about one per core; see docs).",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    default_k: int = Field(default=3, ge=1, le=20)
    history_days: int | None = Field(
        default=365,
        ge=0,
        description="Days of history loaded per request from the store; 0 or None = all.",
    )
    seed: int | None = Field(
        default=None, description="Seed of the exploration RNG; None = fresh entropy."
    )
    max_batch: int = Field(default=1000, ge=1, le=1000)
    access_log: bool = Field(default=False, description="uvicorn access log (costs ~37% rps).")
    reload_poll_seconds: float = Field(
        default=30.0,
        ge=0,
        description="Seconds between checks of the registry alias given as --model "
        "(models:/name@alias); 0 = off.  Ignored for bundle folders.",
    )
