"""The live-speech core driven with no protocol at all: 16 kHz samples in, plain events out, on the real
whisper-tiny.en weights through a real model queue."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile

from open_stt_server.audio import decode_audio
from open_stt_server.live.audio import ArrivalPace, PcmDecoder, SpeechBuffer
from open_stt_server.live.events import (
    SpeechStarted,
    SpeechStopped,
    TextDelta,
    TurnCommitted,
    TurnTranscribed,
)
from open_stt_server.live.partials import aligned_prefix, confident, settled, words_in_last, words_of
from open_stt_server.live.stream import BufferTooSmall, LiveOptions, SpeechStream
from open_stt_server.live.turns import OpenTurn, Pass
from open_stt_server.scheduler import ModelQueue
from tests.conftest import SAMPLES, assert_deltas_tell, needs_espeak, speak, wer, whisper_engine

SENTENCE = "Turn on the kitchen lights and open the blinds."
CHUNK = 320  # 20 ms


@pytest.fixture(scope="module")
def queue(hf_home: Path):
    q = ModelQueue("whisper-tiny.en", whisper_engine(hf_home, "whisper-tiny.en"), 2, 16)
    yield q
    q.stop()


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    if subprocess.run(["which", "espeak-ng"], capture_output=True).returncode:
        pytest.skip("espeak-ng is not installed")
    raw = speak(SENTENCE, tmp_path_factory.mktemp("live") / "raw.wav")
    out = raw.with_name("speech.wav")
    subprocess.run(["sox", str(raw), "-r", "16000", str(out)], check=True)
    samples, _ = soundfile.read(str(out), dtype="float32")
    return samples


async def feed(stream: SpeechStream, samples: np.ndarray, paced: bool) -> None:
    started = time.monotonic()
    for index, at in enumerate(range(0, len(samples), CHUNK)):
        stream.append(samples[at : at + CHUNK])
        if paced:
            await asyncio.sleep(max(0.0, started + (index + 1) * CHUNK / 16000 - time.monotonic()))
        elif index % 50 == 0:
            await asyncio.sleep(0)


def drive(queue, options: LiveOptions, audio: np.ndarray, paced: bool, commit: bool = False,
          before_commit: Callable[[SpeechStream], None] | None = None) -> list:  # fmt: skip
    async def scenario() -> list:
        events: list = []
        stream = SpeechStream(queue, options, events.append)
        await feed(stream, audio, paced)
        if before_commit is not None:
            before_commit(stream)
        if commit:
            stream.commit()
        deadline = time.monotonic() + 60
        while not any(isinstance(e, TurnTranscribed) for e in events) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await stream.close()
        return events

    return asyncio.run(scenario())


@needs_espeak
def test_vad_turn_at_real_time_pace_with_partials(queue, speech: np.ndarray):
    silence = np.zeros(16000, dtype=np.float32)
    audio = np.concatenate([silence[:8000], speech, silence])
    events = drive(queue, LiveOptions(partials=True), audio, paced=True)
    kinds = [type(e) for e in events]
    assert kinds[0] is SpeechStarted
    assert kinds.index(SpeechStopped) < kinds.index(TurnCommitted) < kinds.index(TurnTranscribed)
    final = next(e for e in events if isinstance(e, TurnTranscribed))
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert_deltas_tell([d.text for d in deltas], final.text)
    assert kinds.index(TextDelta) < kinds.index(SpeechStopped), "no words while speaking"
    assert wer(SENTENCE, final.text) <= 0.2, final.text
    # the transcript is the final decode's: partials cost it nothing (issue 23)
    without = drive(queue, LiveOptions(partials=False), audio, paced=True)
    assert next(e for e in without if isinstance(e, TurnTranscribed)).text == final.text
    started = events[0]
    assert abs(started.start / 16000 - 0.5) < 0.5  # true offsets: speech begins 0.5 s in (less the padding)
    assert final.end > final.start and final.language == "en"


@needs_espeak
def test_words_sent_live_do_not_bind_the_transcript(queue, speech: np.ndarray):
    """A word sent live cannot be taken back; when the final decode hears it otherwise, the transcript is the final
    decode's own (realtime), and the last delta goes on from where the words sent align in it — unless the words
    sent bind the transcript (Wyoming)."""

    def sent_live(stream: SpeechStream) -> None:
        assert stream.open is not None
        stream.open.sent = [" Turn", " on", " the", " chicken"]  # as if sent live, the last word heard wrong

    def scenario(bind: bool) -> list:
        options = LiveOptions(vad=None, partials=True, partials_bind=bind)
        return drive(queue, options, speech, paced=False, commit=True, before_commit=sent_live)

    events = scenario(bind=False)
    final = next(e for e in events if isinstance(e, TurnTranscribed))
    alone = drive(queue, LiveOptions(vad=None), speech, paced=False, commit=True)
    assert final.text == next(e for e in alone if isinstance(e, TurnTranscribed)).text
    assert final.text.lower().startswith("turn on the kitchen"), final.text
    tail = [e.text for e in events if isinstance(e, TextDelta)]
    assert tail == ["".join(words_of(final.text)[4:])]  # after "kitchen", which stood for the word sent
    assert_deltas_tell([" Turn on the chicken", *tail], final.text)

    # Wyoming's chunks must join to its transcript: there the words sent bind it, and it goes on from them
    events = scenario(bind=True)
    bound = next(e for e in events if isinstance(e, TurnTranscribed))
    assert bound.text == "Turn on the chicken" + tail[0]


@needs_espeak
def test_manual_commit_of_a_burst_decodes_once(queue, speech: np.ndarray):
    events = drive(queue, LiveOptions(vad=None, partials=True), speech, paced=False, commit=True)
    assert not any(isinstance(e, SpeechStarted) for e in events)
    final = next(e for e in events if isinstance(e, TurnTranscribed))
    assert_deltas_tell([e.text for e in events if isinstance(e, TextDelta)], final.text)
    assert wer(SENTENCE, final.text) <= 0.2, final.text


@needs_espeak
def test_a_burst_is_not_listened_to_yet_all_of_it_is_decoded(queue, speech: np.ndarray, monkeypatch):
    """Audio sent faster than it is spoken gets no live passes, so the stream's VAD skips it (a recording sent at
    once costs no VAD work ahead of its decode); what follows at speaking pace is heard at its true offsets, and
    the final transcript still covers the burst."""
    from open_stt_server.live.vad import SileroStream

    listened = [0]
    feed_vad = SileroStream.feed

    def counting(self: SileroStream, samples: np.ndarray) -> np.ndarray:
        listened[0] += len(samples)
        return feed_vad(self, samples)

    monkeypatch.setattr(SileroStream, "feed", counting)
    half = len(speech) // 2

    async def scenario() -> tuple[list, int, bool]:
        events: list = []
        stream = SpeechStream(queue, LiveOptions(vad=None, partials=True), events.append)
        await feed(stream, speech[:half], paced=False)
        in_burst = listened[0]
        await asyncio.sleep(1.1)  # the pace window forgets the burst
        await feed(stream, speech[half:], paced=True)
        aligned = stream.detector.position + len(stream.detector._vad.pending) == stream.position
        stream.commit()
        deadline = time.monotonic() + 60
        while not any(isinstance(e, TurnTranscribed) for e in events) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await stream.close()
        return events, in_burst, aligned

    events, in_burst, aligned = asyncio.run(scenario())
    assert in_burst < half / 2  # only the first chunks, before the pace tells a burst
    assert listened[0] - in_burst >= len(speech) - half - 512  # the paced half was heard
    assert aligned  # ... at its true offsets
    final = next(e for e in events if isinstance(e, TurnTranscribed))
    assert_deltas_tell([e.text for e in events if isinstance(e, TextDelta)], final.text)
    assert wer(SENTENCE, final.text) <= 0.2, final.text


def test_too_little_audio_cannot_be_committed(queue):
    async def scenario():
        stream = SpeechStream(queue, LiveOptions(vad=None), lambda e: None)
        stream.append(np.zeros(800, dtype=np.float32))
        with pytest.raises(BufferTooSmall):
            stream.commit()
        await stream.close()

    asyncio.run(scenario())


def test_pcm_decoder_any_rate_width_and_channels():
    tone = np.sin(2 * np.pi * 440 * np.arange(48000) / 48000).astype(np.float32) * 0.5
    stereo = np.stack([tone, tone], axis=1)
    raw = (stereo * 32767).astype("<i2").tobytes()
    decoder = PcmDecoder(48000, 2, 2)
    parts = [
        decoder.decode(raw[i : i + 1001])[0] for i in range(0, len(raw), 1001)
    ]  # frames torn across chunks
    out = np.concatenate(parts)
    # a streaming resampler holds back a few hundred samples until more audio comes; none are invented
    assert 15500 < len(out) <= 16000 and 0.45 < np.abs(out).max() < 0.55
    u8 = PcmDecoder(16000, 1, 1).decode(bytes([128, 255, 0]))[0]
    assert np.allclose(u8, [0.0, 127 / 128, -1.0])


def test_buffer_and_word_agreement():
    buffer = SpeechBuffer()
    buffer.append(np.arange(10, dtype=np.float32))
    buffer.append(np.arange(10, 20, dtype=np.float32))
    buffer.drop_before(5)
    assert buffer.start == 5 and buffer.slice(8, 12).tolist() == [8, 9, 10, 11]
    previous, latest = words_of("turn on the kitchen"), words_of("Turn on the kitchen lights")
    assert settled(previous, latest, [], held=0) == words_of("Turn on the kitchen")
    assert settled(previous, latest, []) == words_of("Turn on the")  # the earlier pass's last word may be cut
    assert settled(previous, latest, words_of("turn off")) == []  # never retracts what was sent
    # the earlier pass's last words had little audio after them: held back until a later pass confirms them
    assert settled(previous, latest, [], held=2) == words_of("Turn on")
    assert words_in_last(words_of("one two three four five six"), 3.0, 1.0) == 2
    assert words_in_last(words_of("one two"), 0.8, 1.0) == 2  # all of a pass shorter than the hold
    assert aligned_prefix(words_of("turn on the"), words_of("Turn on the lights.")) == 3


def test_a_pass_in_between_that_heard_otherwise_unsettles_a_word():
    """Seen on whisper-base (Home Assistant's benchmark): passes 1 s apart both began "and" over "Add milk …",
    the pass between them heard "Add"; the word is not settled, and nothing is sent."""
    from open_stt_server.live.partials import SettleRule, settled_count

    heard = [(1.02, " and then"), (1.54, " Add milk and add into the shop."),
             (2.05, " and add milk and add into the shopping list.")]  # fmt: skip
    passes = [Pass(int(seconds * 16000), text, "en") for seconds, text in heard]
    assert settled_count(passes, 0, [], SettleRule()) == 0
    agreeing = [passes[0], Pass(passes[1].covered, " and add milk", "en"), passes[2]]
    assert settled_count(agreeing, 0, [], SettleRule()) == 1  # "and": every pass since agrees


def test_confident_words_settle_sooner(queue):
    """Passes 0.15 s apart: two passes 1 s apart do not exist yet, so only words the engine is confident of
    (each ≥ 0.6, as Moonshine reports) can go, when every pass over the last 0.1 s agrees on them and the
    earliest of those heard about 0.2 s of speech after them (here: the last word of each earlier pass held)."""
    passes = [
        (1.0, " Turn on the kitchen"),
        (1.15, " Turn on the kitchen lights"),
        (1.3, " Turn on the kitchen lights"),
    ]

    def sent(probabilities: tuple[float, ...] | None) -> list[str]:
        async def scenario() -> list[str]:
            events: list = []
            stream = SpeechStream(queue, LiveOptions(vad=None, partials=True), events.append)
            turn = OpenTurn("turn_test", 0)
            for seconds, text in passes:
                words = len(words_of(text))
                stream._agree(
                    turn, Pass(int(seconds * 16000), text, "en", probabilities and probabilities[:words])
                )
            await stream.close()
            return [e.text for e in events if isinstance(e, TextDelta)]

        return asyncio.run(scenario())

    assert sent((0.99, 0.95, 0.9, 0.9, 0.9)) == ["Turn on the", " kitchen"]
    assert sent((0.99, 0.5, 0.9, 0.9, 0.9)) == ["Turn"]  # an unsure word stops the run
    assert sent(None) == []  # no probabilities: the passes 1 s apart rule alone
    assert confident(4, (0.9, 0.9, 0.1, 0.9), 0, 0.8) == 2 and confident(4, (0.9,) * 4, 3, 0.8) == 4


def test_a_live_pass_has_a_token_budget_and_no_fallback(queue):
    """Over a word cut off at its end Whisper may loop for 448 tokens (seconds of a worker a turn needs): a live
    pass decodes at one temperature within a budget, and a pass that looped or was unsure is not clean, so it
    stands for nothing; the final keeps Whisper's own options."""
    from open_stt_server.live.turns import pass_token_budget
    from open_stt_server.transcript import Segment, accepted_at_first_try

    async def options():
        stream = SpeechStream(queue, LiveOptions(vad=None, partials=True), lambda e: None)
        live, final = stream._decode_options(0.5), stream._decode_options()
        await stream.close()
        return live, final

    live, final = asyncio.run(options())
    assert live.max_new_tokens == pass_token_budget(0.5) < 30 and live.temperatures == (0.0,)
    assert final.max_new_tokens is None and len(final.temperatures) > 1
    counting = decode_audio((SAMPLES / "en" / "counting.wav").read_bytes(), 600).samples
    segments = list(queue.engine.start(counting[:8192], live).segments)
    assert sum(len(s.tokens) for s in segments) <= live.max_new_tokens

    def segment(ratio: float, logprob: float, no_speech: float = 0.1) -> Segment:
        return Segment(0, 0, 0.0, 0.5, " 8, 8, 8", (1, 2), 0.0, logprob, ratio, no_speech)

    assert accepted_at_first_try(segment(1.2, -0.3))
    assert not accepted_at_first_try(segment(10.1, -0.1))  # "8, 8, 8, ..."
    assert not accepted_at_first_try(segment(1.2, -1.4))
    assert accepted_at_first_try(segment(1.2, -1.4, no_speech=0.9))  # silence, as Whisper takes it


def test_passes_come_sooner_where_they_cost_little():
    """Live passes come every `delay` of audio (0.5 s by default), sooner where a pass costs little (Moonshine:
    tens of milliseconds), no closer than four times a pass's own time, nor than 0.1 s."""
    from open_stt_server.live.turns import pass_interval

    assert pass_interval(0.5, None) == 0.5  # no pass timed yet: what the client asked for
    assert pass_interval(0.5, 0.3) == 0.5  # Whisper on a CPU: the client's interval
    assert pass_interval(0.5, 0.04) == pytest.approx(0.16)
    assert pass_interval(0.5, 0.001) == 0.1 and pass_interval(0.3, 0.05) == pytest.approx(0.2)


def test_arrival_pace_tells_a_burst_from_speech():
    burst = ArrivalPace()
    for _ in range(40):
        burst.add(0.064)  # 2.5 s of audio at once
    assert burst.bursting
    speech = ArrivalPace()
    for _ in range(8):
        speech.add(0.064)
        time.sleep(0.064)
    assert not speech.bursting
