"""Streaming voice-activity detection: Silero VAD (the ONNX model faster-whisper ships) run window by window,
its recurrent state and 64-sample context kept across appends, and the turn rules of OpenAI's `server_vad`.

faster-whisper's `SileroVADModel.__call__` starts from a fresh state on every call, so it is not called per
chunk; the same ONNX session is run here with the state carried over, which gives the probabilities a single
call over the whole stream would.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16_000
WINDOW = 512  # 32 ms: the window Silero takes at 16 kHz
CONTEXT = 64
MIN_SPEECH_WINDOWS = 3  # ~100 ms above the threshold before a turn starts (clicks do not start turns)


class SileroStream:
    def __init__(self) -> None:
        from faster_whisper.vad import get_vad_model

        self._session = get_vad_model().session  # one ONNX session per process; run() is thread-safe
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)

    @property
    def pending(self) -> np.ndarray:
        """Samples fed that do not yet fill a window."""
        return self._pending

    def feed(self, samples: np.ndarray) -> np.ndarray:
        """Speech probability of every whole 32 ms window completed by `samples` (16 kHz float32)."""
        audio = np.concatenate([self._pending, samples.astype(np.float32)])
        count = len(audio) // WINDOW
        self._pending = audio[count * WINDOW :]
        if count == 0:
            return np.zeros(0, dtype=np.float32)
        windows = audio[: count * WINDOW].reshape(count, WINDOW)
        previous = np.concatenate([self._context[None], windows[:-1, -CONTEXT:]])
        batch = np.concatenate([previous, windows], axis=1)
        out, self._h, self._c = self._session.run(None, {"input": batch, "h": self._h, "c": self._c})
        self._context = windows[-1, -CONTEXT:].copy()
        return np.asarray(out, dtype=np.float32).reshape(-1)


@dataclass(frozen=True)
class VadSettings:
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500


@dataclass(frozen=True)
class VoiceStarted:
    at: int  # sample offset where speech began (before the prefix padding)


@dataclass(frozen=True)
class VoiceStopped:
    at: int  # sample offset where the turn ends: the silence start + silence_duration_ms


class TurnDetector:
    """OpenAI `server_vad` rules on Silero probabilities: a turn starts when speech is heard and stops after
    `silence_duration_ms` below the lower threshold (`threshold` − 0.15, as faster-whisper's VAD)."""

    def __init__(self, settings: VadSettings) -> None:
        self.settings = settings
        self.speaking = False
        self.position = 0  # samples seen
        self.speech_start = 0
        self.last_pause = 0  # end of the latest window under the threshold inside the current turn
        self.speech_end = 0  # where the latest speech ended (or the current position while it goes on)
        self._candidate: int | None = None
        self._candidate_windows = 0
        self._silence_start: int | None = None
        self._vad = SileroStream()

    @property
    def low_threshold(self) -> float:
        return max(self.settings.threshold - 0.15, 0.01)

    def feed(self, samples: np.ndarray) -> list[VoiceStarted | VoiceStopped]:
        events: list[VoiceStarted | VoiceStopped] = []
        silence_windows = max(1, round(self.settings.silence_duration_ms * SAMPLE_RATE / 1000 / WINDOW))
        for probability in self._vad.feed(samples):
            start, self.position = self.position, self.position + WINDOW
            if not self.speaking:
                if probability >= self.settings.threshold:
                    if self._candidate is None:
                        self._candidate, self._candidate_windows = start, 0
                    self._candidate_windows += 1
                    if self._candidate_windows >= MIN_SPEECH_WINDOWS:
                        self.speaking, self.speech_start = True, self._candidate
                        self.speech_end = self.position
                        self.last_pause, self._silence_start, self._candidate = self._candidate, None, None
                        events.append(VoiceStarted(self.speech_start))
                elif probability < self.low_threshold:
                    self._candidate = None
                continue
            if probability < self.settings.threshold:
                self.last_pause = self.position
            if probability < self.low_threshold:
                if self._silence_start is None:
                    self._silence_start = self.speech_end = start
                if (self.position - self._silence_start) // WINDOW >= silence_windows:
                    self.speaking = False
                    events.append(VoiceStopped(self.position))
                    self._silence_start = None
                    continue  # speech_end stays where the silence began
            elif probability >= self.settings.threshold:
                self._silence_start = None
            if self._silence_start is None:
                self.speech_end = self.position
        return events

    @property
    def silence_start(self) -> int | None:
        """Inside a turn, where the silence that may end it began; None while speech goes on."""
        return self._silence_start if self.speaking else None

    def skip(self, count: int) -> None:
        """Let `count` more samples pass unheard: they count as speech (where the speech ends is then the end of
        what passed), and listening starts afresh after them."""
        self.position += len(self._vad.pending) + count
        self._vad = SileroStream()
        self._candidate = self._silence_start = None
        self.speech_end = self.position

    def restart(self, at: int) -> None:
        """A turn was cut at `at` (a commit while speaking): speech that goes on is a new turn from there."""
        self.speech_start = self.last_pause = at
        self._silence_start = None

    def reset(self) -> None:
        """The buffer was cleared or committed by the client: forget the turn in progress."""
        self.speaking = False
        self._candidate = None
        self._silence_start = None
