"""Transcriptions through the official openai SDK and raw HTTP against the real server on loopback."""

from __future__ import annotations

import concurrent.futures
import threading
import time

import httpx
import pytest

from tests.conftest import LONG_PASSAGE, Server, ffmpeg, needs_ffmpeg, reference, sample, wer


@pytest.mark.parametrize("name", ["hello_world", "quick_brown_fox", "counting"])
def test_english_clips_match_their_references(openai_client, name: str) -> None:
    with open(sample("en", name), "rb") as fh:
        result = openai_client.audio.transcriptions.create(model="whisper-base", file=fh)
    assert wer(reference("en", name), result.text) <= 0.2, result.text
    assert result.usage is not None and result.usage.type == "duration" and result.usage.seconds >= 1


def test_short_utterance_comes_back_intact(openai_client) -> None:
    with open(sample("en", "hello_world"), "rb") as fh:
        text = openai_client.audio.transcriptions.create(model="whisper-base", file=fh).text
    assert wer("Hello world.", text) == 0, text


@pytest.mark.parametrize(("lang", "name", "expected"), [("es", "hola_mundo", "spanish"),
                                                        ("fr", "bonjour_monde", "french"),
                                                        ("es", "pangrama", "spanish")])  # fmt: skip
def test_language_is_detected(openai_client, lang: str, name: str, expected: str) -> None:
    with open(sample(lang, name), "rb") as fh:
        result = openai_client.audio.transcriptions.create(
            model="whisper-base", file=fh, response_format="verbose_json"
        )
    assert result.language == expected


def test_language_hint_is_honoured(openai_client) -> None:
    """The hint replaces detection: French audio decoded as English comes back as English."""
    with open(sample("fr", "bonjour_monde"), "rb") as fh:
        forced = openai_client.audio.transcriptions.create(
            model="whisper-base", file=fh, language="en", response_format="verbose_json"
        )
    assert forced.language == "english"
    with open(sample("fr", "bonjour_monde"), "rb") as fh:
        named = openai_client.audio.transcriptions.create(
            model="whisper-base", file=fh, language="fr", response_format="verbose_json"
        )
    assert named.language == "french" and "bonjour" in named.text.lower()


def test_prompt_is_honoured(openai_client) -> None:
    """A prompt steers spelling: primed with number words, Whisper writes fewer digits."""
    with open(sample("en", "counting"), "rb") as fh:
        plain = openai_client.audio.transcriptions.create(model="whisper-base", file=fh).text
    with open(sample("en", "counting"), "rb") as fh:
        primed = openai_client.audio.transcriptions.create(
            model="whisper-base", file=fh, prompt="One, two, three, four, five, six, seven, eight, nine, ten."
        ).text
    digits = [sum(ch.isdigit() for ch in text) for text in (plain, primed)]
    assert digits[1] < digits[0], (plain, primed)
    assert "two" in primed.lower()
    assert wer(reference("en", "counting"), primed) <= 0.2


def test_temperature_is_accepted_and_used(openai_client) -> None:
    with open(sample("en", "quick_brown_fox"), "rb") as fh:
        result = openai_client.audio.transcriptions.create(
            model="whisper-base", file=fh, temperature=0.5, response_format="verbose_json"
        )
    assert result.segments and all(s.temperature == 0.5 for s in result.segments)


def test_text_format_is_plain_text(server: Server) -> None:
    with open(sample("en", "hello_world"), "rb") as fh:
        r = httpx.post(server.base_url + "/audio/transcriptions", files={"file": fh},
                       data={"response_format": "text"}, timeout=120)  # fmt: skip
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert wer("Hello world.", r.text) == 0


def test_whisper_1_and_default_model(server: Server, openai_client) -> None:
    with open(sample("en", "hello_world"), "rb") as fh:
        text = openai_client.audio.transcriptions.create(model="whisper-1", file=fh).text
    assert wer("Hello world.", text) == 0
    with open(sample("en", "hello_world"), "rb") as fh:  # no model field at all → the default model
        r = httpx.post(server.base_url + "/audio/transcriptions", files={"file": fh}, timeout=120)
    assert r.status_code == 200 and wer("Hello world.", r.json()["text"]) == 0


def test_english_only_model_transcribes_english(openai_client) -> None:
    with open(sample("en", "quick_brown_fox"), "rb") as fh:
        text = openai_client.audio.transcriptions.create(model="whisper-tiny.en", file=fh).text
    assert wer(reference("en", "quick_brown_fox"), text) <= 0.2


def test_long_file_is_transcribed_whole_and_in_order(openai_client, long_speech) -> None:
    with open(long_speech, "rb") as fh:
        result = openai_client.audio.transcriptions.create(
            model="whisper-base", file=fh, response_format="verbose_json"
        )
    assert result.duration > 60
    assert wer(LONG_PASSAGE, result.text) <= 0.25, result.text
    starts = [s.start for s in result.segments]
    assert starts == sorted(starts) and result.segments[-1].end > 50
    text = result.text.lower()
    assert text.index("lighthouse") < text.index("glass") < text.index("automatic") < text.index("safety"), (
        text
    )


@needs_ffmpeg
@pytest.mark.parametrize(
    ("suffix", "codec_args"),
    [("mp3", ["-c:a", "libmp3lame"]), ("flac", []), ("ogg", ["-c:a", "libvorbis"]), ("opus", ["-c:a", "libopus", "-ar", "48000"]),
     ("m4a", ["-c:a", "aac"]), ("webm", ["-c:a", "libopus", "-ar", "48000"]), ("wav", ["-c:a", "pcm_f32le"]),
     ("wav", ["-c:a", "pcm_s24le"])],
)  # fmt: skip
def test_common_containers_and_codecs(openai_client, tmp_path, suffix: str, codec_args: list[str]) -> None:
    out = tmp_path / f"fox.{suffix}"
    # stereo at 44.1 kHz, so downmixing and resampling are exercised too
    ffmpeg("-i", str(sample("en", "quick_brown_fox")), "-ac", "2", "-ar", "44100", *codec_args, str(out))
    with open(out, "rb") as fh:
        text = openai_client.audio.transcriptions.create(model="whisper-base", file=fh).text
    assert wer(reference("en", "quick_brown_fox"), text) <= 0.2, (suffix, text)


def test_health_answers_while_transcribing(server: Server, long_speech) -> None:
    """/health keeps answering while every decode thread is busy (its latency is measured in benchmarks)."""
    done = threading.Event()

    def transcribe() -> int:
        with open(long_speech, "rb") as fh:
            r = httpx.post(
                server.base_url + "/audio/transcriptions", files={"file": fh}, data={"batched": "false"},
                timeout=300,
            )  # fmt: skip
        done.set()
        return r.status_code

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(transcribe)
        answered_while_busy = 0
        while not done.is_set() and answered_while_busy < 5:
            assert httpx.get(server.url + "/health", timeout=10).json() == {"status": "ok"}
            answered_while_busy += not done.is_set()
            time.sleep(0.2)
        assert future.result() == 200
    assert answered_while_busy >= 3


def test_concurrent_requests_do_not_mix(openai_client) -> None:
    clips = [
        ("en", "hello_world"),
        ("en", "quick_brown_fox"),
        ("en", "counting"),
        ("fr", "bonjour_monde"),
    ] * 2

    def run(clip):
        with open(sample(*clip), "rb") as fh:
            return clip, openai_client.audio.transcriptions.create(model="whisper-base", file=fh).text

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run, clips))
    for (lang, name), text in results:
        if lang == "en":
            assert wer(reference(lang, name), text) <= 0.2, (name, text)
        else:
            assert "bonjour" in text.lower(), text


def test_models_list_and_get(server: Server, openai_client) -> None:
    listed = openai_client.models.list()
    ids = [m.id for m in listed.data]
    assert ids == sorted(ids)
    assert {"whisper-base", "whisper-tiny.en", "whisper-1"} <= set(ids)
    assert all(m.owned_by == "open-stt-server" and m.object == "model" for m in listed.data)
    assert openai_client.models.retrieve("whisper-tiny.en").id == "whisper-tiny.en"
    r = httpx.get(server.base_url + "/models/whisper-large-v3")
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
