"""Live audio: raw PCM of any rate, width and channel count → one continuous 16 kHz mono float32 stream (one
streaming resampler per stream, so chunk edges leave no clicks), the buffer a stream keeps it in, and the pace at
which it arrives."""

from __future__ import annotations

import time
from collections import deque

import numpy as np
import soxr

SAMPLE_RATE = 16_000
PCM_WIDTHS = (1, 2, 4)  # bytes per sample: unsigned 8-bit, signed 16-bit, signed 32-bit (little-endian)
MIN_RATE, MAX_RATE = 4_000, 192_000
MAX_CHANNELS = 8


class InvalidAudio(ValueError):
    pass


class Resampler:
    """Mono float32 chunks at `rate` → 16 kHz, continuous across chunks."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._stream = (
            None if rate == SAMPLE_RATE else soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32")
        )

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        return samples if self._stream is None else self._stream.resample_chunk(samples)


class PcmDecoder:
    """Raw little-endian PCM chunks (`width` bytes a sample, `channels` interleaved) → 16 kHz mono float32."""

    def __init__(self, rate: int, width: int, channels: int) -> None:
        if not MIN_RATE <= rate <= MAX_RATE:
            raise InvalidAudio(f"A sample rate of {rate} Hz is not supported: use {MIN_RATE}–{MAX_RATE} Hz.")
        if width not in PCM_WIDTHS:
            raise InvalidAudio(f"A sample width of {width} bytes is not supported: use 1, 2 or 4.")
        if not 1 <= channels <= MAX_CHANNELS:
            raise InvalidAudio(f"{channels} channels are not supported: use 1 to {MAX_CHANNELS}.")
        self.rate, self.width, self.channels = rate, width, channels
        self._resample = Resampler(rate)
        self._torn = b""  # bytes of a frame split across two chunks

    def decode(self, raw: bytes) -> tuple[np.ndarray, float]:
        """16 kHz samples from a chunk, and the chunk's duration in seconds."""
        frame = self.width * self.channels
        raw = self._torn + raw
        whole = len(raw) - len(raw) % frame
        raw, self._torn = raw[:whole], raw[whole:]
        if self.width == 1:
            samples = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
        elif self.width == 2:
            samples = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
        else:
            samples = (np.frombuffer(raw, dtype="<i4").astype(np.float64) / 2147483648.0).astype(np.float32)
        if self.channels > 1:
            samples = samples.reshape(-1, self.channels).mean(axis=1, dtype=np.float32)
        return self._resample(samples), len(samples) / self.rate


class SpeechBuffer:
    """A stream's unconsumed 16 kHz audio, addressed by sample offsets from the start of the stream. Kept as the
    chunks it arrived in, so an append copies nothing however long the buffer grows."""

    def __init__(self) -> None:
        self.start = 0  # offset of the first sample held
        self._chunks: list[np.ndarray] = []
        self._length = 0

    def __len__(self) -> int:
        return self._length

    @property
    def end(self) -> int:
        """Offset just past the newest sample: how much audio the stream has received."""
        return self.start + self._length

    def append(self, samples: np.ndarray) -> None:
        if len(samples):
            self._chunks.append(samples)
            self._length += len(samples)

    def slice(self, start: int, end: int) -> np.ndarray:
        """A copy of the samples held between two offsets."""
        out, at = [], self.start
        for chunk in self._chunks:
            lo, hi = max(start, at), min(end, at + len(chunk))
            if lo < hi:
                out.append(chunk[lo - at : hi - at])
            at += len(chunk)
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)

    def drop_before(self, offset: int) -> None:
        offset = min(offset, self.end)
        while self._chunks and self.start + len(self._chunks[0]) <= offset:
            gone = self._chunks.pop(0)
            self.start += len(gone)
            self._length -= len(gone)
        if self._chunks and offset > self.start:
            cut = offset - self.start
            self._chunks[0] = self._chunks[0][cut:]
            self.start, self._length = offset, self._length - cut
        elif not self._chunks:
            self.start = max(self.start, offset)


# Audio arriving over twice as fast as it plays (over the last second of wall clock, and never judged over less
# than 0.2 s) is a recording sent at once, or a pre-roll burst, not live speech: a pass over part of it would only
# take a worker from the final decode that follows at once.
PACE_WINDOW_S = 1.0
PACE_MIN_SPAN_S = 0.2
BURST_RATE = 2.0


class ArrivalPace:
    """How fast audio has arrived lately, in seconds of audio per second of wall clock."""

    def __init__(self) -> None:
        self._arrivals: deque[tuple[float, float]] = deque()  # (monotonic time, seconds of audio)
        self._held = 0.0

    def add(self, seconds: float) -> None:
        now = time.monotonic()
        self._arrivals.append((now, seconds))
        self._held += seconds
        while self._arrivals and now - self._arrivals[0][0] > PACE_WINDOW_S:
            self._held -= self._arrivals.popleft()[1]

    @property
    def bursting(self) -> bool:
        if not self._arrivals:
            return False
        span = max(time.monotonic() - self._arrivals[0][0], PACE_MIN_SPAN_S)
        return self._held / span > BURST_RATE
