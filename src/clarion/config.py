"""Settings, read from flags and `CLARION_*` environment variables (pydantic-settings)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from clarion.transports.cork import WRITE_DELAY


class ConfigError(Exception):
    """A setting that cannot work, said in one line that names the variable and the form."""


def _listed(value: Any, sep: str | None) -> Any:
    """A list given as one string: JSON (`["a", "b"]`), else split on `sep` (None: spaces)."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        try:
            return json.loads(text)
        except ValueError:
            raise ValueError(f"not a JSON list: {text!r}") from None
    return [item.strip() for item in text.split(sep) if item.strip()]


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
    log_format: Literal["text", "json"] = "text"  # json: one object per line (logs.py)
    console: bool = False  # the operator's console at /console (api/console.py)

    # User tokens. Without a secret or key, one secret is generated once and kept in the
    # database (auth.Tokens.load), so tokens survive restarts and every node agrees.
    jwt_secret: str | None = None
    jwt_public_key: str | None = None
    jwt_jwks_url: str | None = None
    jwt_algorithms: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["HS256"])
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    token_ttl: int = 3600
    max_token_ttl: int = 7 * 86400  # tokens whose `exp` lies further ahead are refused

    # Browser origins allowed to call the API (CORS) and open live connections, besides the
    # server's own; empty means pages served from loopback (auth.origin_allowed).
    allowed_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # Live delivery.
    heartbeat: float = 25.0
    max_buffer: int = 1 << 20  # bytes queued per connection before it is a slow consumer
    max_frame: int = 64 * 1024
    # Seconds between two corked writes to the sockets while the process writes back to back
    # (transports/cork.py): frames of the commits landing in between share one write. 0: each
    # loop turn writes. A notification after a quiet spell is written at once.
    write_delay: float = Field(default=WRITE_DELAY, ge=0.0, le=1.0)
    max_body: int = 256 * 1024
    max_header_bytes: int = 32 * 1024  # request line and headers; more is a 431
    write_timeout: float = 30.0  # seconds a response may wait on a client that reads nothing
    max_connections_per_user: int = 100  # live connections of one user on one node
    auth_timeout: float = 10.0  # seconds from the upgrade to a WebSocket's `auth` frame
    # WebSocket handshakes authenticated at once, and long-polls running in the app at once
    # (each its own count; the rest wait, a poll as its parsed head: transports/http.py)
    max_handshakes: int = 64
    max_pending_auth: int = 100  # WebSockets per address still waiting for their `auth` frame
    header_timeout: float = 10.0  # seconds a request may take to send its headers (slowloris)

    # Background work: digests due are sent every `digest_interval` seconds; notifications
    # older than `retention_days` (0: keep forever) are removed every `retention_interval`
    # seconds and expired ones every `expiry_interval` seconds (until then each unread count
    # covering one reads it: store/holes.py), in small batches.
    digest_interval: float = 1.0
    gc_tuning: bool = True  # short garbage-collector pauses (app.py `_tune_gc`); false: defaults
    retention_days: float = 90.0
    retention_interval: float = 600.0
    expiry_interval: float = Field(default=5.0, gt=0.0)

    # Web Push (push.py). Without a private key (raw base64url, DER or PEM), one is generated
    # once and kept in the database, so every node signs with the same one. Push services
    # want a contact in `vapid_subject` (mailto: or https:); Apple refuses localhost ones.
    vapid_private_key: str | None = None
    vapid_subject: str = "mailto:clarion@localhost"
    push_interval: float = 1.0  # seconds between looks for due pushes (other nodes' ones)
    push_timeout: float = 10.0  # seconds one push may take; a sender's lease is twice that
    push_concurrency: int = 50  # pushes a node's sender has in flight at once
    push_retry_seconds: float = 10.0  # first retry after a failure, doubling (at most 1 hour)
    push_max_attempts: int = 8
    push_ttl: int = 86400  # seconds a push service keeps a push for an offline browser
    push_allow_http_loopback: bool = False  # tests: accept http://127.0.0.1 endpoints

    # Control and visibility (docs/control.md): scheduled publishes are released every
    # `schedule_interval` seconds; presence and `delivered` are written in batches every
    # `presence_interval` seconds, and a node's presence stops counting after `presence_stale`
    # seconds without its heartbeat; outbound webhooks retry from `webhook_retry_seconds`,
    # doubling, and an endpoint failing for `webhook_disable_after` seconds is disabled.
    schedule_interval: float = 0.5
    delivery_log: bool = True  # record `delivered` per live write (false: bench/control.py)
    presence_interval: float = 1.0
    presence_stale: float = 15.0
    webhook_interval: float = 1.0  # seconds between looks for due webhook messages
    webhook_timeout: float = 10.0
    webhook_retry_seconds: float = 5.0
    webhook_disable_after: float = 86400.0
    webhook_allow_loopback: bool = False  # tests: accept http://127.0.0.1 receivers
    webhook_cache_seconds: float = 2.0  # a node reads its list of endpoints again after this
    # Email (email.py, docs/channels.md). `smtp://user:pass@host:587` upgrades with STARTTLS
    # when the server offers it, `smtps://host:465` is TLS from the start. Without a URL no
    # email is sent (escalations still come due and are dropped). `public_url`: where Clarion
    # is reached from the outside (unsubscribe links); `app_url`: what relative notification
    # links in emails are relative to.
    smtp_url: str | None = None
    email_from: str = "Clarion <clarion@localhost>"
    public_url: str | None = None
    app_url: str | None = None
    email_interval: float = 1.0  # seconds between looks for due emails and escalations
    email_timeout: float = 30.0  # seconds one SMTP exchange may take; a lease is twice that
    email_retry_seconds: float = 60.0  # first retry after a 4xx or network error, doubling
    email_max_attempts: int = 6
    online_interval: float = 5.0  # when: offline slack (x3) and presence housekeeping period
    # With the console on, each node writes its stats snapshot every `stats_interval` seconds
    # (stats.py); a node silent for three intervals drops off the Live page.
    stats_interval: float = 1.0

    # Rate limits (the `limits` library's notation).
    rate_limit_publish: str = "2000/second"  # per API key
    rate_limit_user: str = "50/second"  # per user: inbox calls and WebSocket frames
    rate_limit_ip: str = "1000/second"  # per client address: requests and handshakes

    metrics_require_key: bool = False  # `/metrics` only with an admin API key (Bearer)

    # Sources to publish from (clarion/ingest): the app's outbox table, RabbitMQ, JetStream,
    # Redis Streams, by URL. A JSON list or URLs separated by spaces (a NATS URL may hold
    # commas between its servers).
    consume: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @field_validator("allowed_origins", "jwt_algorithms", mode="before")
    @classmethod
    def _list(cls, value: Any) -> Any:
        """A list from the environment: JSON (`["a", "b"]`) or comma-separated (`a, b`)."""
        return _listed(value, ",")

    @field_validator("consume", mode="before")
    @classmethod
    def _urls(cls, value: Any) -> Any:
        """URLs from the environment: JSON (`["a", "b"]`) or separated by spaces."""
        return _listed(value, None)

    @field_validator("consume")
    @classmethod
    def _consumers(cls, value: list[str]) -> list[str]:
        """Each URL names a source Clarion can consume (checked now, connected on start)."""
        from clarion.ingest import open_consumer

        for url in value:
            open_consumer(url)
        return value

    @field_validator("smtp_url")
    @classmethod
    def _smtp(cls, value: str | None) -> str | None:
        if value and urlsplit(value).scheme not in ("smtp", "smtps"):
            raise ValueError("must be smtp://[user:password@]host[:port] or smtps://...")
        return value or None

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        """As browsers send them (`https://host[:port]`), so a trailing slash still matches."""
        origins = []
        for item in value:
            origin = item.strip().rstrip("/").lower()
            parts = urlsplit(origin)
            if origin != "*" and (
                parts.scheme not in ("http", "https") or not parts.netloc or parts.path
            ):
                raise ValueError(f"{item!r} is not an origin (scheme://host[:port])")
            origins.append(origin)
        return origins

    def offline_beat(self) -> float:
        """The heartbeat `when: offline` counts its slack in (three of them): an open `online`
        interval ends at its node's last beat, written with the presence batches, so the
        slack is never shorter than three of those (email.py, presence.py)."""
        return max(self.online_interval, self.presence_interval)

    def sqlite_file(self) -> Path | None:
        """The SQLite database file, absolute (a relative URL is relative to the cwd)."""
        url = self.database_url
        if url.startswith("sqlite") and ":memory:" not in url:
            return Path(url.split(":///", 1)[1]).resolve()
        return None

    def database_label(self) -> str:
        """The database as a person recognises it: a whole path, a URL without its password."""
        path = self.sqlite_file()
        if path is not None:
            return f"sqlite:///{path}"
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            return make_url(self.database_url).render_as_string(hide_password=True)
        except ArgumentError:
            return self.database_url

    def legacy_secret_file(self) -> Path | None:
        """Where earlier versions kept the generated secret: beside the SQLite file."""
        db = self.sqlite_file()
        return db.with_name(db.name + ".secret") if db is not None else None


HINTS = {
    "allowed_origins": "a JSON list or comma-separated origins: https://app.example.com,http://localhost:3000",
    "jwt_algorithms": "a JSON list or comma-separated algorithms: HS256,RS256",
    "consume": "a JSON list or space-separated URLs: "
    "postgresql://host/appdb?table=clarion_outbox amqp://host/?queue=notifications",
    "smtp_url": "smtp://user:password@mail.example.com:587 or smtps://...:465",
}


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment and `overrides`; `ConfigError` in one line otherwise."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else ""
        message = str(first["msg"]).removeprefix("Value error, ")
        got = first.get("input")
        # Consumer URLs may hold passwords: their message names the URL without one.
        if name != "consume" and isinstance(got, str | int | float) and repr(got) not in message:
            message += f" (got {got!r})"
        hint = HINTS.get(name)
        raise ConfigError(
            f"CLARION_{name.upper()}: {message}" + (f"; expected {hint}" if hint else "")
        ) from None
    except SettingsError as exc:
        raise ConfigError(str(exc)) from None
