"""docs/deployment.md's "Two nodes, step by step", followed literally: its code blocks, in
order, as one bash script, with only the database name, the broker namespace and the ports
replaced (so the run cannot touch a real `clarion` database or a busy port)."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import subprocess
import textwrap
from pathlib import Path

import pytest

from harness.server import BIN
from harness.services import POSTGRES_URL, REDIS_URL, _admin_sql, require_service
from harness.util import free_port

pytestmark = pytest.mark.slow  # a whole-system run: `make test-slow`

DOC = Path(__file__).resolve().parents[1] / "docs" / "deployment.md"


def steps() -> list[str]:
    text = DOC.read_text()
    section = text.split("### Two nodes, step by step", 1)[1].split("\n### ", 1)[0]
    blocks = re.findall(r"^( *)```sh\n(.*?)^\1```", section, flags=re.M | re.S)
    return [textwrap.dedent(body) for _, body in blocks]


def test_the_steps_are_numbered_and_have_code() -> None:
    section = DOC.read_text().split("### Two nodes, step by step", 1)[1].split("\n### ", 1)[0]
    numbers = re.findall(r"^(\d+)\. ", section, flags=re.M)
    assert numbers == [str(n) for n in range(1, len(numbers) + 1)] and len(numbers) >= 4
    assert len(steps()) == len(numbers)


def test_two_nodes_step_by_step(tmp_path: Path) -> None:
    require_service("PostgreSQL", POSTGRES_URL)
    require_service("Redis", REDIS_URL)
    name = "clarion_doc_" + secrets.token_hex(4)
    ports = {"8001": str(free_port()), "8002": str(free_port())}
    script = "\n".join(steps())
    script = script.replace("5432/clarion", f"5432/{name}").replace(
        "postgres clarion", f"postgres {name}"
    )
    script = script.replace("namespace=clarion", f"namespace={name}")
    for port, free in ports.items():
        script = script.replace(port, free)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    proc = subprocess.Popen(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the nodes are ended with it
    )
    try:
        out, err = proc.communicate(timeout=180)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # nodes left by a failed step
        _admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    logs = "".join(p.read_text() for p in sorted(tmp_path.glob("node*.log")))
    assert proc.returncode == 0, f"{err}\n{logs}"
    assert out.splitlines()[-2:] == ["Hello from node 1", "Hello from node 1"], out
