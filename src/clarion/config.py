"""Settings, read from flags and `CLARION_*` environment variables (pydantic-settings)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every option of `clarion serve`; each also reads `CLARION_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="CLARION_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    database_url: str = "sqlite:///./clarion.db"
    broker_url: str = "memory://"
    workers: int = 1
    demo: bool = False
    log_level: str = "info"

    # User tokens. Without a secret or key, one secret is generated once and kept beside the
    # database, so tokens survive restarts.
    jwt_secret: str | None = None
    jwt_public_key: str | None = None
    jwt_jwks_url: str | None = None
    jwt_algorithms: list[str] = Field(default_factory=lambda: ["HS256"])
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    token_ttl: int = 3600

    # Browser Origins allowed to open live connections; empty means same host and localhost.
    allowed_origins: list[str] = Field(default_factory=list)

    # Live delivery.
    heartbeat: float = 25.0
    max_buffer: int = 1 << 20  # bytes queued per connection before it is a slow consumer
    max_frame: int = 64 * 1024
    max_body: int = 256 * 1024
    auth_timeout: float = 10.0  # seconds from the upgrade to a WebSocket's `auth` frame
    max_handshakes: int = 64  # WebSocket handshakes authenticated at once (the rest wait)
    max_pending_auth: int = 100  # WebSockets per address still waiting for their `auth` frame
    header_timeout: float = 10.0  # seconds a request may take to send its headers (slowloris)

    # Background work: digests due are sent every `digest_interval` seconds; notifications
    # older than `retention_days` (0: keep forever) and expired ones are removed every
    # `retention_interval` seconds, in small batches.
    digest_interval: float = 1.0
    gc_tuning: bool = True  # short garbage-collector pauses (app.py `_tune_gc`); false: defaults
    retention_days: float = 90.0
    retention_interval: float = 600.0

    # Web Push (push.py). Without a private key (raw base64url, DER or PEM), one is generated
    # once and kept in the database, so every node signs with the same one. Push services
    # want a contact in `vapid_subject` (mailto: or https:); Apple refuses localhost ones.
    vapid_private_key: str | None = None
    vapid_subject: str = "mailto:clarion@localhost"
    push_interval: float = 1.0  # seconds between looks for due pushes (other nodes' ones)
    push_timeout: float = 10.0  # seconds one push may take; a sender's lease is twice that
    push_retry_seconds: float = 10.0  # first retry after a failure, doubling (at most 1 hour)
    push_max_attempts: int = 8
    push_ttl: int = 86400  # seconds a push service keeps a push for an offline browser
    push_allow_http_loopback: bool = False  # tests: accept http://127.0.0.1 endpoints

    # Rate limits (the `limits` library's notation).
    rate_limit_publish: str = "2000/second"  # per API key
    rate_limit_user: str = "50/second"  # per user: inbox calls and WebSocket frames
    rate_limit_ip: str = "1000/second"  # per client address: requests and handshakes

    def secret_path(self) -> Path:
        """Where the generated JWT secret lives: beside an SQLite file, else in the cwd."""
        url = self.database_url
        if url.startswith("sqlite") and ":memory:" not in url:
            db = Path(url.split(":///", 1)[1])
            return db.with_name(db.name + ".secret")
        return Path("clarion.secret")

    def resolve_jwt_secret(self) -> str | None:
        """The HS256 secret: configured, or generated once and kept (mode 0600)."""
        if self.jwt_secret or self.jwt_public_key or self.jwt_jwks_url:
            return self.jwt_secret
        path = self.secret_path()
        if path.exists():
            return path.read_text().strip()
        path.parent.mkdir(parents=True, exist_ok=True)
        value = secrets.token_urlsafe(48)
        try:
            with open(path, "x", opener=lambda p, f: os.open(p, f, 0o600)) as fh:
                fh.write(value)
        except FileExistsError:  # another worker won the race: use its secret
            return path.read_text().strip()
        return value
