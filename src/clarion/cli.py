"""The `clarion` command: serve, token, keys, send, db. Options also read `CLARION_<NAME>`."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar

import httpx
import typer
from rich.console import Console
from rich.table import Column, Table

from clarion.config import Settings

app = typer.Typer(
    help="Clarion: self-hosted real-time notifications for web applications.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
keys_app = typer.Typer(help="Publisher API keys (stored only as a hash).", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(db_app, name="db")
out = Console()
err = Console(stderr=True)
T = TypeVar("T")

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url", envvar="CLARION_DATABASE_URL", help="sqlite:///path or postgresql://..."
    ),
]


def _settings(**overrides: Any) -> Settings:
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def _run(factory: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(factory())  # type: ignore[arg-type]


@app.command()
def serve(
    host: Annotated[str, typer.Option(envvar="CLARION_HOST")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="CLARION_PORT")] = 8000,
    database_url: DatabaseUrl = None,
    broker_url: Annotated[
        str | None, typer.Option(envvar="CLARION_BROKER_URL", help="memory://, redis://, nats://")
    ] = None,
    workers: Annotated[int, typer.Option(envvar="CLARION_WORKERS", min=1, max=64)] = 1,
    demo: Annotated[
        bool, typer.Option("--demo", envvar="CLARION_DEMO", help="serve a demo page at /")
    ] = False,
    log_level: Annotated[str, typer.Option(envvar="CLARION_LOG_LEVEL")] = "info",
) -> None:
    """Run the server (defaults: 127.0.0.1:8000, SQLite in ./clarion.db, in-process broker)."""
    import uvicorn

    from clarion.transports.header_timeout import HeaderTimeoutProtocol
    from clarion.transports.protocol import ClarionWebSocketProtocol

    # Workers are separate processes that build the app from the environment.
    for name, value in (
        ("DATABASE_URL", database_url),
        ("BROKER_URL", broker_url),
        ("DEMO", "true" if demo else None),
    ):
        if value is not None:
            os.environ[f"CLARION_{name}"] = value
    settings = Settings(host=host, port=port)
    if workers > 1 and settings.broker_url.startswith("memory:"):
        err.print(
            "[red]--workers > 1 needs a broker between the processes:[/] "
            "--broker-url redis://... or nats://..."
        )
        raise typer.Exit(2)
    shared_db = not settings.database_url.startswith("sqlite")
    if shared_db and not (settings.jwt_secret or settings.jwt_public_key or settings.jwt_jwks_url):
        err.print(
            f"[yellow]warning:[/] no CLARION_JWT_SECRET (or public key): using "
            f"{settings.secret_path().resolve()}; other nodes on this database need the same "
            "secret, or they will refuse each other's tokens"
        )
    settings.resolve_jwt_secret()  # created once here, before workers race for it
    if demo:
        out.print(f"[bold]Clarion demo[/] on http://{host}:{port}/  (API docs: /docs)")
    uvicorn.run(
        "clarion.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        ws=ClarionWebSocketProtocol,
        ws_max_size=settings.max_frame,
        ws_ping_interval=None,  # one keepalive wheel pings every socket (transports/keepalive.py)
        ws_ping_timeout=None,
        ws_per_message_deflate=False,
        loop="uvloop",
        http=HeaderTimeoutProtocol,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=10,
        backlog=4096,
    )


@app.command()
def token(
    user: Annotated[str, typer.Argument(help="the application's user id")],
    role: Annotated[list[str] | None, typer.Option("--role", help="repeat for several")] = None,
    ttl: Annotated[int, typer.Option(help="seconds until it expires")] = 3600,
    database_url: DatabaseUrl = None,
) -> None:
    """Print a user JWT signed with the configured (or generated) secret."""
    from clarion.auth import Tokens

    tokens = Tokens(_settings(database_url=database_url))
    try:
        print(tokens.mint(user, role or [], ttl))
    except RuntimeError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None


async def _with_store(settings: Settings, fn: Callable[[Any], Awaitable[T]]) -> T:
    from clarion.store import open_store

    store = open_store(settings.database_url)
    await store.connect()
    try:
        return await fn(store)
    finally:
        await store.close()


@keys_app.command("create")
def keys_create(
    scope: Annotated[str, typer.Option(help="publish or admin")] = "publish",
    name: Annotated[str, typer.Option(help="a label to recognise it by")] = "default",
    expires_in_days: Annotated[int | None, typer.Option(help="for rotation")] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create an API key and print its secret (shown this once)."""
    if scope not in ("publish", "admin"):
        err.print("[red]--scope must be publish or admin[/]")
        raise typer.Exit(2)
    expires = datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days else None
    settings = _settings(database_url=database_url)
    key, secret = _run(lambda: _with_store(settings, lambda s: s.create_key(name, scope, expires)))
    err.print(f"created key [bold]{key.id}[/] ({scope}); the secret is shown once:")
    print(secret)


@keys_app.command("list")
def keys_list(database_url: DatabaseUrl = None) -> None:
    """List keys (never their secrets)."""
    settings = _settings(database_url=database_url)
    keys = _run(lambda: _with_store(settings, lambda s: s.list_keys()))
    # The id is what `keys revoke` takes: never shortened, even in a pipe (80 columns).
    id_column = Column("id", no_wrap=True, min_width=16)
    table = Table(id_column, "name", "scope", "created", "expires", "revoked")
    for k in keys:
        table.add_row(
            k.id,
            k.name,
            k.scope,
            f"{k.created_at:%Y-%m-%d %H:%M}",
            f"{k.expires_at:%Y-%m-%d}" if k.expires_at else "-",
            f"{k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "-",
        )
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: str, database_url: DatabaseUrl = None) -> None:
    """Revoke a key; nodes stop accepting it within 5 seconds."""
    settings = _settings(database_url=database_url)
    if not _run(lambda: _with_store(settings, lambda s: s.revoke_key(key_id))):
        err.print(f"[red]no active key {key_id}[/]")
        raise typer.Exit(1)
    err.print(f"revoked {key_id}")


@db_app.command("upgrade")
def db_upgrade(database_url: DatabaseUrl = None) -> None:
    """Apply schema migrations (serve also does this on start)."""
    settings = _settings(database_url=database_url)

    async def noop(store: Any) -> None:
        return None

    _run(lambda: _with_store(settings, noop))
    err.print("schema is up to date")


@app.command()
def send(
    to: Annotated[
        list[str] | None, typer.Option("--to", help="user id; repeat for several")
    ] = None,
    topic: Annotated[
        list[str] | None, typer.Option("--topic", help="topic whose followers get it; repeatable")
    ] = None,
    role: Annotated[
        list[str] | None, typer.Option("--role", help="role whose members get it; repeatable")
    ] = None,
    everyone: Annotated[bool, typer.Option("--all", help="send to everyone")] = False,
    title: Annotated[str, typer.Option()] = ...,  # type: ignore[assignment]
    body: Annotated[str, typer.Option()] = "",
    type: Annotated[str, typer.Option("--type")] = "default",
    priority: Annotated[str, typer.Option(help="low, normal, high or critical")] = "normal",
    link: Annotated[str | None, typer.Option("--link", help="where a click leads")] = None,
    url: Annotated[
        str, typer.Option(envvar="CLARION_URL", help="server base URL")
    ] = "http://127.0.0.1:8000",
    api_key: Annotated[str | None, typer.Option(envvar="CLARION_API_KEY")] = None,
) -> None:
    """Publish a notification through the HTTP API."""
    if not api_key:
        err.print("[red]--api-key or CLARION_API_KEY is required (clarion keys create)[/]")
        raise typer.Exit(2)
    payload: dict[str, Any] = {
        "users": to or [],
        "topics": topic or [],
        "roles": role or [],
        "all": everyone,
        "title": title,
        "body": body,
        "type": type,
        "priority": priority,
        "url": link,
    }
    try:
        resp = httpx.post(
            url.rstrip("/") + "/v1/notifications",
            json=payload,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=10,
        )
    except httpx.HTTPError as exc:
        err.print(f"[red]cannot reach {url}: {exc}[/]")
        raise typer.Exit(1) from None
    if resp.status_code >= 400:
        err.print(f"[red]{resp.status_code}[/] {resp.text}")
        raise typer.Exit(1)
    print(resp.json()["id"])


def main() -> None:
    app(prog_name="clarion")


if __name__ == "__main__":
    main()
