"""Configuration, read once at start-up from the environment (``PROPDESK_*`` plus ``DATABASE_URL``/``NATS_URL``).

Every setting is documented in the README's configuration table; the values are frozen after load.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """PropDesk settings. Unset URLs mean "start an embedded server in the data directory"."""

    model_config = SettingsConfigDict(env_prefix="PROPDESK_", frozen=True, extra="ignore")

    data_dir: Path = Field(default=Path(".propdesk"), description="Where embedded servers and local state live.")
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "PROPDESK_DATABASE_URL"),
        description="Admin/migration connection; unset starts an embedded PostgreSQL.")
    engine_database_url: str | None = Field(default=None, description="Login of the engine role (derived if unset).")
    app_database_url: str | None = Field(default=None, description="Login of the app role (derived if unset).")
    db_role_prefix: str = Field(default="propdesk", pattern=r"^[a-z][a-z0-9_]{0,40}$",
                                description="Prefix of the cluster-wide roles <prefix>_owner/_engine/_app.")
    db_pool_size: int = Field(default=10, ge=1, le=200)
    nats_url: str | None = Field(default=None, validation_alias=AliasChoices("NATS_URL", "PROPDESK_NATS_URL"))
    service_token: str | None = Field(default=None, description="A service-role bearer token accepted as is.")
    admin_token: str | None = Field(default=None, description="An admin-role bearer token accepted as is.")
    cron_secret: str | None = Field(default=None, description="Bearer secret for scheduler calls (day roll).")
    public_url: str = Field(default="http://127.0.0.1:8000", description="The URL users reach the platform at.")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    mtm_interval_seconds: float = Field(default=5.0, gt=0, description="Mark-to-market worker cadence.")
    heartbeat_stale_seconds: float = Field(default=60.0, gt=0)
    max_body_bytes: int = Field(default=1_000_000, ge=1024)
    log_level: str = "INFO"
    log_json: bool = True


def load_settings(**overrides: object) -> Settings:
    """Read the environment once; keyword overrides win (used by the CLI and tests)."""
    return Settings(**overrides)  # type: ignore[arg-type]
