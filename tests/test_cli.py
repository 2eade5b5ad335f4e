"""The `clarion` command, run as users run it: a subprocess, against a real node and database."""

from __future__ import annotations

import re
import shlex
import subprocess
import time
from subprocess import CompletedProcess
from typing import Any

import httpx
import jwt
import pytest

from harness.server import BIN, Server
from harness.util import free_port, user_id


def run(server: Server, command: str = "", **env: str | None) -> CompletedProcess[str]:
    """`clarion COMMAND` with the node's environment; `env` adds variables, None removes them."""
    full = {k: v for k, v in server.env.items() if k not in ("CLARION_API_KEY", "CLARION_URL")}
    for name, value in env.items():
        if value is None:
            full.pop(name, None)
        else:
            full[name] = value
    return subprocess.run(
        [str(BIN / "clarion"), *shlex.split(command)],
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
    )


def revoked_cell(server: Server, name: str) -> str:
    """The `revoked` column of the key named `name` in `keys list` (wide enough to be whole)."""
    listed = run(server, "keys list", COLUMNS="200")
    assert listed.returncode == 0, listed.stderr
    (row,) = [line for line in listed.stdout.splitlines() if name in line]
    return row.strip(" │").rsplit("│", 1)[1].strip()


def inbox(server: Server, user: str) -> list[dict[str, Any]]:
    r = httpx.get(server.url + "/v1/me/notifications", headers=server.me(user), timeout=10)
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


def test_help_lists_the_commands(server: Server) -> None:
    out = run(server, "--help")
    assert out.returncode == 0, out.stderr
    for command in ("serve", "token", "keys", "send"):
        assert re.search(rf"\b{command}\b", out.stdout), command
    bare = run(server)
    assert "Usage" in bare.stdout + bare.stderr


def test_token_is_signed_with_the_configured_secret(server: Server) -> None:
    before = int(time.time())
    out = run(server, "token alice --role admin --ttl 60")
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip()
    assert token.count(".") == 2 and "\n" not in token
    claims = jwt.decode(token, server.secret, algorithms=["HS256"])
    assert claims["sub"] == "alice" and claims["roles"] == ["admin"]
    assert claims["exp"] - claims["iat"] == 60
    assert before - 1 <= claims["iat"] <= int(time.time()) + 1
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, server.secret + "x", algorithms=["HS256"])
    r = httpx.get(server.url + "/v1/me/unread-count", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, "the node accepts what the CLI mints"


def test_token_roles_repeat_and_default_ttl(server: Server) -> None:
    out = run(server, "token bob --role admin --role ops")
    claims = jwt.decode(out.stdout.strip(), server.secret, algorithms=["HS256"])
    assert claims["roles"] == ["admin", "ops"] and claims["exp"] - claims["iat"] == 3600


def test_keys_create_list_revoke(server: Server) -> None:
    name = "cli-" + user_id()
    created = run(server, f"keys create --scope admin --name {name}")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    match = re.fullmatch(r"clk_([0-9a-f]{16})_[\w-]{20,}", secret)
    assert match, secret
    key_id = match.group(1)
    assert key_id in created.stderr and secret not in created.stderr

    listed = run(server, "keys list", COLUMNS="200")
    assert listed.returncode == 0, listed.stderr
    (row,) = [line for line in listed.stdout.splitlines() if name in line]
    assert key_id in row and "admin" in row
    assert secret.rsplit("_", 1)[1] not in listed.stdout + listed.stderr, "no secret in lists"
    assert revoked_cell(server, name) == "-"

    r = httpx.get(server.url + "/v1/keys", headers={"Authorization": f"Bearer {secret}"})
    assert r.status_code == 200 and name in r.text, "the node accepts the new key"

    revoked = run(server, f"keys revoke {key_id}")
    assert revoked.returncode == 0, revoked.stderr
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", revoked_cell(server, name))
    again = run(server, f"keys revoke {key_id}")
    assert again.returncode != 0 and key_id in again.stderr
    assert run(server, "keys create --scope root").returncode != 0


def test_keys_list_shows_whole_ids_when_piped(server: Server) -> None:
    key_id = run(server, "keys create --name piped").stdout.split("_")[1]
    assert key_id in run(server, "keys list", COLUMNS=None).stdout


def test_a_revoked_key_cannot_publish(server: Server) -> None:
    secret = run(server, "keys create --name short-lived").stdout.strip()
    assert run(server, f"keys revoke {secret.split('_')[1]}").returncode == 0
    command = f"send --to {user_id()} --title T --server {server.url}"
    out = run(server, command, CLARION_API_KEY=secret)
    assert out.returncode != 0 and "401" in out.stderr


def test_send_with_the_environment(server: Server) -> None:
    u = user_id()
    out = run(
        server,
        f"send --to {u} --title 'A title' --body B --type message --priority high",
        CLARION_API_KEY=server.api_key,
        CLARION_URL=server.url,
    )
    assert out.returncode == 0, out.stderr
    (item,) = inbox(server, u)
    assert item["id"] == out.stdout.strip()
    fields = (item["title"], item["body"], item["type"], item["priority"])
    assert fields == ("A title", "B", "message", "high")


def test_send_with_flags_to_several(server: Server) -> None:
    u, v = user_id(), user_id()
    key = f"--api-key {server.api_key}"
    out = run(server, f"send --to {u} --to {v} --title T {key} --server {server.url}/")
    assert out.returncode == 0, out.stderr
    nid = out.stdout.strip()
    assert [i["id"] for i in inbox(server, u)] == [nid] == [i["id"] for i in inbox(server, v)]


def test_send_without_a_key_fails_clearly(server: Server) -> None:
    u = user_id()
    out = run(server, f"send --to {u} --title T --server {server.url}")
    assert out.returncode != 0
    assert "CLARION_API_KEY" in out.stderr and "--api-key" in out.stderr
    assert out.stdout == "" and "Traceback" not in out.stderr
    assert inbox(server, u) == []


def test_send_reports_errors(server: Server) -> None:
    key = f"--api-key {server.api_key}"
    bad_key = run(server, f"send --to x --title T --server {server.url} --api-key clk_0_nope_x")
    assert bad_key.returncode != 0 and "401" in bad_key.stderr
    nobody = run(server, f"send --to x --title T --server http://127.0.0.1:{free_port()} {key}")
    assert nobody.returncode != 0 and "cannot reach" in nobody.stderr
    invalid = run(server, f"send --to x --title T --priority urgent --server {server.url} {key}")
    assert invalid.returncode != 0 and "priority" in invalid.stderr


def test_send_names_flags_and_takes_the_link_as_url(server: Server) -> None:
    key = f"--api-key {server.api_key} --server {server.url}"
    u = user_id()
    out = run(server, f"send --to {u} --title T --url /messages/42 {key}")
    assert out.returncode == 0, out.stderr
    assert f"server: {server.url}" in out.stderr
    assert inbox(server, u)[0]["url"] == "/messages/42"
    nobody = run(server, f"send --title T {key}")
    assert nobody.returncode == 2 and "no audience: give --to USER" in nobody.stderr
    invalid = run(server, f"send --to x --title T --priority urgent {key}")
    assert "--priority: " in invalid.stderr and "(422)" in invalid.stderr
    assert "Value error" not in invalid.stderr
    refused = run(server, f"send --to x --title T --server {server.url} --api-key clk_0_nope_x")
    assert "clarion keys create" in refused.stderr and "(401)" in refused.stderr


def test_help_shows_flags_without_fake_values(server: Server) -> None:
    out = run(server, "send --help", COLUMNS="200")
    assert "<bool>" not in out.stdout.split("--help")[0]
    assert re.search(r"--url,--link\s+URL", out.stdout), out.stdout
    assert re.search(r"--server\s+URL", out.stdout), out.stdout


def test_token_topics(server: Server) -> None:
    out = run(server, "token carol --topic project:* --topic news")
    claims = jwt.decode(out.stdout.strip(), server.secret, algorithms=["HS256"])
    assert claims["topics"] == ["project:*", "news"]


def test_commands_refuse_to_create_a_database_elsewhere(server: Server, tmp_path: Any) -> None:
    """Run from another directory with the default URL: no new ./clarion.db, no secret."""
    for command in ("token demo", "keys create", "keys list"):
        out = subprocess.run(
            [str(BIN / "clarion"), *shlex.split(command)],
            env={k: v for k, v in server.env.items() if not k.startswith("CLARION_")},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 2, command
        assert f"no Clarion database at {tmp_path / 'clarion.db'}" in out.stderr
        assert out.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_commands_say_which_database(server: Server) -> None:
    out = run(server, "keys list")
    path = server.env["CLARION_DATABASE_URL"].split(":///", 1)[1]
    if server.env["CLARION_DATABASE_URL"].startswith("sqlite"):
        assert f"database: sqlite:///{path}" in out.stderr


def test_a_missing_postgres_database_is_one_line(server: Server) -> None:
    from harness.services import POSTGRES_URL, require_service

    require_service("PostgreSQL", POSTGRES_URL)
    missing = POSTGRES_URL.rsplit("/", 1)[0] + "/clarion_no_such_db"
    for command in ("keys list", f"serve --port {free_port()}"):
        out = run(server, command, CLARION_DATABASE_URL=missing)
        assert out.returncode == 2, out.stderr
        (line,) = [x for x in out.stderr.splitlines() if x.startswith("error:")]
        assert 'database "clarion_no_such_db" does not exist' in line
        assert "Traceback" not in out.stderr
