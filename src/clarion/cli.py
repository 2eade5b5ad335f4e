"""The `clarion` command: serve, token, keys, send, db. Options also read `CLARION_<NAME>`."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar
from urllib.parse import quote

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

from clarion.config import ConfigError, Settings, load_settings

app = typer.Typer(
    help="Clarion: self-hosted real-time notifications for web applications.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
keys_app = typer.Typer(help="Publisher API keys (stored only as a hash).", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
outbox_app = typer.Typer(
    help="The outbox table an app writes publishes into (docs/ingest.md).", no_args_is_help=True
)
app.add_typer(keys_app, name="keys")
app.add_typer(db_app, name="db")
app.add_typer(outbox_app, name="outbox")
users_app = typer.Typer(
    help="User profiles (email, name, locale) and erasure, through the HTTP API.",
    no_args_is_help=True,
)
app.add_typer(users_app, name="users")
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
    """The settings, or one line naming the variable that is wrong (exit status 2)."""
    try:
        return load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except ConfigError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None


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
        bool,
        typer.Option("--demo", metavar="", envvar="CLARION_DEMO", help="serve a demo page at /"),
    ] = False,
    log_level: Annotated[str, typer.Option(envvar="CLARION_LOG_LEVEL")] = "info",
    consume: Annotated[
        list[str] | None,
        typer.Option(
            "--consume",
            metavar="URL",
            help="publish from an outbox table or a queue (repeat for several; also "
            "CLARION_CONSUME): postgresql://...?table=, amqp://...?queue=, "
            "nats://...?stream=, redis://...?stream=",
        ),
    ] = None,
) -> None:
    """Run the server (defaults: 127.0.0.1:8000, SQLite in ./clarion.db, in-process broker)."""
    import uvicorn

    from clarion import logs
    from clarion.transports.http import ClarionHttpProtocol
    from clarion.transports.protocol import ClarionWebSocketProtocol

    # Workers are separate processes that build the app from the environment.
    for name, value in (
        ("DATABASE_URL", database_url),
        ("BROKER_URL", broker_url),
        ("DEMO", "true" if demo else None),
        ("CONSUME", json.dumps(consume) if consume else None),
    ):
        if value is not None:
            os.environ[f"CLARION_{name}"] = value
    settings = _settings(host=host, port=port)
    if workers > 1 and settings.broker_url.startswith("memory:"):
        err.print(
            "[red]--workers > 1 needs a broker between the processes:[/] "
            "--broker-url redis://... or nats://..."
        )
        raise typer.Exit(2)
    # The database is opened (and created or upgraded) here, once: a wrong URL is one line,
    # not a traceback per worker, and workers never race to migrate. The same goes for the
    # generated token secret, kept in the database.
    from clarion.auth import Tokens

    # With JSON logs, stderr holds JSON lines only: the database is named in a log line instead.
    text = settings.log_format == "text"
    _run(lambda: _with_store(settings, Tokens(settings).load, create=True, announce=text))
    if demo:
        out.print(f"[bold]Clarion demo[/] on http://{host}:{port}/  (API docs: /docs)")
        if host not in ("127.0.0.1", "localhost", "::1"):
            err.print(
                f"[yellow]warning:[/] --demo on {host}: anyone who reaches this address can "
                "send notifications from the demo page; use it on loopback only"
            )
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
        http=ClarionHttpProtocol,  # with HeaderTimeoutProtocol's deadline on heads
        log_level=log_level,
        log_config=logs.config(settings.log_format, log_level),
        access_log=False,  # Clarion writes its own, with request ids (access.py)
        timeout_graceful_shutdown=10,
        backlog=4096,
    )


@app.command()
def token(
    user: Annotated[str, typer.Argument(help="the application's user id")],
    role: Annotated[
        list[str] | None, typer.Option("--role", metavar="ROLE", help="repeat for several")
    ] = None,
    topic: Annotated[
        list[str] | None,
        typer.Option(
            "--topic", metavar="TOPIC", help="a topic or pattern (project:*) it may follow"
        ),
    ] = None,
    ttl: Annotated[int, typer.Option(metavar="SECONDS", help="seconds until it expires")] = 3600,
    database_url: DatabaseUrl = None,
) -> None:
    """Print a user JWT signed with the secret of the server on this database."""
    from clarion.auth import Tokens

    settings = _settings(database_url=database_url)
    tokens = Tokens(settings)
    _run(lambda: _with_store(settings, tokens.load))
    try:
        print(tokens.mint(user, role or [], ttl, topic or []))
    except RuntimeError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None


async def _nothing(store: Any) -> None:
    return None


async def _with_store(
    settings: Settings,
    fn: Callable[[Any], Awaitable[T]],
    *,
    create: bool = False,
    announce: bool = True,
) -> T:
    """Run `fn` on the store, after saying which database it is. Only `serve` and `db upgrade`
    create a database: elsewhere a missing SQLite file is a wrong directory or URL, and a new
    database there would hold keys and a secret the running server never sees."""
    from clarion.store import open_store

    label = settings.database_label()
    path = settings.sqlite_file()
    fresh = path is not None and not path.exists()
    if fresh and not create:
        err.print(
            f"[red]error:[/] no Clarion database at {escape(str(path))}. Point --database-url "
            "or CLARION_DATABASE_URL at the server's database (the default, "
            "sqlite:///./clarion.db, is relative to the current directory), or create one "
            "with `clarion db upgrade`.",
            soft_wrap=True,
        )
        raise typer.Exit(2)
    if announce:
        err.print(f"[dim]database: {escape(label)}{' (new)' if fresh else ''}[/]", soft_wrap=True)
    try:
        store = open_store(settings.database_url)
        await store.connect()
    except Exception as exc:  # any driver's "cannot connect", said in one line
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        err.print(
            f"[red]error:[/] CLARION_DATABASE_URL: cannot open {escape(label)}: {escape(reason)}",
            soft_wrap=True,
        )
        raise typer.Exit(2) from None
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


@outbox_app.command("ddl")
def outbox_ddl(
    table: Annotated[
        str, typer.Option(help="the table's name (schema.table allowed)")
    ] = "clarion_outbox",
) -> None:
    """Print the outbox table's DDL, for the app's own migrations: a table the app inserts
    into in its own transactions, a NOTIFY trigger that wakes Clarion."""
    from clarion.ingest.outbox import ddl

    try:
        text = ddl(table)
    except ValueError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    print(text, end="")


@db_app.command("upgrade")
def db_upgrade(database_url: DatabaseUrl = None) -> None:
    """Apply schema migrations (serve also does this on start)."""
    settings = _settings(database_url=database_url)
    _run(lambda: _with_store(settings, _nothing, create=True))
    err.print("schema is up to date")


# API fields as the flags that set them, so an error names what the user typed.
FLAGS = {
    "users": "--to",
    "topics": "--topic",
    "roles": "--role",
    "all": "--all",
    "title": "--title",
    "body": "--body",
    "type": "--type",
    "priority": "--priority",
    "url": "--url",
}


@app.command()
def send(
    to: Annotated[
        list[str] | None, typer.Option("--to", metavar="USER", help="user id; repeatable")
    ] = None,
    topic: Annotated[
        list[str] | None,
        typer.Option("--topic", metavar="TOPIC", help="its followers get it; repeatable"),
    ] = None,
    role: Annotated[
        list[str] | None,
        typer.Option("--role", metavar="ROLE", help="its members get it; repeatable"),
    ] = None,
    everyone: Annotated[bool, typer.Option("--all", metavar="", help="send to every user")] = False,
    title: Annotated[str, typer.Option(metavar="TEXT")] = ...,  # type: ignore[assignment]
    body: Annotated[str, typer.Option(metavar="TEXT")] = "",
    type: Annotated[str, typer.Option("--type", metavar="TYPE", help="your category")] = "default",
    priority: Annotated[
        str, typer.Option(metavar="PRIORITY", help="low, normal, high or critical")
    ] = "normal",
    url: Annotated[
        str | None,
        typer.Option("--url", "--link", metavar="URL", help="where a click on it leads"),
    ] = None,
    server: Annotated[
        str, typer.Option(envvar="CLARION_URL", metavar="URL", help="the Clarion server")
    ] = "http://127.0.0.1:8000",
    api_key: Annotated[str | None, typer.Option(envvar="CLARION_API_KEY", metavar="KEY")] = None,
) -> None:
    """Publish a notification through the HTTP API of --server; prints its id."""
    if not api_key:
        err.print("[red]error:[/] --api-key or CLARION_API_KEY is required (clarion keys create)")
        raise typer.Exit(2)
    if not (to or topic or role or everyone):
        err.print("[red]error:[/] no audience: give --to USER, --topic TOPIC, --role ROLE or --all")
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
        "url": url,
    }
    endpoint = server.rstrip("/") + "/v1/notifications"
    err.print(f"[dim]server: {escape(server)}[/]", soft_wrap=True)
    try:
        resp = httpx.post(
            endpoint, json=payload, headers={"Authorization": f"Bearer {api_key}"}, timeout=10
        )
    except httpx.HTTPError as exc:
        err.print(f"[red]error:[/] cannot reach {escape(server)} (--server, CLARION_URL): {exc}")
        raise typer.Exit(1) from None
    if resp.status_code >= 400:
        err.print(f"[red]error:[/] {escape(_refusal(resp, server))}", soft_wrap=True)
        raise typer.Exit(1)
    print(resp.json()["id"])


Server = Annotated[
    str, typer.Option(envvar="CLARION_URL", metavar="URL", help="the Clarion server")
]
ApiKeyOption = Annotated[str | None, typer.Option(envvar="CLARION_API_KEY", metavar="KEY")]


def _api(method: str, path: str, server: str, api_key: str | None, body: Any = None) -> Any:
    """One call of the HTTP API with a publisher key; errors said in one line."""
    if not api_key:
        err.print("[red]error:[/] --api-key or CLARION_API_KEY is required (clarion keys create)")
        raise typer.Exit(2)
    err.print(f"[dim]server: {escape(server)}[/]", soft_wrap=True)
    try:
        resp = httpx.request(
            method,
            server.rstrip("/") + path,
            json=body,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=10,
        )
    except httpx.HTTPError as exc:
        err.print(f"[red]error:[/] cannot reach {escape(server)} (--server, CLARION_URL): {exc}")
        raise typer.Exit(1) from None
    if resp.status_code >= 400:
        err.print(f"[red]error:[/] {escape(_refusal(resp, server))}", soft_wrap=True)
        raise typer.Exit(1)
    return resp.json()


@users_app.command("put")
def users_put(
    user: str,
    email: Annotated[str | None, typer.Option(metavar="ADDRESS")] = None,
    name: Annotated[str | None, typer.Option(metavar="NAME")] = None,
    locale: Annotated[str | None, typer.Option(metavar="TAG", help="BCP 47, e.g. fr-CA")] = None,
    timezone: Annotated[str | None, typer.Option(metavar="ZONE")] = None,
    server: Server = "http://127.0.0.1:8000",
    api_key: ApiKeyOption = None,
) -> None:
    """Create or replace a user's profile; prints it as JSON."""
    body = {"email": email, "name": name, "locale": locale, "timezone": timezone}
    path = f"/v1/users/{quote(user, safe='')}"
    print(json.dumps(_api("PUT", path, server, api_key, body), indent=2))


@users_app.command("get")
def users_get(
    user: str, server: Server = "http://127.0.0.1:8000", api_key: ApiKeyOption = None
) -> None:
    """Print a user's profile as JSON."""
    print(json.dumps(_api("GET", f"/v1/users/{quote(user, safe='')}", server, api_key), indent=2))


@users_app.command("delete")
def users_delete(
    user: str, server: Server = "http://127.0.0.1:8000", api_key: ApiKeyOption = None
) -> None:
    """Erase a user (right to erasure); prints the rows removed per table."""
    answer = _api("DELETE", f"/v1/users/{quote(user, safe='')}", server, api_key)
    print(json.dumps(answer["erased"], indent=2))


def _refusal(resp: httpx.Response, server: str) -> str:
    """The server's error, by the flag that caused it, with what to check for a refused key."""
    try:
        error = resp.json()["error"]
        message, field = str(error["message"]), error.get("field")
    except (ValueError, KeyError, TypeError):
        message, field = resp.text[:200], None
    if field:
        root = str(field).split("[")[0].split(".")[0]
        message = f"{FLAGS.get(root, field)}: {message}"
    if resp.status_code == 401:
        message += (
            f"; the API key is checked against the database of the server at {server}: create "
            "it with `clarion keys create` on that database (--database-url)"
        )
    return f"{message} ({resp.status_code})"


def main() -> None:
    app(prog_name="clarion")


if __name__ == "__main__":
    main()
