"""Decode any container/codec PyAV reads into 16 kHz mono float32, within a duration cap."""

from __future__ import annotations

import io
from dataclasses import dataclass

import av
import numpy as np

SAMPLE_RATE = 16_000


class AudioError(ValueError):
    """The upload is not usable audio (undecodable, empty)."""


class AudioTooLong(AudioError):
    """The decoded audio is longer than the server allows."""


@dataclass(frozen=True)
class Audio:
    samples: np.ndarray  # float32, mono, SAMPLE_RATE
    duration_s: float


def decode_audio(data: bytes, max_duration_s: float) -> Audio:
    """Decode `data`, average channels to mono and resample to 16 kHz.

    Decoding stops as soon as the output passes `max_duration_s`, so a small compressed file cannot
    expand into hours of samples in memory.
    """
    if not data:
        raise AudioError("The audio file is empty.")
    max_samples = int(max_duration_s * SAMPLE_RATE)
    chunks: list[np.ndarray] = []
    total = 0
    try:
        with av.open(io.BytesIO(data), mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise AudioError("The file has no audio stream.")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="fltp", rate=SAMPLE_RATE)
            for frame in _frames(container, stream):
                for out in resampler.resample(frame):
                    total += _append_mono(out, chunks)
                if total > max_samples:
                    raise AudioTooLong(_too_long_message(max_duration_s))
            for out in resampler.resample(None):
                total += _append_mono(out, chunks)
    except AudioError:
        raise
    except (av.FFmpegError, ValueError, IndexError, OverflowError, MemoryError, RuntimeError) as exc:
        raise AudioError(f"The audio file could not be decoded: {exc}") from None
    if total > max_samples:
        raise AudioTooLong(_too_long_message(max_duration_s))
    if total == 0:
        raise AudioError("The audio file contains no audio samples.")
    samples = np.concatenate(chunks).astype(np.float32, copy=False)
    if not np.isfinite(samples).all():
        samples = np.nan_to_num(samples, nan=0.0, posinf=1.0, neginf=-1.0)
    return Audio(samples=samples, duration_s=len(samples) / SAMPLE_RATE)


def _frames(container, stream):
    """Decoded frames; a corrupt packet mid-file ends the stream instead of failing what decoded fine."""
    decoded_any = False
    try:
        for packet in container.demux(stream):
            for frame in packet.decode():
                decoded_any = True
                yield frame
    except av.FFmpegError:
        if not decoded_any:
            raise


def _append_mono(frame: av.AudioFrame, chunks: list[np.ndarray]) -> int:
    planes = frame.to_ndarray()  # (channels, samples) for planar float
    mono = planes.mean(axis=0) if planes.ndim == 2 and planes.shape[0] > 1 else planes.reshape(-1)
    chunks.append(mono.astype(np.float32, copy=False))
    return mono.shape[0]


def _too_long_message(max_duration_s: float) -> str:
    return f"The audio is longer than this server's limit of {max_duration_s:g} seconds."
