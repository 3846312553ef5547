"""OpenAI parity: every response format on both endpoints, word timestamps, streaming, VAD, logprobs."""

from __future__ import annotations

import itertools
import json
import subprocess

import httpx
import numpy as np
import pytest
import srt
import webvtt
from openai.types.audio import TranscriptionVerbose, TranslationVerbose

from tests.conftest import LONG_PASSAGE, Server, metric, needs_espeak, reference, sample, speak, wer

FOX = ("en", "quick_brown_fox")


def transcribe(server: Server, path, endpoint: str = "transcriptions", **data) -> httpx.Response:
    with open(path, "rb") as fh:
        return httpx.post(f"{server.base_url}/audio/{endpoint}", files={"file": fh}, data=data, timeout=300)


@pytest.mark.parametrize("endpoint", ["transcriptions", "translations"])
def test_every_format_on_both_endpoints(openai_client, endpoint: str) -> None:
    api = getattr(openai_client.audio, endpoint)
    results = {}
    for fmt in ("json", "text", "srt", "vtt", "verbose_json"):
        with open(sample(*FOX), "rb") as fh:
            results[fmt] = api.create(model="whisper-base", file=fh, response_format=fmt)
    text = results["json"].text
    assert wer(reference(*FOX), text) <= 0.2
    assert results["text"].strip() == text
    verbose = results["verbose_json"]
    assert isinstance(verbose, TranscriptionVerbose if endpoint == "transcriptions" else TranslationVerbose)
    assert verbose.text == text and verbose.language == "english"
    cues = list(srt.parse(results["srt"]))
    assert " ".join(c.content for c in cues).strip() == text
    vtt = webvtt.from_buffer(__import__("io").StringIO(results["vtt"]))
    assert " ".join(c.text for c in vtt).strip() == text


def test_verbose_json_fields_and_types(server: Server) -> None:
    r = transcribe(server, sample(*FOX), response_format="verbose_json", timestamp_granularities=["segment"])
    body = r.json()
    parsed = TranscriptionVerbose.model_validate(body)
    assert body["task"] == "transcribe" and parsed.language == "english"
    assert isinstance(body["duration"], float) and abs(body["duration"] - 2.889) < 0.01
    seg = body["segments"][0]
    assert set(seg) == {"id", "seek", "start", "end", "text", "tokens", "temperature", "avg_logprob",
                        "compression_ratio", "no_speech_prob"}  # fmt: skip
    assert all(isinstance(t, int) for t in seg["tokens"])
    assert all(0 <= s["start"] <= s["end"] <= body["duration"] for s in body["segments"])
    assert "words" not in body


@pytest.mark.parametrize("field", ["timestamp_granularities[]", "timestamp_granularities"])
def test_word_timestamps(server: Server, field: str) -> None:
    with open(sample(*FOX), "rb") as fh:
        r = httpx.post(server.base_url + "/audio/transcriptions", files={"file": fh}, timeout=120,
                       data={"response_format": "verbose_json", field: ["word", "segment"]})  # fmt: skip
    body = r.json()
    parsed = TranscriptionVerbose.model_validate(body)
    assert parsed.words and parsed.segments
    words = [w.word.lower().strip(".,") for w in parsed.words]
    assert words[:4] == ["the", "quick", "brown", "fox"]
    previous = 0.0
    for w in parsed.words:
        assert previous <= w.start <= w.end <= parsed.duration
        previous = w.start


def test_word_timestamps_through_sdk(openai_client) -> None:
    with open(sample(*FOX), "rb") as fh:
        result = openai_client.audio.transcriptions.create(
            model="whisper-base", file=fh, response_format="verbose_json", timestamp_granularities=["word"]
        )
    assert result.words and result.words[-1].end <= result.duration


def test_word_granularity_needs_verbose_json(server: Server) -> None:
    r = transcribe(server, sample(*FOX), **{"timestamp_granularities[]": "word"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "timestamp_granularities"
    r = transcribe(
        server, sample(*FOX), response_format="verbose_json", **{"timestamp_granularities[]": "char"}
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "timestamp_granularities"


def test_json_usage_and_content_types(server: Server) -> None:
    r = transcribe(server, sample(*FOX))
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["usage"] == {"type": "duration", "seconds": 3}
    assert (
        transcribe(server, sample(*FOX), response_format="srt")
        .headers["content-type"]
        .startswith("text/plain")
    )
    assert (
        transcribe(server, sample(*FOX), response_format="vtt").headers["content-type"].startswith("text/vtt")
    )


def test_translation_to_english(openai_client) -> None:
    with open(sample("fr", "bonjour_monde"), "rb") as fh:
        result = openai_client.audio.translations.create(
            model="whisper-base", file=fh, response_format="verbose_json"
        )
    assert result.language == "english" or result.language == "french"
    assert "hello" in result.text.lower() and "bonjour" not in result.text.lower(), result.text
    with open(sample("es", "hola_mundo"), "rb") as fh:
        text = openai_client.audio.translations.create(model="whisper-base", file=fh).text
    assert "world" in text.lower(), text


def test_translation_with_english_only_model_is_400(server: Server) -> None:
    r = transcribe(server, sample("fr", "bonjour_monde"), endpoint="translations", model="whisper-tiny.en")
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"


def test_streaming_deltas_join_to_done_text_and_match_non_streaming(openai_client, long_speech) -> None:
    with open(long_speech, "rb") as fh:
        plain = openai_client.audio.transcriptions.create(
            model="whisper-base", file=fh, extra_body={"batched": False}
        )
    deltas, done = [], None
    with open(long_speech, "rb") as fh:
        stream = openai_client.audio.transcriptions.create(
            model="whisper-base", file=fh, stream=True, extra_body={"batched": False}
        )
        for event in stream:
            if event.type == "transcript.text.delta":
                assert done is None
                deltas.append(event.delta)
            elif event.type == "transcript.text.done":
                done = event
    assert done is not None and len(deltas) > 1
    assert "".join(deltas) == done.text == plain.text
    assert done.usage is not None and done.usage.output_tokens > 0


def stream_deltas(server: Server, path, **data) -> tuple[list[str], str, float]:
    """(deltas, done text, the model's admitted requests when the first delta arrived)."""
    deltas: list[str] = []
    done = None
    admitted_at_first = -1.0
    with open(path, "rb") as fh, httpx.stream(
        "POST", server.base_url + "/audio/transcriptions", files={"file": fh},
        data={"stream": "true", "model": "whisper-base", **data}, timeout=300,
    ) as r:  # fmt: skip
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if not line.startswith("data:"):
                continue
            event = json.loads(line[5:])
            if event["type"] == "transcript.text.delta":
                if not deltas:
                    admitted_at_first = metric(server, "open_stt_queue_depth", model="whisper-base")
                deltas.append(event["delta"])
            elif event["type"] == "transcript.text.done":
                done = event["text"]
    assert done is not None
    return deltas, done, admitted_at_first


@pytest.mark.parametrize("batched", ["false", "true"])
def test_first_delta_arrives_while_the_rest_is_decoded(server: Server, long_speech, batched: str) -> None:
    """Text streams segment by segment: when the first delta reaches the client the request is still being
    decoded (windows or a second batch remain), on the sequential and on the batched path alike."""
    deltas, done, admitted_at_first = stream_deltas(server, long_speech, batched=batched)
    assert admitted_at_first >= 1, "the first delta came only after the whole file was decoded"
    assert len(deltas) >= 3
    assert "".join(deltas) == done
    assert wer(LONG_PASSAGE, done) <= 0.15, done


def test_batched_path_returns_sentence_segments(openai_client, long_speech) -> None:
    """Over 60 s takes the batched path; its segments are sentences or phrases, in order, inside the audio,
    with their words inside them, like the sequential decoder's."""
    with open(long_speech, "rb") as fh:
        body = openai_client.audio.transcriptions.create(
            model="whisper-base", file=fh, response_format="verbose_json",
            timestamp_granularities=["segment", "word"], extra_body={"batched": "true"},
        )  # fmt: skip
    assert isinstance(body, TranscriptionVerbose)
    segments = body.segments
    sentences = [s for s in LONG_PASSAGE.split(". ") if s.strip()]
    assert len(segments) >= len(sentences) - 2, [s.text for s in segments]
    assert max(s.end - s.start for s in segments) <= 15.0
    assert [s.id for s in segments] == list(range(len(segments)))
    for previous, current in itertools.pairwise(segments):
        assert previous.end <= current.start + 1e-6
    assert segments[0].start >= 0 and segments[-1].end <= body.duration + 1e-6
    words = body.words
    assert words and wer(LONG_PASSAGE, " ".join(w.word for w in words)) <= 0.15
    for word in words:
        assert any(s.start - 1e-6 <= word.start and word.end <= s.end + 1e-6 for s in segments), word
    # sentence ends close segments: most segments end with a full stop
    assert sum(s.text.strip().endswith(".") for s in segments) >= len(segments) * 0.6
    assert wer(LONG_PASSAGE, body.text) <= 0.15


def test_stream_with_srt_is_refused(server: Server) -> None:
    r = transcribe(server, sample(*FOX), stream="true", response_format="srt")
    assert r.status_code == 400 and r.json()["error"]["param"] == "stream"


def test_logprobs(server: Server) -> None:
    r = transcribe(server, sample(*FOX), **{"include[]": "logprobs"})
    body = r.json()
    assert body["logprobs"] and all(lp["logprob"] <= 0 and lp["bytes"] for lp in body["logprobs"])
    assert "".join(lp["token"] for lp in body["logprobs"]).strip() == body["text"]
    bad = transcribe(server, sample(*FOX), response_format="text", **{"include[]": "logprobs"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "include"


@pytest.mark.parametrize("value", ["fancy", '{"type": "semantic"}', '{"type": "server_vad", "threshold": 7}'])
def test_unknown_chunking_strategy(server: Server, value: str) -> None:
    r = transcribe(server, sample(*FOX), chunking_strategy=value)
    assert r.status_code == 400 and r.json()["error"]["param"] == "chunking_strategy"


@pytest.fixture(scope="module")
def speech_gap_speech(tmp_path_factory) -> tuple:
    """Two sentences with 40 s of silence between them; returns (path, second sentence's start in s)."""
    import shutil

    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        pytest.skip("espeak-ng and sox are needed")
    d = tmp_path_factory.mktemp("vad")
    first = speak("The meeting starts with a short summary of last week.", d / "a.wav")
    second = speak("After the break we discuss the budget for next year.", d / "b.wav")
    out = d / "gap.wav"
    subprocess.run(
        ["sox", "-n", "-r", "22050", "-c", "1", str(d / "silence.wav"), "trim", "0", "40"], check=True
    )
    subprocess.run(
        ["sox", str(first), str(d / "silence.wav"), str(second), "-r", "16000", str(out)], check=True
    )
    first_len = float(subprocess.run(["soxi", "-D", str(first)], capture_output=True, text=True).stdout)
    return out, first_len + 40.0


@needs_espeak
@pytest.mark.parametrize(
    "vad",
    [
        {"vad_filter": "true"},
        {"chunking_strategy": "auto"},
        {"chunking_strategy": json.dumps({"type": "server_vad", "silence_duration_ms": 1000})},
    ],
)
def test_vad_keeps_times_true_across_a_long_silence(server: Server, speech_gap_speech, vad: dict) -> None:
    path, second_start = speech_gap_speech
    r = transcribe(server, path, response_format="verbose_json", batched="false",
                   **{"timestamp_granularities[]": ["word", "segment"]}, **vad)  # fmt: skip
    body = r.json()
    text = body["text"].lower()
    assert "summary" in text and "budget" in text
    for seg in body["segments"]:
        # nothing may span the silence: every segment is wholly before it or wholly after it
        assert seg["end"] <= second_start - 30 or seg["start"] >= second_start - 1.0, seg
    budget = next(w for w in body["words"] if "budget" in w["word"].lower())
    assert budget["start"] >= second_start, (budget, second_start)
    for w in body["words"]:
        assert not (w["start"] < second_start - 30 and w["end"] > second_start - 1.0), w


def test_vad_on_silence_invents_nothing(server: Server, tmp_path) -> None:
    import wave

    noise = (np.random.default_rng(0).normal(0, 0.002, 16000 * 20) * 32767).astype("<i2")
    path = tmp_path / "quiet.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(noise.tobytes())
    r = transcribe(server, path, vad_filter="true", response_format="verbose_json")
    assert r.status_code == 200 and r.json()["text"] == "" and r.json()["segments"] == []


def test_subtitles_are_sentence_sized(server: Server, long_speech) -> None:
    r = transcribe(server, long_speech, response_format="srt")
    cues = list(srt.parse(r.text))
    assert len(cues) >= 8
    for a, b in itertools.pairwise(cues):
        assert a.end <= b.start
    for c in cues:
        assert (c.end - c.start).total_seconds() <= 10 and len(c.content) <= 90, c
    vtt = transcribe(server, long_speech, response_format="vtt").text
    assert vtt.startswith("WEBVTT") and len(webvtt.from_buffer(__import__("io").StringIO(vtt)).captions) >= 8
