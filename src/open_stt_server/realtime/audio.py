"""Realtime input audio: base64 PCM16 (24 kHz, or another rate as an extension) or G.711 µ-law / A-law at 8 kHz
→ 16 kHz float32, through one streaming resampler per session so chunk edges leave no clicks."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

import numpy as np
import soxr

SAMPLE_RATE = 16_000
PCM_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)


class InvalidAudio(ValueError):
    pass


def _mulaw_table() -> np.ndarray:
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(codes & 0x80, -magnitude, magnitude).astype(np.float32) / 32768.0


def _alaw_table() -> np.ndarray:
    codes = np.arange(256, dtype=np.int32) ^ 0x55
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = np.where(
        exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0)
    )
    return np.where(codes & 0x80, magnitude, -magnitude).astype(np.float32) / 32768.0


MULAW = _mulaw_table()
ALAW = _alaw_table()


@dataclass(frozen=True)
class InputFormat:
    type: str  # "audio/pcm" | "audio/pcmu" | "audio/pcma"
    rate: int = 24_000

    @property
    def bytes_per_sample(self) -> int:
        return 2 if self.type == "audio/pcm" else 1


class InputAudio:
    """Decodes appended chunks of one format into a continuous 16 kHz stream."""

    def __init__(self, fmt: InputFormat) -> None:
        self.format = fmt
        self.rate = fmt.rate if fmt.type == "audio/pcm" else 8000
        self._resampler = (
            None
            if self.rate == SAMPLE_RATE
            else soxr.ResampleStream(self.rate, SAMPLE_RATE, 1, dtype="float32")
        )

    def decode(self, encoded: str) -> tuple[np.ndarray, float]:
        """16 kHz samples from a base64 chunk, and the chunk's duration in seconds."""
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise InvalidAudio("The audio is not valid base64.") from None
        if len(raw) % self.format.bytes_per_sample:
            raise InvalidAudio(
                f"The audio holds {len(raw)} bytes, not a whole number of 16-bit samples: a sample is torn."
            )
        if self.format.type == "audio/pcm":
            samples = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
        else:
            table = MULAW if self.format.type == "audio/pcmu" else ALAW
            samples = table[np.frombuffer(raw, dtype=np.uint8)]
        seconds = len(samples) / self.rate
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples)
        return samples, seconds


class SessionAudio:
    """A session's uncommitted 16 kHz audio, addressed by sample offsets from the start of the session. Kept as
    the chunks it arrived in, so an append copies nothing however long the buffer grows."""

    def __init__(self) -> None:
        self.start = 0  # offset of the first sample held
        self._chunks: list[np.ndarray] = []
        self._length = 0

    def __len__(self) -> int:
        return self._length

    @property
    def end(self) -> int:
        """Offset just past the newest sample: how much audio the session has received."""
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
