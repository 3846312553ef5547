"""Moonshine end to end on the real bundled weights (tiny from moonshine-voice, base from moonshine-cpp, the
tokenizer from useful-moonshine-onnx): real English speech, a long file cut at pauses with true times, every
response format, streaming, realtime sessions with live partials, Wyoming, the 400s, and noise that must not
loop."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from open_stt_server.engines.moonshine import PIECE_S, token_budget
from tests.conftest import (
    LONG_PASSAGE,
    Server,
    assert_deltas_tell,
    free_port,
    needs_espeak,
    reference,
    sample,
    start_server,
    wer,
)
from tests.realtime_client import partials_turn

ENGLISH = ("counting", "hello_world", "quick_brown_fox")


@pytest.fixture(scope="module")
def moonshine(hf_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, int]]:
    """moonshine-tiny (default) and moonshine-base, with the Wyoming door open."""
    port = free_port()
    srv = start_server(
        hf_home, tmp_path_factory.mktemp("ms-logs"), "--model", "moonshine-tiny,moonshine-base",
        "--wyoming-port", str(port),
    )  # fmt: skip
    yield srv, port
    srv.stop()


def post(server: Server, path: Path, endpoint: str = "transcriptions", **fields) -> httpx.Response:
    data = {"model": "moonshine-tiny", **fields}
    with open(path, "rb") as fh:
        return httpx.post(
            f"{server.base_url}/audio/{endpoint}", files={"file": (path.name, fh)}, data=data, timeout=300
        )


def write_wav(path: Path, audio: np.ndarray, rate: int = 16000) -> Path:
    import soundfile

    soundfile.write(path, audio, rate, subtype="PCM_16")
    return path


def test_served_from_the_hub_cache_as_catalog_models(moonshine):
    server, _ = moonshine
    models = {m["id"] for m in httpx.get(server.base_url + "/models").json()["data"]}
    assert {"moonshine-tiny", "moonshine-base"} <= models
    log = server.log()
    assert "models--UsefulSensors--moonshine/snapshots/" in log


@pytest.mark.parametrize("model", ["moonshine-tiny", "moonshine-base"])
def test_real_english_speech(moonshine, model: str):
    server, _ = moonshine
    for name in ENGLISH:
        body = post(server, sample("en", name), model=model, response_format="verbose_json").json()
        assert body["language"] == "english"
        assert wer(reference("en", name), body["text"]) <= 0.15, (name, body["text"])
        segment = body["segments"][0]
        assert 0 <= segment["start"] < segment["end"] <= body["duration"] + 0.01


def test_each_word_comes_with_its_probability(hf_home: Path):
    """The live core sends a word sooner when the engine is sure of it: Moonshine's segments carry each word's
    probability (its tokens' product), one per word of the text."""
    from open_stt_server import catalog, hub
    from open_stt_server.audio import decode_audio
    from open_stt_server.engines import load_engine
    from open_stt_server.settings import Settings
    from open_stt_server.transcript import TranscribeOptions

    spec = catalog.lookup("moonshine-tiny")
    engine = load_engine(spec, hub.resolve_weights(spec, download=False), Settings())
    audio = decode_audio(sample("en", "quick_brown_fox").read_bytes(), 600).samples
    (segment,) = engine.start(audio, TranscribeOptions()).segments
    probabilities = segment.word_probabilities
    assert probabilities is not None and len(probabilities) == len(segment.text.split())
    assert all(0.0 < p <= 1.0 for p in probabilities) and sum(probabilities) / len(probabilities) > 0.7


@pytest.fixture(scope="module")
def long_file(long_speech: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The long espeak passage with 4 s of silence in the middle: pieces must keep their true times."""
    import soundfile

    speech, rate = soundfile.read(long_speech, dtype="float32")
    middle = len(speech) // 2
    cut = middle + int(np.argmin(np.abs(speech[middle : middle + rate * 2])))
    audio = np.concatenate([speech[:cut], np.zeros(4 * rate, np.float32), speech[cut:]])
    return write_wav(tmp_path_factory.mktemp("ms-long") / "long.wav", audio, rate)


def test_a_long_file_is_cut_at_pauses_with_true_times(moonshine, long_file: Path):
    server, _ = moonshine
    body = post(server, long_file, response_format="verbose_json").json()
    segments = body["segments"]
    assert len(segments) >= 5
    assert wer(LONG_PASSAGE, body["text"]) <= 0.25, body["text"]
    for previous, segment in itertools.pairwise(segments):
        assert previous["end"] <= segment["start"] + 1e-6, (previous, segment)
    assert all(s["end"] - s["start"] <= PIECE_S + 1e-6 for s in segments)
    assert segments[-1]["end"] <= body["duration"] + 0.01
    # the inserted silence lies between two segments, none covers it
    import soundfile

    audio, rate = soundfile.read(long_file, dtype="float32")
    quiet = np.flatnonzero(np.convolve(np.abs(audio) > 1e-4, np.ones(rate * 3), "valid") == 0)
    gap_middle = (quiet[0] + rate * 1.5) / rate
    assert not any(s["start"] < gap_middle < s["end"] for s in segments), segments


def test_every_response_format_and_stream(moonshine):
    server, _ = moonshine
    clip = sample("en", "quick_brown_fox")
    text = post(server, clip, response_format="text").text
    assert wer("The quick brown fox jumps over the lazy dog.", text) <= 0.15
    assert post(server, clip).json()["text"] == text.strip()
    srt = post(server, clip, response_format="srt").text
    assert srt.startswith("1\n00:00:00,000 --> 00:00:02,")
    assert post(server, clip, response_format="vtt").text.startswith("WEBVTT")
    diarized = post(server, clip, response_format="diarized_json").json()
    assert diarized["segments"] and diarized["segments"][0]["speaker"]
    events = []
    with open(clip, "rb") as fh, httpx.stream(
        "POST", server.base_url + "/audio/transcriptions", files={"file": (clip.name, fh)},
        data={"model": "moonshine-tiny", "stream": "true"}, timeout=120,
    ) as response:  # fmt: skip
        assert response.status_code == 200
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
    deltas = [e["delta"] for e in events if e["type"] == "transcript.text.delta"]
    done = [e for e in events if e["type"] == "transcript.text.done"]
    assert deltas and "".join(deltas) == done[0]["text"] == text.strip()


@pytest.mark.parametrize(
    ("endpoint", "fields", "param"),
    [
        ("transcriptions", {"language": "fr"}, "language"),
        ("translations", {}, "model"),
        ("transcriptions", {"response_format": "verbose_json", "timestamp_granularities[]": "word"},
         "timestamp_granularities"),
        ("transcriptions", {"include[]": "logprobs"}, "include"),
        ("transcriptions", {"prompt": "Kubernetes"}, "prompt"),
    ],
)  # fmt: skip
def test_what_moonshine_cannot_do_is_a_400(moonshine, endpoint: str, fields: dict, param: str):
    server, _ = moonshine
    response = post(server, sample("en", "hello_world"), endpoint, **fields)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert "moonshine-tiny" in error["message"]


def test_english_is_accepted_by_any_name(moonshine):
    server, _ = moonshine
    for language in ("en", "English", "en-GB"):
        assert post(server, sample("en", "hello_world"), language=language).status_code == 200


def test_noise_does_not_loop(moonshine, tmp_path: Path):
    """Twenty seconds of loud noise, whole (no VAD) and through the cutter: whatever comes back is bounded by the
    token budget of the audio it came from, and the request ends."""
    server, _ = moonshine
    rng = np.random.default_rng(7)
    noise = write_wav(tmp_path / "noise.wav", (rng.standard_normal(16000 * 20) * 0.3).clip(-1, 1))
    short = write_wav(tmp_path / "short-noise.wav", (rng.standard_normal(16000 * 6) * 0.3).clip(-1, 1))
    for path, seconds in ((noise, 20.0), (short, 6.0)):
        for model in ("moonshine-tiny", "moonshine-base"):
            body = post(server, path, model=model, response_format="verbose_json").json()
            for segment in body["segments"]:
                assert len(segment["tokens"]) <= token_budget(segment["end"] - segment["start"])
            assert len(body["text"].split()) <= token_budget(seconds)


@needs_espeak
def test_realtime_session_with_live_partials(moonshine):
    from tests.conversations import espeak

    server, _ = moonshine
    line = "Please remind me to water the plants in the garden tomorrow morning before work."
    audio = espeak(line, "en-us")

    s, done = asyncio.run(partials_turn(server, "moonshine-tiny", audio))
    kinds = [e["type"] for e in s.events]
    first_delta = kinds.index("conversation.item.input_audio_transcription.delta")
    assert first_delta < kinds.index("input_audio_buffer.speech_stopped"), "no words before the end of speech"
    deltas = [e["delta"] for e in s.of("conversation.item.input_audio_transcription.delta")]
    assert_deltas_tell(deltas, done["transcript"])  # `completed` is the final decode's own
    assert wer(line, done["transcript"]) <= 0.25, done["transcript"]


@needs_espeak
def test_wyoming_lists_and_serves_moonshine(moonshine, tmp_path: Path):
    from wyoming.asr import Transcribe
    from wyoming.info import Describe, Info

    from tests.wyoming_client import read_pcm, transcribe

    _, port = moonshine

    async def describe() -> Info:
        from wyoming.client import AsyncTcpClient

        async with AsyncTcpClient("127.0.0.1", port) as client:
            await client.write_event(Describe().event())
            while True:
                event = await client.read_event()
                if Info.is_type(event.type):
                    return Info.from_event(event)

    info = asyncio.run(describe())
    models = {m.name: m for m in info.asr[0].models}
    assert models["moonshine-tiny"].languages == ["en"]
    assert models["moonshine-base"].attribution.url.endswith("UsefulSensors/moonshine")
    line = "Turn off the lights in the living room."
    wav = tmp_path / "command.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav), line], check=True)
    pcm, rate, width, channels = read_pcm(wav)
    answer = asyncio.run(transcribe("127.0.0.1", port, pcm, rate, width, channels,
                                    request=Transcribe(name="moonshine-base", language="en"),
                                    realtime=True, trailing_silence_s=0.5))  # fmt: skip
    assert answer.error is None, answer.error
    assert "".join(answer.chunks) == answer.text
    assert wer(line, answer.text) <= 0.2, answer.text
    refused = asyncio.run(transcribe("127.0.0.1", port, pcm, rate, width, channels,
                                     request=Transcribe(name="moonshine-tiny", language="de")))  # fmt: skip
    assert refused.error is not None and refused.error.code == "unsupported_language"
