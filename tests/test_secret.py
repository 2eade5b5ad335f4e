"""The generated token secret lives in the database: every node and CLI command on it agrees."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from harness.server import BIN, Server


def unconfigured(workdir: Path) -> Server:
    """A node with no CLARION_JWT_SECRET (nor a public key): the secret is generated."""
    srv = Server(workdir)
    srv.env.pop("CLARION_JWT_SECRET")
    return srv


def mint(srv: Server, user: str, cwd: Path) -> str:
    """`clarion token` as a developer runs it: another directory, the server's database URL."""
    out = subprocess.run(
        [str(BIN / "clarion"), "token", user],
        env=srv.env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def accepted(srv: Server, token: str) -> bool:
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.get(srv.url + "/v1/me/unread-count", headers=headers).status_code == 200


@pytest.mark.slow  # a whole-system restart or kill: make test-slow
def test_cli_tokens_are_accepted_and_survive_a_restart(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    srv = unconfigured(tmp_path).start()
    try:
        token = mint(srv, "alice", elsewhere)
        assert accepted(srv, token)
        srv.kill()
        srv.start()
        assert accepted(srv, token)
        assert accepted(srv, mint(srv, "bob", elsewhere))
    finally:
        srv.kill()
    assert not list(tmp_path.rglob("*.secret")) and not list(elsewhere.iterdir())


@pytest.mark.slow  # a whole-system run (several processes, or a kill): make test-slow
def test_a_secret_file_of_an_earlier_version_is_adopted(tmp_path: Path) -> None:
    srv = unconfigured(tmp_path)
    (tmp_path / "clarion.db.secret").write_text("an-earlier-generated-secret-" + "x" * 40 + "\n")
    srv.secret = "an-earlier-generated-secret-" + "x" * 40
    srv.start()
    try:
        assert accepted(srv, srv.token("alice"))  # signed with the file's secret
        assert accepted(srv, mint(srv, "bob", tmp_path))
    finally:
        srv.kill()
