"""Configuration, read once at start-up from the environment (``PROPDESK_*`` plus ``DATABASE_URL``/``NATS_URL``).

Every setting is documented in the README's configuration table; the values are frozen after load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """PropDesk settings. Unset URLs mean "start an embedded server in the data directory"."""

    model_config = SettingsConfigDict(env_prefix="PROPDESK_", frozen=True, extra="ignore")

    data_dir: Path = Field(default=Path(".propdesk"), description="Where embedded servers and local state live.")
    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "PROPDESK_DATABASE_URL"),
        description="Admin/migration connection; unset starts an embedded PostgreSQL.",
    )
    engine_database_url: str | None = Field(default=None, description="Login of the engine role (derived if unset).")
    app_database_url: str | None = Field(default=None, description="Login of the app role (derived if unset).")
    db_role_prefix: str = Field(
        default="propdesk",
        pattern=r"^[a-z][a-z0-9_]{0,40}$",
        description="Prefix of the cluster-wide roles <prefix>_owner/_engine/_app.",
    )
    db_pool_size: int = Field(default=10, ge=1, le=200)
    nats_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("NATS_URL", "PROPDESK_NATS_URL"),
        description="The price bus (nats://user:pass@host:port, comma-separated for a "
        "cluster); unset starts an embedded nats-server in the data directory.",
    )
    # The price bus (bus/; issue 9). Off only for tools that need no prices across processes.
    bus_enabled: bool = Field(default=True, description="Carry prices between processes over NATS (the bus).")
    bus_namespace: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9][a-z0-9_-]{0,47}$",
        description="Subject namespace of this instance; unset: the one registered "
        "in the database (generated on first start).",
    )
    # The live risk engine (engine/live.py; issue 9): "inprocess" runs the risk book in this process and the
    # execution core's on_quote delegates to it; "off" keeps the per-account loop (one query, then each holder).
    risk_engine: Literal["inprocess", "off"] = Field(
        default="inprocess", description="Where prices are judged against every account: inprocess | off."
    )
    bus_retain_seconds: float = Field(
        default=3600.0, ge=3600.0, description="How long the bus keeps every quote for replay (at least an hour)."
    )
    service_token: str | None = Field(default=None, description="A service-role bearer token accepted as is.")
    admin_token: str | None = Field(default=None, description="An admin-role bearer token accepted as is.")
    cron_secret: str | None = Field(default=None, description="Bearer secret for scheduler calls (day roll).")
    public_url: str = Field(default="http://127.0.0.1:8000", description="The URL users reach the platform at.")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    mtm_interval_seconds: float = Field(default=5.0, gt=0, description="Mark-to-market worker cadence.")
    anchor_interval_seconds: float = Field(
        default=300.0,
        gt=0,
        le=86_400,
        description="How often the heads of the ledger and audit hash chains are signed (docs/TAMPER_EVIDENCE.md).",
    )
    heartbeat_stale_seconds: float = Field(default=60.0, gt=0)
    max_body_bytes: int = Field(default=1_000_000, ge=1024)
    # Web identity and security (issue 5; docs/DEPLOY.md).
    session_idle_minutes: int = Field(
        default=30, ge=1, le=60 * 24 * 30, description="A web session ends after this long without a request."
    )
    session_absolute_hours: int = Field(
        default=12, ge=1, le=24 * 90, description="A web session ends this long after login, whatever its use."
    )
    admin_totp_required: bool = Field(
        default=False,
        description="Admins must use a TOTP second factor: an admin without one can log in only to enroll "
        "(recommended in production; docs/DEPLOY.md).",
    )
    password_reset_minutes: int = Field(default=30, ge=5, le=60 * 24, description="Life of an emailed reset link.")
    smtp_url: str | None = Field(
        default=None,
        description="smtp://user:pass@host:port[?starttls=true] or smtps://; "
        "unset prints reset links to the log instead of mailing them.",
    )
    smtp_from: str = Field(default="PropDesk <no-reply@localhost>", description="From: of outgoing mail.")
    turnstile_secret: str | None = Field(
        default=None, description="Cloudflare Turnstile secret; set turns the sign-up bot check on."
    )
    turnstile_sitekey: str | None = Field(default=None, description="Cloudflare Turnstile site key (page widget).")
    turnstile_verify_url: str = Field(
        default="https://challenges.cloudflare.com/turnstile/v0/siteverify",
        description="Turnstile siteverify endpoint.",
    )
    rate_login_ip: str = Field(
        default="20/300", pattern=r"^[0-9]{1,6}/[0-9]{1,7}$", description="Login attempts per client IP: count/seconds."
    )
    rate_login_email: str = Field(
        default="10/300",
        pattern=r"^[0-9]{1,6}/[0-9]{1,7}$",
        description="Login attempts per email address: count/seconds.",
    )
    rate_signup_ip: str = Field(
        default="10/3600", pattern=r"^[0-9]{1,6}/[0-9]{1,7}$", description="Sign-ups per client IP: count/seconds."
    )
    rate_reset_ip: str = Field(
        default="10/3600",
        pattern=r"^[0-9]{1,6}/[0-9]{1,7}$",
        description="Password-reset requests per client IP: count/seconds.",
    )
    rate_orders_user: str = Field(
        default="120/60",
        pattern=r"^[0-9]{1,6}/[0-9]{1,7}$",
        description="Order submissions per web user: count/seconds.",
    )
    rate_limit_store: Literal["memory", "postgres"] = Field(
        default="postgres",
        description="Where the rate-limit windows live: postgres (shared by every API "
        "process) or memory (one process only: each process would enforce the limits on its own).",
    )
    forwarded_allow_ips: str = Field(
        default="127.0.0.1", description="Proxies whose X-Forwarded-* headers uvicorn trusts (comma-separated, or *)."
    )
    # Market data (issue 4; docs/MARKET_DATA.md).
    quote_band: bool = Field(
        default=True,
        description="Hold a quote whose mid moves more than its asset class's band from the last accepted one "
        "until a second quote confirms it or an admin accepts it (marketdata/band.py).",
    )
    demo_always_open: bool = Field(
        default=False,
        description="DEMO MODE: the session calendar treats every "
        "market as open at any hour (set by `propdesk demo`); never for real accounts.",
    )
    # Economic calendar (the news rule reads it; docs/OPERATIONS.md "Economic calendar sync").
    finnhub_api_key: str | None = Field(
        default=None,
        description="Finnhub API key; set turns on the calendar sync "
        "worker in `serve`/`demo` and is what `propdesk calendar sync` uses.",
    )
    finnhub_base_url: str | None = Field(default=None, description="Another Finnhub API URL (e.g. a local fake).")
    calendar_sync_hours: float = Field(default=6, gt=0, description="Economic calendar sync worker cadence.")
    log_level: str = "INFO"
    log_json: bool = True

    @field_validator("finnhub_api_key", "finnhub_base_url")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        # An exported but empty variable (``PROPDESK_FINNHUB_API_KEY=``) means "no key", not a key "".
        return value.strip() or None if value is not None else None


def load_settings(**overrides: object) -> Settings:
    """Read the environment once; keyword overrides win (used by the CLI and tests)."""
    return Settings(**overrides)  # type: ignore[arg-type]
