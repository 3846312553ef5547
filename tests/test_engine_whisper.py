"""The Whisper engine in-process: one encoder pass per window, and the transcripts of faster-whisper's usual call."""

from __future__ import annotations

import itertools
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from faster_whisper import WhisperModel

from open_stt_server import hub
from open_stt_server.audio import decode_audio
from open_stt_server.transcript import TranscribeOptions
from tests.conftest import sample, wer, whisper_engine

CLIPS = [("en", "quick_brown_fox"), ("en", "hello_world"), ("fr", "bonjour_monde"), ("es", "hola_mundo")]


class CountingWhisperModel(WhisperModel):
    """faster-whisper as users call it, counting its encoder passes."""

    encoder_runs = 0

    def encode(self, features: np.ndarray):
        self.encoder_runs += 1
        return super().encode(features)


@pytest.fixture(scope="module")
def engine(hf_home: Path):
    return whisper_engine(hf_home, "whisper-base", workers=1)


@pytest.fixture(scope="module")
def usual(engine) -> CountingWhisperModel:
    weights = hub.resolve_weights(engine.spec, download=False)
    return CountingWhisperModel(str(weights), device="cpu", compute_type="int8", cpu_threads=2)


def audio(path: Path) -> np.ndarray:
    return decode_audio(path.read_bytes(), 3600).samples


def encoder_runs(engine) -> int:
    """Encoder passes of the model and of its one-thread decoders beside it (CPU, two cores or more)."""
    return engine.model.encoder_runs + (engine.decoders.model.encoder_runs if engine.decoders else 0)


@pytest.mark.parametrize("clip", CLIPS, ids=["/".join(c) for c in CLIPS])
def test_language_detection_shares_the_first_encoder_pass(engine, usual, clip) -> None:
    samples = audio(sample(*clip))
    before = encoder_runs(engine)
    decoding = engine.start(samples, TranscribeOptions())
    text = "".join(s.text for s in decoding.segments)
    assert encoder_runs(engine) - before == 1  # a short clip is one window

    usual.encoder_runs = 0
    segments, info = usual.transcribe(samples)  # no language: faster-whisper's own detection
    assert "".join(s.text for s in segments) == text
    assert info.language == decoding.language == clip[0]
    assert usual.encoder_runs == 2  # detect_language, then the same window again


def test_multi_window_file_encodes_each_window_once(engine, usual, long_speech) -> None:
    samples = audio(long_speech)
    options = TranscribeOptions(batched=False)
    before = encoder_runs(engine)
    text = "".join(s.text for s in engine.start(samples, options).segments)
    ours = encoder_runs(engine) - before

    usual.encoder_runs = 0
    segments, _ = usual.transcribe(samples)
    assert "".join(s.text for s in segments) == text
    assert ours == usual.encoder_runs - 1 and ours >= 3


def test_vad_path_detects_the_language_in_its_first_decode(engine) -> None:
    samples = audio(sample("fr", "bonjour_monde"))
    padded = np.concatenate([np.zeros(16000 * 3, np.float32), samples, np.zeros(16000 * 3, np.float32)])
    before = encoder_runs(engine)
    decoding = engine.start(padded, TranscribeOptions(vad_filter=True))
    segments = list(decoding.segments)
    assert decoding.language == "fr" and segments and segments[0].start >= 2.0
    assert encoder_runs(engine) - before == 1


@pytest.mark.parametrize("lang", ["en", "es"])
def test_batched_path_says_what_the_batched_pipeline_says(
    engine, usual, long_speech, monkeypatch, lang
) -> None:
    """Long audio takes faster-whisper's batched pipeline as its users call it (VAD on, batch 8, beam 5): the same
    words, now in sentence-sized segments with true times, and the language read from the first batch's own
    encoder pass (the pipeline's up-front detection encodes the start of the audio once more)."""
    from faster_whisper import BatchedInferencePipeline

    if lang == "en":
        samples = audio(long_speech)
    else:  # real Spanish speech, the recordings one after another with pauses (too short for the path's 60 s)
        monkeypatch.setattr(engine, "batched_min_seconds", 5.0)
        clips = [audio(p) for p in sorted((sample("es", "x").parent).glob("*.wav"))]
        pause = np.zeros(16000, np.float32)
        samples = np.concatenate([part for clip in clips for part in (pause, clip)])
    before = encoder_runs(engine)
    decoding = engine.start(samples, TranscribeOptions(word_timestamps=True))
    segments = list(decoding.segments)
    ours = encoder_runs(engine) - before

    usual.encoder_runs = 0
    theirs, info = BatchedInferencePipeline(usual).transcribe(
        samples, batch_size=8, beam_size=5, vad_filter=True
    )
    theirs = list(theirs)
    assert decoding.language == info.language == lang
    assert " ".join(s.text.strip() for s in segments) == " ".join(s.text.strip() for s in theirs)
    # one encoder call for the batch (one per part with decoders beside the model); theirs adds the detection
    assert usual.encoder_runs - 1 == 1
    assert ours == (len(engine.decoders.parts(len(theirs))) if engine.decoders else 1)
    duration = len(samples) / 16000
    assert len(segments) > len(theirs) and all(s.end - s.start <= 15.0 for s in segments)
    for segment in segments:
        assert 0 <= segment.start <= segment.end <= duration
        assert (
            segment.words and segment.start <= segment.words[0].start and segment.words[-1].end <= segment.end
        )
    assert all(a.start <= b.start for a, b in itertools.pairwise(segments))

    # Text only (`json`, `text`): no word alignment is paid for; a segment is one of the pipeline's chunks.
    def no_alignment(*args, **kwargs):
        raise AssertionError("the text-only path aligned words")

    for model in (engine.model, engine.decoders.model) if engine.decoders else (engine.model,):
        monkeypatch.setattr(model, "add_word_timestamps", no_alignment)
    plain = engine.start(samples, TranscribeOptions(segment_times=False))
    chunks = list(plain.segments)
    assert plain.language == lang
    assert " ".join(s.text.strip() for s in chunks) == " ".join(s.text.strip() for s in theirs)
    assert len(chunks) == len(theirs) and all(s.words is None for s in chunks)
    assert [(s.start, s.end) for s in chunks] == [(round(s.start, 3), round(s.end, 3)) for s in theirs]


def encoded_rows(engine) -> int:
    return engine.model.encoded_rows + (engine.decoders.model.encoded_rows if engine.decoders else 0)


@pytest.mark.parametrize("lang", ["en", "es"])
def test_streamed_long_audio_sends_the_first_words_early_and_says_the_same(
    hf_home, engine, long_speech, monkeypatch, lang
) -> None:
    """Streamed (`early_text`), the batched path yields the first chunk's first words before the first batch is
    decoded, then the rest: the same transcript as the request that is not streamed (the batch decodes the first
    chunk on from the words sent), and every window encoded once. Streams that read segment or word times get the
    segments of the request that is not streamed (words sent early could not be timed yet)."""
    from open_stt_server.engines.whisper_long import EARLY_TOKENS

    if lang == "en":
        samples = audio(long_speech)
    else:  # real Spanish speech, the recordings eight times over with pauses: three chunks
        monkeypatch.setattr(engine, "batched_min_seconds", 5.0)
        clips = [audio(p) for p in sorted((sample("es", "x").parent).glob("*.wav"))]
        pause = np.zeros(16000, np.float32)
        samples = np.concatenate([part for clip in clips * 8 for part in (pause, clip)])
    options = TranscribeOptions(segment_times=False)
    plain = list(engine.start(samples, options).segments)
    chunks = len(plain)
    rows_before = encoded_rows(engine)
    streamed = engine.start(samples, replace(options, early_text=True))
    first = next(streamed.segments)
    rows_at_first = encoded_rows(engine) - rows_before
    rest = list(streamed.segments)
    assert streamed.language == lang
    # the first words, before any chunk of the first batch but the parts' first ones was encoded
    assert 0 < len(first.tokens) <= EARLY_TOKENS and first.text.strip() and rest
    parts = engine.decoders.parts(chunks, larger_first=True) if engine.decoders else [slice(0, chunks)]
    heads = sum(p.stop - p.start == parts[0].stop - parts[0].start for p in parts)  # encoded ahead
    assert 1 <= rows_at_first <= heads < chunks
    assert encoded_rows(engine) - rows_before == chunks  # no window twice
    said = first.text + "".join(s.text for s in rest)
    if lang == "en":  # the beam search's hypotheses agreed on the first words: the very same transcript
        assert said == "".join(s.text for s in plain) and plain[0].text.startswith(first.text)
    else:  # they did not ("1, 2, 3", "1 2 3", "Uno, dos"): the best one's words, the same but for commas
        assert wer("".join(s.text for s in plain), said) == 0.0, (first.text, said)

    # without the one-thread decoders (as on a GPU): the same
    alone = whisper_engine(hf_home, "whisper-base", workers=1, cpu_decoders=0)
    monkeypatch.setattr(alone, "batched_min_seconds", engine.batched_min_seconds)
    alone_streamed = list(alone.start(samples, replace(options, early_text=True)).segments)
    assert alone_streamed[0].text == first.text and "".join(s.text for s in alone_streamed) == said

    timed = TranscribeOptions(word_timestamps=True)
    assert list(engine.start(samples, replace(timed, early_text=True)).segments) == list(
        engine.start(samples, timed).segments
    )


@pytest.mark.parametrize("pause_s", [0.5, 6.0])
def test_the_first_chunk_is_found_before_the_whole_file_is_read(long_speech, pause_s: float) -> None:
    """Streamed, the first chunk is found by VAD over the start of the audio (over more of it when the speech there
    does not fill a chunk): the very chunk the pipeline packs from the VAD of the whole file."""
    from faster_whisper.vad import VadOptions, collect_chunks, get_speech_timestamps

    from open_stt_server.engines.whisper_long import _first_chunk

    short = [audio(p) for p in sorted((sample("es", "x").parent).glob("*.wav"))]  # 1–2 s each
    pause = np.zeros(int(pause_s * 16000), np.float32)
    samples = np.concatenate([part for clip in [*short * 3, audio(long_speech)] for part in (clip, pause)])
    vad = VadOptions(max_speech_duration_s=30, min_silence_duration_ms=160)
    chunks, _ = collect_chunks(samples, get_speech_timestamps(samples, vad), max_duration=30)
    first = _first_chunk(samples, vad)
    assert first is not None and len(chunks) > 2
    chunk, start_s, end_s = first
    assert np.array_equal(chunk, chunks[0]) and 0 <= start_s < end_s <= len(samples) / 16000
    assert end_s > 45 if pause_s > 5 else end_s < 45  # sparse speech: more than the first 45 s were read
    assert _first_chunk(np.zeros(16000 * 90, np.float32), vad) is None


def test_early_words_are_those_every_beam_starts_with(engine) -> None:
    """The words sent early: where every hypothesis of the short search agrees (the long search goes on from one
    of them), up to a sentence end or else a word end; the best one's words when they part at the first word."""
    from faster_whisper.tokenizer import Tokenizer

    from open_stt_server.engines.whisper_long import _early_tokens

    tokenizer = Tokenizer(engine.model.hf_tokenizer, True, task="transcribe", language="en")

    def early(*texts: str, language: str = "en", cut: bool = False) -> str:
        hypotheses = [tokenizer.encode(text) for text in texts]
        limit = max(map(len, hypotheses)) if cut else 99  # cut: the search stopped at its token limit
        return tokenizer.decode(_early_tokens(hypotheses, tokenizer, language, limit))

    agree = " The market sells cheese"
    assert early(f"{agree}, bread", f"{agree} and") == agree
    assert early(" Hello there. The market", " Hello there. The mark") == " Hello there."
    assert early(" The market sells", " The market sells") == " The market sells"  # ended: every word
    assert early(" The market sells", " The market sells", cut=True) == " The market"  # "sells" may go on
    assert early(" The marketplace", " The markets") == " The"  # whole where every beam ends the word
    assert early(" 1, 2, 3, 4", " One, two, three", " 1 2 3") == " 1, 2, 3, 4"  # the best one's words
    assert early(" 1, 2, 3, 4", " One, two, three", cut=True) == " 1, 2, 3,"
    assert early(" 你好世界", " 你好朋友", language="zh") == " 你好"  # characters are words here
    assert early("", "") == ""


@pytest.mark.skipif(
    (os.cpu_count() or 1) < 2, reason="one-thread decoders are kept beside the model on 2+ cores"
)
def test_one_thread_decoders_change_no_word(hf_home, engine, long_speech) -> None:
    """On CPU the beam search runs on one-thread decoders beside the model, and long audio's batches are split
    over them (issue 24: on 2 cores a beam search is faster on one thread): the transcripts, segments and word
    times are those of the model alone."""
    assert engine.decoders is not None and engine.decoders.count == os.cpu_count()
    alone = whisper_engine(hf_home, "whisper-base", workers=1, cpu_decoders=0)
    assert alone.decoders is None
    clips = [audio(sample(*clip)) for clip in CLIPS]
    for options in (TranscribeOptions(), TranscribeOptions(word_timestamps=True)):
        for samples in [*clips, audio(long_speech)]:
            ours, theirs = engine.start(samples, options), alone.start(samples, options)
            assert list(ours.segments) == list(theirs.segments)
            assert ours.language == theirs.language
    for rows in range(
        1, 9
    ):  # a batch's chunks: contiguous parts, one per decoder, sizes a chunk apart at most
        parts = engine.decoders.parts(rows)
        assert len(parts) == min(rows, engine.decoders.count)
        assert parts[0].start == 0 and parts[-1].stop == rows
        reversed_sizes = [p.stop - p.start for p in engine.decoders.parts(rows, larger_first=True)][::-1]
        assert reversed_sizes == [p.stop - p.start for p in parts]
        assert all(a.stop == b.start for a, b in itertools.pairwise(parts))
        assert max(p.stop - p.start for p in parts) - min(p.stop - p.start for p in parts) <= 1
