"""The openai Node SDK's realtime client (`OpenAIRealtimeWS`, intent transcription) against the server over TLS
with a self-signed certificate: the SDK always connects with wss, so this also proves --ssl-certfile/keyfile."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import needs_espeak, server_env, start_server, wer
from tests.conversations import meeting
from tests.realtime_client import pcm16, silence

NODE_DIR = Path(__file__).parent / "node"
pytestmark = [
    needs_espeak,
    pytest.mark.skipif(
        shutil.which("node") is None or shutil.which("openssl") is None, reason="node/openssl missing"
    ),
]


@pytest.fixture(scope="module")
def node_modules() -> Path:
    if not (NODE_DIR / "node_modules" / "openai").is_dir():
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--silent"], cwd=NODE_DIR, check=True, timeout=300
        )
    return NODE_DIR / "node_modules"


def self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def test_node_sdk_over_tls(hf_home, tmp_path, node_modules):
    cert, key = self_signed(tmp_path)
    env = server_env(hf_home)
    srv = start_server(hf_home, tmp_path, "--model", "whisper-tiny.en", "--ssl-certfile", str(cert),
                       "--ssl-keyfile", str(key), env=env, https=True)  # fmt: skip
    try:
        talk = meeting(
            voices=("en-us",), lines=("Good morning, thanks for joining the call today.",), gap_s=0
        )
        audio = tmp_path / "turn.pcm"
        audio.write_bytes(pcm16(np.concatenate([silence(0.3), talk.samples, silence(1.2)])))
        node_env = {**env, "BASE_URL": srv.base_url, "AUDIO": str(audio), "TURNS": "1",
                    "NODE_EXTRA_CA_CERTS": str(cert)}  # fmt: skip
        result = subprocess.run(["node", "realtime.mjs"], cwd=NODE_DIR, env=node_env, capture_output=True,
                                text=True, timeout=180)  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        out = json.loads(result.stdout.strip().splitlines()[-1])
        assert out["url"].startswith("wss://127.0.0.1")
        assert out["events"][0] == "session.created" and "error" not in out["events"]
        assert "session.updated" in out["events"]
        assert wer(talk.turns[0].text, out["transcripts"][0]) < 0.35, out
    finally:
        srv.stop()
