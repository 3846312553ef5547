"""Realtime input audio: base64 PCM16 (24 kHz, or another rate as an extension) or G.711 µ-law / A-law at 8 kHz
→ 16 kHz float32, through one streaming resampler per session so chunk edges leave no clicks."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

import numpy as np

from open_stt_server.live.audio import SAMPLE_RATE, InvalidAudio, Resampler

__all__ = ["ALAW", "MULAW", "PCM_RATES", "SAMPLE_RATE", "InputAudio", "InputFormat", "InvalidAudio"]

PCM_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)


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
        self._resample = Resampler(self.rate)

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
        return self._resample(samples), seconds
