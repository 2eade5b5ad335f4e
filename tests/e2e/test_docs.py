"""Every code block of README.md and docs/*.md runs as written, in order, as a reader would.

Per file, against a temporary `clarion serve --demo` on embedded defaults (its own directory,
no CLARION_* variables), with only the server's address swapped in (and CLARION_URL set to it,
for `clarion send`'s default): `sh` blocks run in one bash
session whose environment carries over (as in a reader's terminal), `python` blocks run with
that environment, `html` blocks are served from a second origin and opened in Chromium (the
widget must go live), `js` blocks run as modules in that page, and `json` blocks must parse.
`text` blocks are not code; `jsx` (React, for a bundler) and `nginx` blocks name the test that
covers them. A block that cannot run here says why in a comment just above it:
`<!-- docs-test: not run: REASON -->`, or `<!-- docs-test: covered by tests/FILE -->` (that
test runs it). `<!-- docs-test: background until "TEXT" -->` starts a long-running block,
goes on with the next ones, and expects TEXT in its output by the end of the file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from browsers import Site, launch_chromium
from playwright.sync_api import Browser, Page, expect

from harness.server import BIN, Server

pytestmark = pytest.mark.slow  # a whole-system run: `make test-slow`

ROOT = Path(__file__).resolve().parents[2]
FILES = ["README.md", *sorted(p.relative_to(ROOT).as_posix() for p in ROOT.glob("docs/*.md"))]
# The addresses the docs use for the server, swapped for the temporary one.
SERVERS = ("http://127.0.0.1:8000", "https://clarion.example.com")
FENCE = re.compile(r"(?:^( *)<!-- docs-test: (.*?) -->\n)?^( *)```(\w*)\n(.*?)^\3```", re.M | re.S)
RUNNABLE = {"sh", "python", "html", "js", "json"}


@dataclass
class Block:
    file: str
    line: int
    lang: str
    code: str
    directive: str | None

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def blocks(file: str) -> list[Block]:
    text = (ROOT / file).read_text()
    found = []
    for m in FENCE.finditer(text):
        body = "\n".join(line[len(m.group(3)) :] for line in m.group(5).splitlines())
        line = text[: m.start(3) if m.group(3) is not None else m.start()].count("\n") + 1
        found.append(Block(file, line, m.group(4), body + "\n", m.group(2)))
    return found


def runs(block: Block) -> bool:
    directive = block.directive or ""
    return block.lang in RUNNABLE and not directive.startswith(("not run:", "covered by "))


def test_every_block_is_labelled_and_every_exception_explained() -> None:
    for file in FILES:
        for block in blocks(file):
            assert block.lang in RUNNABLE | {"text", "nginx", "jsx"}, f"{block.where}: label it"
            directive = block.directive or ""
            if directive.startswith("covered by "):
                assert (ROOT / directive.removeprefix("covered by ")).is_file(), block.where
            elif directive.startswith("not run: "):
                assert len(directive) > len("not run: ") + 10, f"{block.where}: say why"
            elif block.lang in ("nginx", "jsx"):
                pytest.fail(f"{block.where}: which test runs this {block.lang}?")
            else:
                assert directive in ("",) or directive.startswith("background until "), directive


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    yield from launch_chromium()


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Server]:
    """`make run` in a fresh clone: `clarion serve --demo`, embedded defaults, its own dir."""
    (tmp_path / ".venv").symlink_to(BIN.parent)
    srv = Server(tmp_path)
    srv.env = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
    srv.proc = subprocess.Popen(
        [str(BIN / "clarion"), "serve", "--demo", "--port", str(srv.port)],
        cwd=tmp_path,
        env=srv.env,
        stdout=(tmp_path / "server.log").open("ab"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while True:
        assert srv.proc.poll() is None, (tmp_path / "server.log").read_text()
        try:
            if httpx.get(srv.url + "/readyz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.1)
    yield srv
    srv.kill(signal.SIGTERM)


class Reader:
    """A reader working through one file: a terminal (directory and environment), a browser
    tab on their app's page, and the programs they left running."""

    def __init__(self, server: Server, workdir: Path, chromium: Browser) -> None:
        self.server = server
        self.workdir = workdir
        self.chromium = chromium
        # `clarion send` without --server goes to the default address: this server's here.
        self.env = {**server.env, "CLARION_URL": server.url}
        self.background: list[tuple[Block, subprocess.Popen[str], str, list[str]]] = []
        self.site: Site | None = None
        self.page: Page | None = None
        self.errors: list[str] = []

    def code(self, block: Block) -> str:
        code = block.code
        for address in SERVERS:
            code = code.replace(address, self.server.url)
        return code

    def run(self, block: Block) -> None:
        getattr(self, "run_" + block.lang)(block)

    def run_sh(self, block: Block) -> None:
        env_file = self.workdir / ".env-after"
        script = f"{self.code(block)}\nenv -0 > {env_file}\n"
        out = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, f"{block.where} failed:\n{out.stdout}\n{out.stderr}"
        pairs = env_file.read_text().split("\0")
        self.env = dict(p.split("=", 1) for p in pairs if "=" in p)

    def python(self, block: Block) -> list[str]:
        path = self.workdir / f"block_{block.line}.py"
        path.write_text(self.code(block))
        python = shutil.which("python", path=self.env.get("PATH")) or str(BIN / "python")
        return [python, str(path)]

    def run_python(self, block: Block) -> None:
        directive = block.directive or ""
        if directive.startswith("background until "):
            process = subprocess.Popen(
                self.python(block),
                cwd=self.workdir,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            lines: list[str] = []
            threading.Thread(target=lambda: lines.extend(process.stdout or ()), daemon=True).start()
            deadline = time.monotonic() + 30
            while not lines:  # its first line: it is connected, go on with the next blocks
                assert process.poll() is None, f"{block.where} ended at once"
                assert time.monotonic() < deadline, f"{block.where} printed nothing"
                time.sleep(0.05)
            wanted = directive.removeprefix("background until ").strip('"')
            self.background.append((block, process, wanted, lines))
            return
        out = subprocess.run(
            self.python(block),
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, f"{block.where} failed:\n{out.stdout}\n{out.stderr}"

    def run_html(self, block: Block) -> None:
        """The reader's app page, on an origin of its own, with the token routes both
        snippets use (text and JSON), minted by the CLI as the README says."""

        def token() -> str:
            out = subprocess.run(
                [str(BIN / "clarion"), "token", "demo"],
                cwd=self.workdir,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            return out.stdout  # with its newline, as `clarion token demo > file` keeps it

        html = self.code(block).encode()
        self.site = Site(
            {
                "/": lambda: ("text/html", html),
                "/my-app/clarion-token": lambda: ("text/plain", token().encode()),
                "/api/clarion-token": lambda: (
                    "application/json",
                    json.dumps({"token": token().strip()}).encode(),
                ),
            }
        )
        self.page = self.chromium.new_page()
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.goto(self.site.url + "/")
        status = self.page.locator("[data-testid=clarion-status]")
        expect(status).to_have_attribute("data-state", "live", timeout=20_000)
        assert self.errors == [], f"{block.where}: {self.errors}"

    def run_js(self, block: Block) -> None:
        assert self.page is not None, f"{block.where}: no page (an html block) before it"
        self.page.add_script_tag(content=self.code(block), type="module")
        status = self.page.locator("[data-testid=clarion-status]")
        expect(status).to_have_attribute("data-state", "live", timeout=20_000)
        self.page.wait_for_timeout(500)
        assert self.errors == [], f"{block.where}: {self.errors}"

    def run_json(self, block: Block) -> None:
        json.loads(block.code)

    def finish(self) -> None:
        for block, process, wanted, lines in self.background:
            deadline = time.monotonic() + 20
            while wanted not in "".join(lines) and time.monotonic() < deadline:
                time.sleep(0.05)
            seen = "".join(lines)
            process.send_signal(signal.SIGINT)
            process.wait(timeout=10)
            assert wanted in seen, f"{block.where} printed {seen!r}, not {wanted!r}"

    def close(self) -> None:
        for _, process, _, _ in self.background:
            if process.poll() is None:
                process.kill()
        if self.page is not None:
            self.page.close()
        if self.site is not None:
            self.site.close()


@pytest.mark.parametrize("file", [f for f in FILES if any(runs(b) for b in blocks(f))])
def test_code_blocks_run(file: str, demo: Server, chromium: Browser, tmp_path: Path) -> None:
    reader = Reader(demo, tmp_path, chromium)
    try:
        for block in blocks(file):
            if runs(block):
                reader.run(block)
        reader.finish()
    finally:
        reader.close()
