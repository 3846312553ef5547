"""Shared fixtures: real weights in a private Hugging Face cache, real servers on loopback, real audio."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from open_stt_server import hub

SAMPLES = (
    Path(next(iter(importlib.util.find_spec("pytest_audioeval").submodule_search_locations)))
    / "samples"
    / "audio"
)


def sample(lang: str, name: str) -> Path:
    return SAMPLES / lang / f"{name}.wav"


def reference(lang: str, name: str) -> str:
    return (SAMPLES / lang / f"{name}.txt").read_text(encoding="utf-8").strip()


@pytest.fixture(scope="session")
def hf_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Hugging Face home whose cache holds the bundled models, laid out exactly as the hub does."""
    home = tmp_path_factory.mktemp("hf_home")
    for model in hub.BUNDLED.values():
        hub.install_bundled(model, home / "hub")
    return home


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log_path: Path

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def server_env(hf_home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPEN_STT_", "RUST_LOG"))}
    env.update(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.pop("HF_HUB_CACHE", None)
    env.update(extra)
    return env


def start_server(hf_home: Path, log_dir: Path, *args: str, env: dict[str, str] | None = None,
                 ready_timeout: float = 90, https: bool = False) -> Server:  # fmt: skip
    port = free_port()
    log_path = log_dir / f"server-{port}.log"
    log_file = open(log_path, "w")  # noqa: SIM115 - kept open for the life of the process
    process = subprocess.Popen(
        [sys.executable, "-m", "open_stt_server", "--host", "127.0.0.1", "--port", str(port), *args],
        env=env or server_env(hf_home),
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    server = Server(f"{'https' if https else 'http'}://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.log()}")
        try:
            if httpx.get(server.url + "/health", timeout=1, verify=not https).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.stop(signal.SIGKILL)
    raise RuntimeError(f"server did not become ready:\n{server.log()}")


@pytest.fixture(scope="session")
def server(hf_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """whisper-base (default) and whisper-tiny.en, no API key."""
    srv = start_server(hf_home, tmp_path_factory.mktemp("logs"), "--model", "whisper-base,whisper-tiny.en")
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def openai_client(server: Server):
    from openai import OpenAI

    return OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=300)


def metric(server: Server, name: str, **labels: str) -> float:
    """The sum of a Prometheus metric's samples that carry `labels`, read from the server's /metrics."""
    text = httpx.get(server.url + "/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


# -- audio made in the tests ---------------------------------------------------------------------------------

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")


def speak(text: str, path: Path, voice: str = "en-us", speed: int = 160) -> Path:
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), text], check=True)
    return path


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


LONG_PASSAGE = (
    "The history of the lighthouse begins with fires built on hilltops to guide ships at night. "
    "Later, towers were raised near harbours, and keepers tended the flames through long winter storms. "
    "In the nineteenth century, lenses made of glass prisms focused the light into a narrow beam. "
    "Ships could see that beam from many miles away, even through rain and fog. "
    "Each lighthouse had its own pattern of flashes, so sailors could tell one coast from another. "
    "Today most lights are automatic, and the old keepers' cottages have become museums. "
    "Visitors climb the narrow stairs, look out over the sea, and imagine the long nights of the past. "
    "The lighthouse remains a symbol of safety, patience and care for strangers at sea. "
)


@pytest.fixture(scope="session")
def long_speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A little over a minute of English speech (espeak-ng), as 16 kHz wav."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    out = tmp_path_factory.mktemp("audio") / "long.wav"
    speak(LONG_PASSAGE, out, speed=110)
    return out


def normalise(text: str) -> str:
    import re

    numbers = {"1": "one", "2": "two", "3": "three", "4": "four", "5": "five", "6": "six", "7": "seven",
               "8": "eight", "9": "nine", "10": "ten"}  # fmt: skip
    text = text.lower().replace("-", " ")
    text = re.sub(r"[^\w\s']", " ", text)
    return " ".join(numbers.get(w, w) for w in text.split())


def wer(reference_text: str, hypothesis: str) -> float:
    import jiwer

    return jiwer.wer(normalise(reference_text), normalise(hypothesis))


def whisper_engine(hf_home: Path, model: str, **settings):
    """The server's Whisper engine, in-process, on the bundled weights of `hf_home`."""
    from open_stt_server import catalog
    from open_stt_server.engines.whisper_ct2 import WhisperEngine
    from open_stt_server.settings import Settings

    spec = catalog.lookup(model)
    os.environ["HF_HOME"] = str(hf_home)
    return WhisperEngine(spec, hub.resolve_weights(spec, download=False), Settings(**settings))


def assert_deltas_tell(deltas: list[str], transcript: str) -> None:
    """A live turn's deltas joined give its transcript — unless words sent live while the speaker talked were
    heard otherwise by the final decode (another word, or only another case or comma), whose transcript wins: the
    deltas are then the words sent live and one last delta, the final from where those words align in it."""
    from open_stt_server.live.partials import aligned_prefix, words_of

    if "".join(deltas) == transcript:
        return
    final = words_of(transcript)
    for live, tail in ((deltas[:-1], deltas[-1:]), (deltas, [])):
        sent = words_of("".join(live))
        k = aligned_prefix(sent, final)
        if "".join(tail) == "".join(final[k:]) and "".join(sent).strip() != "".join(final[:k]).strip():
            return
    raise AssertionError(f"deltas {deltas!r} do not tell the transcript {transcript!r}")
