"""Schemathesis fuzzes every operation in /openapi.json: no response may be a server error."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Server


def test_schemathesis_finds_no_server_errors(server: Server, tmp_path: Path) -> None:
    cli = Path(sys.executable).parent / "schemathesis"
    if not cli.exists() and shutil.which("schemathesis") is None:
        pytest.skip("schemathesis is not installed")
    result = subprocess.run(
        [str(cli) if cli.exists() else "schemathesis", "run", server.url + "/openapi.json",
         "--checks", "not_a_server_error", "--max-examples", "25", "--workers", "1", "--seed", "1"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    assert " passed" in out and "failed" not in out.split("SUMMARY")[-1].lower(), out[-4000:]
