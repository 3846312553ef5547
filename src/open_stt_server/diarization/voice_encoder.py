"""The GE2E speaker encoder (Wan et al., 2018) in numpy: 16 kHz audio → 256-d unit voice embeddings.

The weights are those trained for Resemblyzer and shipped inside its wheel (`resemblyzer/pretrained.pt`): a
3-layer LSTM over 40-band mel power spectra (25 ms windows, 10 ms hop), then a linear layer and a ReLU; the
embedding is the last hidden state so projected, scaled to unit length. Resemblyzer itself is not imported (it
pulls in webrtcvad, a C build, and PyTorch): only its weights file is read, and the network runs here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from open_stt_server.diarization.checkpoint import load_legacy_checkpoint

SAMPLE_RATE = 16_000
N_FFT = 400  # 25 ms
HOP_LENGTH = 160  # 10 ms
N_MELS = 40
HIDDEN_SIZE = 256
N_LAYERS = 3
PARTIAL_FRAMES = 160  # 1.6 s: the length the encoder was trained on
TARGET_DBFS = -30.0
BATCH_WINDOWS = 128  # windows run through the LSTM together (bounds memory: ~80 MB per batch)


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    mel = hz / (200.0 / 3)
    log_region = hz >= 1000.0
    mel[log_region] = 15.0 + np.log(hz[log_region] / 1000.0) / (np.log(6.4) / 27.0)
    return mel


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    hz = mel * (200.0 / 3)
    log_region = mel >= 15.0
    hz[log_region] = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel[log_region] - 15.0))
    return hz


def mel_filters(n_mels: int = N_MELS, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Triangular, area-normalised (Slaney) mel filters, shape (n_mels, 1 + n_fft // 2)."""
    fft_hz = np.linspace(0, sample_rate / 2, 1 + n_fft // 2)
    edges = _mel_to_hz(
        np.linspace(_hz_to_mel(np.array([0.0]))[0], _hz_to_mel(np.array([sample_rate / 2]))[0], n_mels + 2)
    )
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_hz[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


_FILTERS = mel_filters()
_WINDOW = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)  # periodic Hann


def mel_spectrogram(samples: np.ndarray) -> np.ndarray:
    """Mel power spectrum, shape (frames, 40); frame i is centred on sample i × 160 (not a log spectrum)."""
    padded = np.pad(samples.astype(np.float32), N_FFT // 2)
    n_frames = 1 + (len(padded) - N_FFT) // HOP_LENGTH
    frames = np.lib.stride_tricks.as_strided(
        padded, shape=(n_frames, N_FFT), strides=(padded.strides[0] * HOP_LENGTH, padded.strides[0])
    )
    power = np.abs(np.fft.rfft(frames * _WINDOW, axis=1)) ** 2
    return (power.astype(np.float32) @ _FILTERS.T).astype(np.float32)


def window_starts(frames: int, step: int) -> list[int]:
    """First frames of 1.6 s windows every `step` frames over `frames`, the last one flush with the end (one
    shorter window when there is less than 1.6 s)."""
    if frames <= PARTIAL_FRAMES:
        return [0]
    return [*range(0, frames - PARTIAL_FRAMES, step), frames - PARTIAL_FRAMES]


def normalize_volume(samples: np.ndarray, target_dbfs: float = TARGET_DBFS) -> np.ndarray:
    """Scale to an RMS of `target_dbfs` (the level the encoder was trained at); silence stays silence."""
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if len(samples) else 0.0
    if rms < 1e-6:
        return samples
    return (samples * (10 ** (target_dbfs / 20) / rms)).astype(np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


@dataclass(frozen=True)
class _LstmLayer:
    w_input: np.ndarray  # (in, 4 × hidden), gates in PyTorch's order: input, forget, cell, output
    w_hidden: np.ndarray  # (hidden, 4 × hidden)
    bias: np.ndarray  # (4 × hidden,)

    def run(self, inputs: np.ndarray) -> np.ndarray:
        """(batch, time, in) → the hidden state at every step, (batch, time, hidden)."""
        batch, steps, _ = inputs.shape
        projected = inputs @ self.w_input + self.bias
        h = np.zeros((batch, HIDDEN_SIZE), dtype=np.float32)
        c = np.zeros_like(h)
        out = np.empty((batch, steps, HIDDEN_SIZE), dtype=np.float32)
        for t in range(steps):
            gates = projected[:, t] + h @ self.w_hidden
            i = _sigmoid(gates[:, :HIDDEN_SIZE])
            f = _sigmoid(gates[:, HIDDEN_SIZE : 2 * HIDDEN_SIZE])
            g = np.tanh(gates[:, 2 * HIDDEN_SIZE : 3 * HIDDEN_SIZE])
            o = _sigmoid(gates[:, 3 * HIDDEN_SIZE :])
            c = f * c + i * g
            h = o * np.tanh(c)
            out[:, t] = h
        return out


class VoiceEncoder:
    def __init__(self, weights: Path) -> None:
        state = load_legacy_checkpoint(weights)["model_state"]
        self.layers = [
            _LstmLayer(
                np.ascontiguousarray(state[f"lstm.weight_ih_l{n}"].T),
                np.ascontiguousarray(state[f"lstm.weight_hh_l{n}"].T),
                state[f"lstm.bias_ih_l{n}"] + state[f"lstm.bias_hh_l{n}"],
            )
            for n in range(N_LAYERS)
        ]
        self.w_linear = np.ascontiguousarray(state["linear.weight"].T)
        self.b_linear = state["linear.bias"]

    def embed_mels(self, mels: np.ndarray) -> np.ndarray:
        """(batch, frames, 40) mel windows of one length → (batch, 256) unit embeddings."""
        out = []
        for begin in range(0, len(mels), BATCH_WINDOWS):
            x = mels[begin : begin + BATCH_WINDOWS].astype(np.float32)
            for layer in self.layers:
                x = layer.run(x)
            raw = np.maximum(x[:, -1] @ self.w_linear + self.b_linear, 0.0)
            out.append(raw / np.maximum(np.linalg.norm(raw, axis=1, keepdims=True), 1e-9))
        return np.concatenate(out) if out else np.zeros((0, HIDDEN_SIZE), np.float32)

    def embed_utterance(self, samples: np.ndarray, step_frames: int = PARTIAL_FRAMES // 2) -> np.ndarray:
        """One voice embedding for a recording of one speaker: the mean of its windows' embeddings."""
        mel = mel_spectrogram(normalize_volume(samples))
        windows = np.stack([mel[s : s + PARTIAL_FRAMES] for s in window_starts(len(mel), step_frames)])
        mean = self.embed_mels(windows).mean(axis=0)
        return mean / max(float(np.linalg.norm(mean)), 1e-9)
