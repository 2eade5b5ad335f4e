"""Configuration errors: one line that names the variable and the form it expects."""

from __future__ import annotations

import os
import subprocess

import pytest

from clarion.config import ConfigError, load_settings
from harness.server import BIN


def _serve(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "clarion"), "serve", "--port", "1"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("CLARION_ALLOWED_ORIGINS", "127.0.0.1:9000", "is not an origin (scheme://host[:port])"),
        ("CLARION_ALLOWED_ORIGINS", '["https://a.example"', "not a JSON list"),
        ("CLARION_HEARTBEAT", "soon", "valid number"),
    ],
)
def test_a_bad_variable_is_one_line(name: str, value: str, says: str) -> None:
    out = _serve({name: value})
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"error: {name}: ") and says in lines[0]
    assert "Traceback" not in out.stderr


def test_lists_take_json_or_commas(monkeypatch: pytest.MonkeyPatch) -> None:
    for value in (
        '["https://a.example/", "http://localhost:3000"]',
        "https://a.example, http://localhost:3000",
    ):
        monkeypatch.setenv("CLARION_ALLOWED_ORIGINS", value)
        assert load_settings().allowed_origins == ["https://a.example", "http://localhost:3000"]
    monkeypatch.setenv("CLARION_JWT_ALGORITHMS", "HS256,RS256")
    assert load_settings().jwt_algorithms == ["HS256", "RS256"]
    monkeypatch.setenv("CLARION_ALLOWED_ORIGINS", "https://a.example/path")
    with pytest.raises(ConfigError, match=r"^CLARION_ALLOWED_ORIGINS: "):
        load_settings()
