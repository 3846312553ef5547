"""The Voxtral engine end to end, on a randomly initialised Voxtral of the real architecture (tests/voxtral_tiny.py).

Its transcripts are random text: these tests check loading through the hub cache, the request template,
generation, the token budget, chunking of long audio with true offsets, dtypes, the response formats and the
errors, not what the model hears. Real Voxtral weights were not available to run (no hub access here).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("mistral_common")

import itertools

from open_stt_server import hub
from open_stt_server.engines.voxtral import PIECE_S, token_budget
from tests.conftest import Server, free_port, metric, server_env, speak, start_server
from tests.voxtral_tiny import install_into_cache

# Sampling keeps to one pass per piece; temperature 0 would add Whisper-style fallback retries, since random
# weights always look like a failed decode.
ONE_PASS = 0.7


@pytest.fixture(scope="session")
def voxtral_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Its own HF home: the tiny Voxtral as `mistralai/Voxtral-Mini-3B-2507`, beside bundled whisper-tiny.en."""
    home = tmp_path_factory.mktemp("vx_home")
    install_into_cache(home / "hub")
    hub.install_bundled(hub.BUNDLED["Systran/faster-whisper-tiny.en"], home / "hub")
    return home


@pytest.fixture(scope="session")
def voxtral_server(voxtral_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(
        voxtral_home, tmp_path_factory.mktemp("vx-logs"), "--model", "voxtral-mini,whisper-tiny.en"
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return speak(
        "Hello there, this is a short test of the Voxtral engine.", tmp_path_factory.mktemp("vx") / "a.wav"
    )


def write_wav(path: Path, audio: np.ndarray) -> Path:
    import soundfile

    soundfile.write(path, audio, 16000, subtype="PCM_16")
    return path


def transcribe(server: Server, path: Path, endpoint: str = "transcriptions", **fields: str) -> httpx.Response:
    data = {"model": "voxtral-mini", "temperature": str(ONE_PASS), **fields}
    with open(path, "rb") as fh:
        return httpx.post(
            f"{server.base_url}/audio/{endpoint}", files={"file": (path.name, fh)}, data=data, timeout=600
        )


def test_loads_from_the_hub_cache_on_cpu_in_float32(voxtral_server: Server) -> None:
    models = httpx.get(voxtral_server.base_url + "/models").json()
    assert {"voxtral-mini", "whisper-tiny.en"} <= {m["id"] for m in models["data"]}
    log = voxtral_server.log()
    assert "models--mistralai--Voxtral-Mini-3B-2507/snapshots/" in log
    assert "loaded voxtral-mini" in log and "on cpu (float32)" in log


def test_sdk_gets_a_string_in_every_format(voxtral_server: Server, speech: Path) -> None:
    import srt
    import webvtt
    from openai import OpenAI

    client = OpenAI(base_url=voxtral_server.base_url, api_key="unused", max_retries=0, timeout=300)
    with open(speech, "rb") as fh:
        result = client.audio.transcriptions.create(model="voxtral-mini", file=fh, temperature=ONE_PASS)
    assert isinstance(result.text, str) and result.text

    for fmt in ("text", "srt", "vtt"):
        with open(speech, "rb") as fh:
            body = client.audio.transcriptions.create(
                model="voxtral-mini", file=fh, response_format=fmt, temperature=ONE_PASS
            )
        assert isinstance(body, str) and body.strip()
        if fmt == "srt":
            cues = list(srt.parse(body))
            assert cues and cues[-1].end.total_seconds() <= 4.0
        if fmt == "vtt":
            import io

            assert webvtt.from_buffer(io.StringIO(body)).captions

    with open(speech, "rb") as fh:
        verbose = client.audio.transcriptions.create(
            model="voxtral-mini", file=fh, response_format="verbose_json", language="fr", temperature=ONE_PASS
        )
    assert verbose.language == "french"
    assert verbose.segments and verbose.segments[0].start == 0.0
    assert verbose.segments[-1].end == pytest.approx(verbose.duration, abs=0.01)

    with open(speech, "rb") as fh:
        events = list(
            client.audio.transcriptions.create(
                model="voxtral-mini", file=fh, stream=True, temperature=ONE_PASS
            )
        )
    assert events[-1].type == "transcript.text.done" and events[-1].text


def test_token_budget_grows_with_the_duration(voxtral_server: Server, tmp_path: Path) -> None:
    assert token_budget(5) < token_budget(25) < token_budget(PIECE_S)
    assert token_budget(PIECE_S) >= 10 * PIECE_S  # room for fast speech: no fixed cap that truncates
    rng = np.random.default_rng(1)
    counts = {}
    for seconds in (4, 25):
        clip = write_wav(
            tmp_path / f"{seconds}.wav", (0.1 * rng.standard_normal(seconds * 16000)).astype(np.float32)
        )
        body = transcribe(voxtral_server, clip, response_format="verbose_json").json()
        [segment] = body["segments"]
        counts[seconds] = len(segment["tokens"])
        assert counts[seconds] <= token_budget(seconds)
    # Random weights never choose end-of-text, so each piece runs to its budget: the 25 s clip gets the larger one.
    assert counts[25] > token_budget(4)
    assert "used its whole budget" in voxtral_server.log()


def test_long_audio_is_cut_at_quiet_points_with_true_offsets(
    voxtral_server: Server, long_speech: Path
) -> None:
    import soundfile

    audio, rate = soundfile.read(long_speech, dtype="float32")
    duration = len(audio) / rate
    assert duration > 60
    body = transcribe(voxtral_server, long_speech, response_format="verbose_json").json()
    segments = body["segments"]
    assert len(segments) >= 3
    assert segments[0]["start"] == 0.0
    assert segments[-1]["end"] == pytest.approx(duration, abs=0.01)
    frame = int(0.05 * rate)
    energy = np.convolve(audio.astype(np.float64) ** 2, np.ones(frame) / frame, mode="same")
    for a, b in itertools.pairwise(segments):
        assert a["end"] == b["start"]  # contiguous, in order
        assert a["end"] - a["start"] <= PIECE_S + 0.01
        # each cut sits in a pause: far quieter there than the speech around it
        assert energy[int(a["end"] * rate)] < 0.05 * np.median(energy[energy > 0])
    assert [s["id"] for s in segments] == list(range(len(segments)))


def test_requests_the_model_cannot_honour_are_clear_400s(voxtral_server: Server, speech: Path) -> None:
    cases = [
        ({"response_format": "verbose_json", "timestamp_granularities[]": "word"}, "timestamp_granularities"),
        ({"prompt": "Voxtral, Mistral"}, "prompt"),
        ({"include[]": "logprobs"}, "include"),
        ({"language": "yue"}, "language"),  # Whisper has a code for Cantonese; the request template does not
    ]
    for fields, param in cases:
        response = transcribe(voxtral_server, speech, **fields)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == param
        assert "voxtral-mini" in response.json()["error"]["message"]
    response = transcribe(voxtral_server, speech, "translations")
    assert response.status_code == 400 and response.json()["error"]["code"] == "translation_not_supported"


def test_concurrent_requests_share_the_scheduler(voxtral_server: Server, speech: Path) -> None:
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda _: transcribe(voxtral_server, speech), range(4)))
    assert [r.status_code for r in responses] == [200] * 4
    # the Whisper model beside it still answers
    whisper = transcribe(voxtral_server, speech, model="whisper-tiny.en", temperature="0")
    assert "voxtral" in whisper.json()["text"].lower() or "test" in whisper.json()["text"].lower()


def test_local_directory_in_bfloat16_on_cpu(voxtral_home: Path, tmp_path: Path, speech: Path) -> None:
    """A Voxtral in a plain directory (found by its config's model_type), with the dtype asked for."""
    snapshot = install_into_cache(voxtral_home / "hub")
    local = tmp_path / "my-voxtral"
    local.mkdir()
    for file in snapshot.iterdir():
        (local / file.name).write_bytes(file.read_bytes())
    srv = start_server(voxtral_home, tmp_path, "--model", str(local), "--compute-type", "bfloat16")
    try:
        assert "loaded my-voxtral" in srv.log() and "on cpu (bfloat16)" in srv.log()
        response = transcribe(srv, speech, model="my-voxtral", response_format="verbose_json")
        assert response.status_code == 200 and response.json()["segments"]
    finally:
        srv.stop()


def run_cli(home: Path, *args: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "open_stt_server", "--host", "127.0.0.1", "--port", str(free_port()), *args],
        env=server_env(home, **(extra_env or {})),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("compute_type", "says"), [("int8", "use one of float32, bfloat16, float16"), ("float16", "needs CUDA")]
)
def test_unsupported_compute_types_stop_start_up(voxtral_home: Path, compute_type: str, says: str) -> None:
    result = run_cli(voxtral_home, "--model", "voxtral-mini", "--compute-type", compute_type)
    assert result.returncode == 1
    assert says in result.stderr


def test_missing_extra_names_the_extra_to_install(voxtral_home: Path, tmp_path: Path) -> None:
    """A Whisper-only install: the Voxtral packages cannot be imported (hidden from this process)."""
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'torch', 'transformers', 'mistral_common'}:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}')\n"
        "        return None\n"
        "sys.meta_path.insert(0, _Hide())\n"
    )
    result = run_cli(voxtral_home, "--model", "voxtral-mini", extra_env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 1
    assert "pip install 'open-stt-server[voxtral]'" in result.stderr
    assert "torch" in result.stderr


def test_timeout_stops_generation_mid_piece(voxtral_home: Path, tmp_path: Path) -> None:
    """A request that runs out of time is answered 504 and its generation stops at the next token, not at the
    end of the piece; the worker is free again at once."""
    srv = start_server(
        voxtral_home, tmp_path, "--model", "voxtral-mini", "--request-timeout", "1", "--workers", "1"
    )
    try:
        noise = (0.1 * np.random.default_rng(2).standard_normal(90 * 16000)).astype(np.float32)
        response = transcribe(srv, write_wav(tmp_path / "noise.wav", noise))
        assert response.status_code == 504, response.text
        assert response.json()["error"]["type"]
        # the worker is free again: nothing admitted or running (read from /metrics, not timed)
        deadline = time.monotonic() + 60
        while metric(srv, "open_stt_queue_depth", model="voxtral-mini") or metric(
            srv, "open_stt_running", model="voxtral-mini"
        ):
            assert time.monotonic() < deadline, "the cancelled request still holds the worker"
            time.sleep(0.05)
        log = srv.log()
        assert "stopped after" in log and "request cancelled" in log
        stopped = int(log.split("stopped after ")[1].split()[0])
        assert stopped < token_budget(30)
    finally:
        srv.stop()


def test_diarized_json_labels_whole_pieces(voxtral_server: Server, tmp_path: Path) -> None:
    """Voxtral has no word times: each piece (segment) takes the speaker who fills most of it."""
    from openai import OpenAI
    from openai.types.audio import TranscriptionDiarized

    from tests.conversations import VOICES, meeting

    conversation = meeting(voices=VOICES[:2], lines=("Good morning, thanks for joining the call today.",) * 2)
    client = OpenAI(base_url=voxtral_server.base_url, api_key="unused", max_retries=0, timeout=300)
    with conversation.write(tmp_path / "two.wav").open("rb") as fh:
        result = client.audio.transcriptions.create(
            model="voxtral-mini", file=fh, response_format="diarized_json", temperature=ONE_PASS
        )
    assert isinstance(result, TranscriptionDiarized)
    assert result.segments and result.segments[0].speaker == "A"
    assert {s.speaker for s in result.segments} <= {"A", "B"}
    assert all(0 <= s.start < s.end <= conversation.duration + 0.01 for s in result.segments)


def test_realtime_session_on_voxtral(voxtral_server: Server, speech: Path) -> None:
    """A manual-commit realtime turn on Voxtral: the final text per turn (random weights: any text)."""
    import asyncio

    from open_stt_server.audio import decode_audio
    from tests.realtime_client import open_session, pcm16, transcription_session

    samples = decode_audio(speech.read_bytes(), 60).samples

    async def scenario():
        s = await open_session(voxtral_server, "intent=transcription&model=voxtral-mini")
        await s.send("session.update", session=transcription_session(turn_detection=None))
        await s.next("session.updated")
        await s.append(pcm16(samples))
        await s.send("input_audio_buffer.commit")
        done = await s.next("conversation.item.input_audio_transcription.completed", timeout=300)
        await s.ws.close()
        return s, done

    s, done = asyncio.run(scenario())
    deltas = [e["delta"] for e in s.of("conversation.item.input_audio_transcription.delta")]
    assert "".join(deltas) == done["transcript"]
    assert not s.of("error") and not s.of("conversation.item.input_audio_transcription.failed")
