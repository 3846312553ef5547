"""Decoding: containers, channels, rates, limits, and a fuzz that only ever yields AudioError."""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from open_stt_server.audio import SAMPLE_RATE, AudioError, AudioTooLong, decode_audio
from tests.conftest import ffmpeg, needs_ffmpeg, sample


def wav(samples: np.ndarray, rate: int, channels: int = 1) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


def test_wav_at_16k_passes_through() -> None:
    audio = decode_audio(sample("en", "hello_world").read_bytes(), 60)
    assert audio.samples.dtype == np.float32 and audio.samples.ndim == 1
    assert abs(audio.duration_s - 1.143) < 0.01


def test_resampled_to_16k() -> None:
    tone = np.sin(2 * np.pi * 440 * np.arange(44100) / 44100) * 0.5
    audio = decode_audio(wav(tone, 44100), 60)
    assert abs(len(audio.samples) - SAMPLE_RATE) < 100
    spectrum = np.abs(np.fft.rfft(audio.samples))
    assert abs(np.argmax(spectrum) * SAMPLE_RATE / len(audio.samples) - 440) < 5


def test_channels_are_averaged() -> None:
    left = np.full(16000, 0.5)
    right = np.full(16000, -0.1)
    stereo = np.stack([left, right], axis=1).reshape(-1)
    audio = decode_audio(wav(stereo, 16000, channels=2), 60)
    assert abs(float(np.median(audio.samples)) - 0.2) < 0.01


def test_duration_cap_stops_decoding() -> None:
    with pytest.raises(AudioTooLong):
        decode_audio(wav(np.zeros(16000 * 3), 16000), 2.0)
    assert decode_audio(wav(np.zeros(16000 * 3), 16000), 3.5).duration_s == pytest.approx(3.0, abs=0.01)


@needs_ffmpeg
def test_compressed_bomb_is_stopped(tmp_path) -> None:
    """Two hours of silence compress to little; decoding stops at the cap instead of expanding it all."""
    out = tmp_path / "silence.flac"
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono", "-t", "7200", "-c:a", "flac", str(out))
    assert out.stat().st_size < 25 * 1024 * 1024
    with pytest.raises(AudioTooLong):
        decode_audio(out.read_bytes(), 600)


@pytest.mark.parametrize("data", [b"", b"\x00", b"not audio" * 100, b"RIFF" + b"\xff" * 100])
def test_garbage_is_audio_error(data: bytes) -> None:
    with pytest.raises(AudioError):
        decode_audio(data, 60)


VALID = [sample("en", "hello_world").read_bytes()]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(
    st.binary(max_size=4096),
    st.integers(0, len(VALID[0])).map(lambda n: VALID[0][:n]),
    st.tuples(st.integers(0, len(VALID[0]) - 1), st.binary(min_size=1, max_size=64)).map(
        lambda t: VALID[0][: t[0]] + t[1] + VALID[0][t[0] + len(t[1]) :]
    ),
))  # fmt: skip
def test_fuzz_decoder_only_raises_audio_error(data: bytes) -> None:
    try:
        audio = decode_audio(data, 60)
    except AudioError:
        return
    assert audio.samples.dtype == np.float32 and np.isfinite(audio.samples).all() and audio.duration_s > 0
