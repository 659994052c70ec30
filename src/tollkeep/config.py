"""Settings: one pydantic-settings object, read from TOLLKEEP_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


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

    max_body_bytes: int = Field(65_536, description="Largest request body accepted (413 above)")
    key_prefix: str = Field("tk_live_", description="Readable prefix of new API keys")
    key_cache_seconds: float = Field(
        5.0, description="How long a verified key is trusted without a database read (0 disables)"
    )
    hold_default_ttl_seconds: int = 300
    hold_max_ttl_seconds: int = 86_400
    sweeper_interval_seconds: float = Field(5.0, description="How often expired holds and grants are swept")
    run_workers: bool = Field(True, description="Run the sweeper inside `serve`")
    migrate_on_start: bool = True

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
