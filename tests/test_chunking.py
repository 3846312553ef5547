"""Cutting long audio into model-sized pieces: contiguous, bounded, and cut where it is quiet."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from open_stt_server.audio import SAMPLE_RATE
from open_stt_server.chunking import is_silent, quiet_pieces, speech_pieces


def tone_with_pauses(seconds: float, pauses_at: list[float], pause_s: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    rng = np.random.default_rng(0)
    audio = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
    for at in pauses_at:
        audio[int(at * SAMPLE_RATE) : int((at + pause_s) * SAMPLE_RATE)] *= 0.001
    return audio


def test_short_audio_is_one_piece() -> None:
    audio = tone_with_pauses(12.0, [])
    [piece] = quiet_pieces(audio, 30.0)
    assert (piece.start, piece.end) == (0, audio.size)


def test_cuts_fall_in_the_pauses() -> None:
    pauses = [26.0, 51.5, 77.0]  # one pause inside the search region of each 30 s window
    audio = tone_with_pauses(95.0, pauses)
    pieces = quiet_pieces(audio, 30.0)
    assert len(pieces) == 4
    for piece, pause in zip(pieces, pauses, strict=False):
        assert pause <= piece.end_s <= pause + 0.3, (piece, pause)


@settings(max_examples=40, deadline=None)
@given(
    seconds=st.floats(0.0, 200.0),
    max_s=st.floats(5.0, 40.0),
    seed=st.integers(0, 1000),
)
def test_pieces_cover_the_audio_contiguously_and_stay_in_bounds(
    seconds: float, max_s: float, seed: int
) -> None:
    audio = np.random.default_rng(seed).standard_normal(int(seconds * SAMPLE_RATE)).astype(np.float32)
    pieces = quiet_pieces(audio, max_s)
    if audio.size == 0:
        assert pieces == []
        return
    assert pieces[0].start == 0 and pieces[-1].end == audio.size
    for a, b in itertools.pairwise(pieces):
        assert a.end == b.start
    assert all(0 < p.end - p.start <= int(max_s * SAMPLE_RATE) for p in pieces)


def test_speech_regions_join_across_short_pauses_only() -> None:
    sr = SAMPLE_RATE
    regions = [
        {"start": 0, "end": 5 * sr},
        {"start": 6 * sr, "end": 10 * sr},
        {"start": 40 * sr, "end": 45 * sr},
    ]
    pieces = speech_pieces(regions, 30.0)
    assert [(p.start_s, p.end_s) for p in pieces] == [(0.0, 10.0), (40.0, 45.0)]


def test_silence_is_recognised() -> None:
    assert is_silent(np.zeros(16000, dtype=np.float32))
    assert is_silent(np.array([], dtype=np.float32))
    assert not is_silent(tone_with_pauses(1.0, []))
