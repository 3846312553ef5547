"""The diarizer interface: what a diarizer takes (samples, a speaker count, known speakers) and gives (speaker
turns), and the constants every diarizer shares."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

DIARIZERS = ("auto", "ge2e", "pyannote", "off")
UNNAMED_PREFIX = "#"
# A voice takes a known speaker's name when its embedding is at least this cosine-similar to the reference's.
KNOWN_SPEAKER_SIMILARITY = 0.75
WEIGHTS_PACKAGE = "resemblyzer"
WEIGHTS_VERSION = "0.1.4"
INSTALL_HINT = (
    f"pip install 'open-stt-server[diarize]' && pip install --no-deps '{WEIGHTS_PACKAGE}=={WEIGHTS_VERSION}' "
    "(only the GE2E weights file inside Resemblyzer's wheel is used; its own dependencies are not needed)"
)


@dataclass(frozen=True)
class SpeakerCount:
    """Bounds on how many speakers there are; `exact` overrides both."""

    exact: int | None = None
    minimum: int = 1
    maximum: int | None = None

    def clamp(self, count: int, windows: int) -> int:
        if self.exact is not None:
            return min(self.exact, windows)
        upper = min(self.maximum or windows, windows)
        return max(min(count, upper), min(self.minimum, windows))


@dataclass(frozen=True)
class SpeakerTurn:
    start: float
    end: float
    speaker: str  # a known speaker's name, or "#n" for the n-th unnamed voice


@dataclass(frozen=True)
class KnownSpeaker:
    name: str
    samples: np.ndarray  # 16 kHz mono, 2–10 s of that voice alone


@dataclass(frozen=True)
class DiarizationRequest:
    count: SpeakerCount = field(default_factory=SpeakerCount)
    known: tuple[KnownSpeaker, ...] = ()


class DiarizationCancelled(Exception):
    pass


class Diarizer(Protocol):
    name: str

    def diarize(
        self, samples: np.ndarray, request: DiarizationRequest, cancelled: threading.Event | None = None
    ) -> list[SpeakerTurn]: ...


class DiarizerUnavailable(RuntimeError):
    """Diarization was asked for but cannot run here (packages or weights missing)."""
