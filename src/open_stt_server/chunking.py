"""Cutting long audio into pieces a model can take in one window, keeping every piece's true offset."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from open_stt_server.audio import SAMPLE_RATE
from open_stt_server.transcript import Segment, TranscribeOptions

FRAME_S = 0.05  # energy is compared over 50 ms frames: shorter than a pause between words


@dataclass(frozen=True)
class Piece:
    start: int  # sample index into the whole audio
    end: int

    @property
    def start_s(self) -> float:
        return self.start / SAMPLE_RATE

    @property
    def end_s(self) -> float:
        return self.end / SAMPLE_RATE


def quiet_pieces(samples: np.ndarray, max_s: float, search_s: float = 8.0) -> list[Piece]:
    """Contiguous pieces of at most `max_s` covering all the audio, each cut at the quietest frame.

    Every cut lies in the last `search_s` seconds of a window, at the 50 ms frame with the least energy, so it
    falls in a pause between words whenever the speaker makes one there.
    """
    total, window = len(samples), int(max_s * SAMPLE_RATE)
    frame = int(FRAME_S * SAMPLE_RATE)
    search = min(int(search_s * SAMPLE_RATE), window // 2)
    pieces: list[Piece] = []
    start = 0
    while total - start > window:
        low, high = start + window - search, start + window
        frames = (high - low) // frame
        region = samples[low : low + frames * frame].astype(np.float64).reshape(frames, frame)
        quietest = int(np.argmin((region**2).mean(axis=1)))
        cut = low + quietest * frame + frame // 2
        pieces.append(Piece(start, cut))
        start = cut
    if total > start:
        pieces.append(Piece(start, total))
    return pieces


def speech_pieces(regions: list[dict], max_s: float, max_gap_s: float = 2.0) -> list[Piece]:
    """VAD speech regions (sample indices) greedily joined, with the short pauses between them, into pieces
    of at most `max_s`; longer silences are left out, so the times of the pieces stay true."""
    pieces: list[Piece] = []
    window, gap = int(max_s * SAMPLE_RATE), int(max_gap_s * SAMPLE_RATE)
    for region in regions:
        start, end = int(region["start"]), int(region["end"])
        if pieces and end - pieces[-1].start <= window and start - pieces[-1].end < gap:
            pieces[-1] = Piece(pieces[-1].start, end)
        else:
            pieces.append(Piece(start, end))
    return pieces


def piece_segments(
    pieces: list[Piece], transcribe: Callable[[Piece, int], Segment | None], stop: threading.Event
) -> Iterator[Segment]:
    """One segment per piece that yields one (`transcribe(piece, index)`), numbered in order; nothing more once
    `stop` is set (checked between pieces). For engines that decode each piece as one segment."""
    index = 0
    for piece in pieces:
        if stop.is_set():
            return
        segment = transcribe(piece, index)
        if segment is not None:
            index += 1
            yield segment


def is_silent(samples: np.ndarray, floor_dbfs: float = -70.0) -> bool:
    """Digital silence or near it: nothing a model could hear."""
    if samples.size == 0:
        return True
    rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))
    return rms <= 10 ** (floor_dbfs / 20)


def speech_regions(samples: np.ndarray, options: TranscribeOptions, max_s: float) -> list[dict]:
    """Silero VAD (as faster-whisper ships it) over the audio: speech regions as sample indices."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    vad = VadOptions(
        threshold=options.vad_threshold,
        min_silence_duration_ms=options.vad_min_silence_ms,
        speech_pad_ms=options.vad_speech_pad_ms,
        max_speech_duration_s=max_s,
    )
    return get_speech_timestamps(samples, vad)
