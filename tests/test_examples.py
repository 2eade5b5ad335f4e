"""The examples that need no browser: the Django app notifies on a model save (after commit,
never for a rolled-back row) and hands its users tokens the server accepts.
(examples/react, examples/vue and examples/fastapi_backend run in tests/e2e/test_frameworks.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness.server import Server

DJANGO_APP = Path(__file__).resolve().parents[1] / "examples" / "django_app"

SCENARIO = """
from django.contrib.auth.models import User
from django.db import transaction
from django.test import Client
from blog.models import Comment, Post

alice = User.objects.create_user("alice", password="demo")
bob = User.objects.create_user("bob", password="demo")
post = Post.objects.create(author=bob, title="Bob's post")
try:
    with transaction.atomic():
        Comment.objects.create(post=post, author=alice, text="rolled back")
        raise RuntimeError("the view failed")
except RuntimeError:
    pass
with transaction.atomic():
    Comment.objects.create(post=post, author=alice, text="Nice post!")
    Comment.objects.create(post=post, author=bob, text="his own: no notification")
http = Client()
assert http.get("/clarion-token").status_code == 401
assert http.login(username="bob", password="demo")
assert b"clarion-inbox" in http.get("/").content
print(http.get("/clarion-token").json()["token"])
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("examples")).start()
    yield srv
    srv.kill(signal.SIGTERM)


def manage(server: Server, database: Path, *args: str) -> str:
    env = {
        **os.environ,
        "CLARION_URL": server.url,
        "CLARION_API_KEY": server.api_key,
        "CLARION_JWT_SECRET": server.secret,
        "EXAMPLE_DATABASE": str(database),
    }
    run = subprocess.run(
        [sys.executable, str(DJANGO_APP / "manage.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


@pytest.mark.slow  # migrates a database and runs Django twice: `make test-slow`
def test_django_app_notifies_on_comment_save(server: Server, tmp_path: Path) -> None:
    pytest.importorskip("django", reason="Django is an optional extra: pip install clarion[django]")
    database = tmp_path / "blog.sqlite3"
    manage(server, database, "migrate", "--verbosity", "0")
    token = manage(server, database, "shell", "-c", SCENARIO).strip().splitlines()[-1]

    inbox = httpx.get(
        server.url + "/v1/me/notifications",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert inbox.status_code == 200, inbox.text  # the token Django minted is accepted
    items = inbox.json()["items"]
    assert [(n["title"], n["body"], n["type"]) for n in items] == [
        ("alice commented on Bob's post", "Nice post!", "comment")
    ]
    assert items[0]["actor"]["name"] == "alice"
