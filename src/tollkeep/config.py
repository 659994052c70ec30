"""Settings: one pydantic-settings object, read from TOLLKEEP_* environment variables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "create_private_sqlite_file", "masked_url", "sqlite_file"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TOLLKEEP_", env_file=None, extra="ignore")

    database_url: str = Field(
        "sqlite:///./tollkeep.db",
        description="SQLAlchemy URL. sqlite:///path.db (default) or postgresql+psycopg://user@host/db",
    )
    catalog_path: Path | None = Field(None, description="TOML catalog; the built-in default when unset")
    admin_token: SecretStr | None = Field(None, description="Bearer token for /admin routes")
    host: str = "127.0.0.1"
    port: int = 8080

    sqlite_synchronous: Literal["OFF", "NORMAL", "FULL", "EXTRA"] = Field(
        "NORMAL",
        description="NORMAL survives a killed process (WAL); FULL also survives power loss, at a cost",
    )
    db_pool_size: int = 16
    writer_batch_max: int = Field(256, description="Most ledger operations committed in one transaction")
    raw_sql: bool = Field(
        True,
        description="Run the ledger's prebuilt hot-path statements on the driver cursor (kit/rawsql.py); "
        "off: through SQLAlchemy's plain execute (same meaning, slower; the parity tests run both)",
    )

    max_body_bytes: int = Field(65_536, description="Largest request body accepted (413 above)")
    key_prefix: str = Field("tk_live_", description="Readable prefix of new API keys")
    key_cache_seconds: float = Field(
        5.0, description="How long a verified key is trusted without a database read (0 disables)"
    )
    hold_default_ttl_seconds: int = 300
    hold_max_ttl_seconds: int = 86_400
    sweeper_interval_seconds: float = Field(
        5.0, gt=0, description="How often expired holds and grants are swept and allowances renewed"
    )
    outbox_interval_seconds: float = Field(
        1.0, gt=0, description="How often committed outbox events are handed to their sinks (webhooks)"
    )
    # ---- outbound webhooks (docs/webhooks.md) -------------------------------------------------
    webhooks_allow_private: bool = Field(
        False,
        description="Let webhook endpoints be on loopback, private and link-local addresses (off: the "
        "SSRF guard refuses them, at registration and at every send)",
    )
    webhooks_interval_seconds: float = Field(
        1.0, gt=0, description="How often due webhook deliveries are looked for and sent"
    )
    webhooks_concurrency: int = Field(16, ge=1, le=256, description="Webhook deliveries sent at once")
    webhooks_timeout_seconds: float = Field(
        10.0, gt=0, le=120, description="Time an endpoint has to connect and answer (a slower one failed)"
    )
    webhooks_retry_seconds: tuple[float, ...] = Field(
        (5, 300, 1800, 7200, 18000, 36000, 36000),
        description="Waits before the retries of a failed delivery (Standard Webhooks' schedule: "
        "8 attempts over about 28 hours), as JSON: [5, 300, ...]",
    )
    webhooks_disable_after_seconds: float = Field(
        86_400.0, gt=0, description="An endpoint whose every attempt has failed for this long is disabled"
    )
    run_workers: bool = Field(
        True, description="Run the background jobs (sweeper, renewals, outbox) inside `serve`"
    )
    migrate_on_start: bool = True

    # ---- payments (docs/payments.md) -------------------------------------------------------------
    public_url: str | None = Field(
        None,
        description="This server's address as buyers reach it (checkout pages, success links); "
        "unset: http://<host>:<port>",
    )
    stripe_secret_key: SecretStr | None = Field(None, description="Stripe secret key (sk_live_… / sk_test_…)")
    stripe_webhook_secret: SecretStr | None = Field(None, description="Stripe webhook signing secret")
    stripe_api_base: str | None = Field(
        None, description="A Stripe-compatible server to talk to instead of api.stripe.com (tests, mocks)"
    )
    stripe_webhook_tolerance_seconds: int = Field(
        300, description="Oldest Stripe-Signature timestamp accepted (replay protection)"
    )
    github_webhook_secret: SecretStr | None = Field(None, description="GitHub Marketplace webhook secret")
    btcpay_url: str | None = Field(None, description="BTCPay Server base URL (https://btcpay.example.com)")
    btcpay_api_key: SecretStr | None = Field(None, description="BTCPay Greenfield API key")
    btcpay_store_id: str | None = Field(None, description="BTCPay store id")
    btcpay_webhook_secret: SecretStr | None = Field(None, description="BTCPay webhook secret (BTCPay-Sig)")
    zaprite_url: str | None = Field(None, description="Zaprite API base URL (https://api.zaprite.com)")
    zaprite_api_key: SecretStr | None = Field(None, description="Zaprite API key")
    local_payments: bool | None = Field(
        None,
        description="The local development provider: checkout 'pays' when its page is opened. "
        "Unset: on only when no real provider is configured; never on unless set when "
        "TOLLKEEP_ENV=production",
    )
    env: Literal["development", "production"] = Field(
        "development", description="production refuses development conveniences (local payments)"
    )
    provider_timeout_seconds: float = Field(15.0, description="Timeout of one call to a payment provider API")
    webhook_max_body_bytes: int = Field(
        1_048_576, description="Largest inbound provider webhook body accepted (413 above)"
    )
    inbox_interval_seconds: float = Field(
        0.5, gt=0, description="How often the inbox worker looks for pending provider events"
    )
    inbox_max_attempts: int = Field(8, ge=1, description="Attempts before an inbox event is marked failed")
    inbox_retention_days: int = Field(
        30, ge=1, description="Processed and ignored inbox events are pruned after this many days"
    )
    checkout_ttl_seconds: int = Field(86_400, description="How long a checkout link stays payable")

    # ---- licences (docs/licensing.md) ----------------------------------------------------------
    license_key_passphrase: SecretStr | None = Field(
        None, description="Encrypts the licence signing keys stored in the database (PKCS#8)"
    )
    license_grace_seconds: int = Field(
        7 * 86_400, ge=0, description="Default time a machine may stay offline before its seat is freed"
    )

    # ---- subscriptions (docs/subscriptions.md) --------------------------------------------------
    subscriptions_interval_seconds: float = Field(
        60.0, gt=0, description="How often the renewal worker looks for due subscriptions"
    )
    subscriptions_invoice_currency: str | None = Field(
        None,
        description="Currency renewal invoices are paid in (e.g. BTC); unset: the plan's listed currency",
    )
    subscriptions_fixed_rates: dict[str, str] = Field(
        default_factory=dict,
        description='Fixed exchange rates, JSON: {"USD/BTC": "0.0000105"} (quote units per base unit)',
    )
    subscriptions_retry_seconds: tuple[int, ...] = Field(
        (300, 1800, 7200, 21600, 43200), description="Waits after each failure to create a renewal invoice"
    )
    subscriptions_max_renewal_failures: int = Field(
        5, ge=1, le=20, description="Failures to create a renewal invoice before the worker stops trying"
    )
    test_clock: bool = Field(
        False,
        description="Test clocks: POST /admin/test-clock moves the server's clock forward "
        "(refused with TOLLKEEP_ENV=production)",
    )

    # ---- abuse limits (safe by default; every one is documented in README and docs/) -----------
    max_properties_bytes: int = Field(
        4096, description="Largest `properties` object of one usage/hold/settle request, as JSON (422 above)"
    )
    max_properties_keys: int = Field(
        64, description="Most keys (at every nesting level) in one `properties` object (422 above)"
    )
    list_max_bytes: int = Field(
        1_048_576, description="A listing page stops early (with a `next` cursor) past this many bytes"
    )
    rate_limit_usage: str = Field(
        "100/second",
        description="Per-customer limit on usage and hold writes, a `limits` string such as "
        "'100/second' or '6000/minute'; 'off' disables it (429 `rate_limited` above)",
    )
    install_ids_per_ip_per_hour: int = Field(
        20, description="New anonymous install ids one client address may create per hour (0: no limit)"
    )

    # ---- per-key rate limits, quotas, concurrency (docs/rate-limits.md) --------------------------
    redis_url: str | None = Field(
        None,
        description="Redis (redis://host:6379/0) shared by every replica for rate limits, quotas and "
        "calls in flight; unset: counted in memory, per process",
    )
    rate_limit_key: str = Field(
        "off",
        description="Default rate limit of one API key over all its calls (a key's own rate_limit "
        "overrides it), e.g. '60/minute' or '10/second;10000/day'; 'off': none",
    )
    rate_limits: dict[str, str] = Field(
        default_factory=dict,
        description="Rate limits per tool / route, counted per key: JSON mapping a scope pattern to a "
        'limit, e.g. {"tool:weather/*": "10/minute", "route:POST /v1/usage": "50/second"}; '
        "the first matching pattern applies",
    )
    max_concurrency: int = Field(
        0, ge=0, description="Default cap on one API key's calls in flight (0: none; a key's own overrides)"
    )
    concurrency_ttl_seconds: float = Field(
        300.0, gt=0, description="With Redis: a call in flight no process finished frees its slot after this"
    )

    # ---- the HTTP server (`tollkeep serve`) ------------------------------------------------------
    forwarded_allow_ips: str | None = Field(
        None,
        description="Proxies whose X-Forwarded-For is trusted (comma-separated addresses, or '*'); "
        "unset: none, the TCP peer is the client address",
    )
    max_header_bytes: int = Field(
        16_384, description="Largest request line plus headers (431 above, and the connection closed)"
    )
    header_timeout_seconds: float = Field(
        10.0, description="Time a client has to send a request's headers (the connection is closed after)"
    )
    keep_alive_seconds: int = Field(5, description="How long an idle keep-alive connection stays open")
    max_connections: int = Field(
        1000, description="Connections and in-flight requests served at once (503 for requests above)"
    )

    @field_validator("rate_limit_usage")
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        if value.strip().lower() not in ("", "off", "none", "0", "false", "no"):
            from limits import parse

            try:
                parse(value)
            except ValueError:
                raise ValueError(
                    f"{value!r} is not a rate limit (e.g. '100/second'; 'off' disables)"
                ) from None
        return value

    @field_validator("rate_limit_key")
    @classmethod
    def _rate_limit_key(cls, value: str) -> str:
        _check_limits_string(value)
        return value

    @field_validator("rate_limits")
    @classmethod
    def _rate_limits(cls, value: dict[str, str]) -> dict[str, str]:
        for limit in value.values():
            _check_limits_string(limit)
        return value

    @field_validator("webhooks_retry_seconds")
    @classmethod
    def _retry_schedule(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if len(value) > 20 or any(not 0 <= v <= 7 * 86400 for v in value):
            raise ValueError("at most 20 waits, each between 0 and 604800 seconds")
        return value

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def _check_limits_string(value: str) -> None:
    """A `limits` string ('60/minute', '10/second;1000/day') or 'off'."""
    if value.strip().lower() not in ("", "off", "none", "0", "false", "no"):
        from limits import parse_many

        try:
            parse_many(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a rate limit (e.g. '60/minute'; 'off' disables)") from None


def masked_url(url: str) -> str:
    """A database URL fit to print: the password replaced by ``***``."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy can parse: print nothing of it
        return "<unparsable database URL>"


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (None for another database, memory or a ``file:`` URI)."""
    if not url.startswith("sqlite"):
        return None
    from sqlalchemy.engine import make_url

    db = make_url(url).database
    if not db or db == ":memory:" or db.startswith("file:"):
        return None
    return Path(db)


def create_private_sqlite_file(url: str) -> None:
    """Create a SQLite database file readable by its owner only (0600) before SQLite opens it,
    so it never exists with looser permissions; SQLite gives its -wal and -shm files the same
    mode. An existing file is left as it is."""
    path = sqlite_file(url)
    if path is None or path.exists():
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError:  # exists by now, or a directory that isn't there: SQLite will say so
        return
    os.close(fd)
