"""Front-end tooling for the framework tests: the npm packages they need, the Clarion package as
`npm pack` makes it, esbuild bundles, and the FastAPI example backend serving a front end.

npm installs tests/e2e/node/package.json (exact versions, package-lock.json) into
tests/e2e/node/node_modules once, and again only when those files change.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import httpx
import pytest

from harness.util import free_port

ROOT = Path(__file__).resolve().parents[2]
NODE_DIR = Path(__file__).parent / "node"
MODULES = NODE_DIR / "node_modules"
EXAMPLES = ROOT / "examples"
VUE_DEFINES = [
    "--define:__VUE_OPTIONS_API__=true",
    "--define:__VUE_PROD_DEVTOOLS__=false",
    "--define:__VUE_PROD_HYDRATION_MISMATCH_DETAILS__=false",
]


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is missing: the framework tests must run in CI")
        pytest.skip(f"{name} not installed")
    return path


def ensure_node_modules() -> Path:
    """`npm ci` into tests/e2e/node when package.json or the lock changed since the last one."""
    npm = _tool("npm")
    _tool("node")
    digest = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        digest.update((NODE_DIR / name).read_bytes())
    stamp = MODULES / ".clarion-stamp"
    if not (stamp.exists() and stamp.read_text() == digest.hexdigest()):
        run = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--prefix", str(NODE_DIR)],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert run.returncode == 0, f"npm ci failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
        stamp.write_text(digest.hexdigest())
    return MODULES


def pack_client(workdir: Path) -> Path:
    """`npm pack` clients/js and unpack it as node_modules/@clarion/client, as npm would."""
    npm = _tool("npm")
    run = subprocess.run(
        [npm, "pack", "--pack-destination", str(workdir), str(ROOT / "clients" / "js")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    tarball = workdir / run.stdout.strip().splitlines()[-1]
    target = MODULES / "@clarion" / "client"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    with tarfile.open(tarball) as archive:
        for member in archive.getmembers():
            member.name = member.name.removeprefix("package/")
        archive.extractall(target, filter="data")
    return tarball


def bundle(entry: Path, outdir: Path, *extra: str) -> None:
    """esbuild, resolving bare imports (react, vue, @clarion/client) from tests/e2e/node."""
    run = subprocess.run(
        [str(MODULES / ".bin" / "esbuild"), str(entry), "--bundle", "--format=esm",
         f"--outdir={outdir}", "--log-level=warning", *extra],
        env={**os.environ, "NODE_PATH": str(MODULES)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr


def front_end(example: str, workdir: Path, *extra: str) -> Path:
    """An example's index.html and its bundle (dist/main.js), as `npm run build` makes them."""
    site = workdir / example
    site.mkdir()
    shutil.copy(EXAMPLES / example / "index.html", site / "index.html")
    # Bundled from a copy: a node_modules a developer installed in examples/ stays out of it
    # (a second React or Vue would break the hooks).
    source = shutil.copytree(EXAMPLES / example / "src", workdir / f"{example}-src")
    bundle(next(source.glob("main.*")), site / "dist", *extra)
    return site


class Backend:
    """examples/fastapi_backend/app.py as its README runs it, serving `static`."""

    def __init__(self, workdir: Path, clarion_url: str, secret: str, api_key: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.args = ["--port", str(self.port), "--clarion", clarion_url]
        self.env = {**os.environ, "CLARION_JWT_SECRET": secret, "CLARION_API_KEY": api_key}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, static: Path | None = None) -> Backend:
        args = [*self.args, "--static", str(static)] if static else self.args
        log = open(self.workdir / f"backend-{self.port}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, str(EXAMPLES / "fastapi_backend" / "app.py"), *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log()
            try:
                httpx.get(self.url + "/login", timeout=1)
                return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"the example backend did not start: {self.log()}")

    def log(self) -> str:
        path = self.workdir / f"backend-{self.port}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
