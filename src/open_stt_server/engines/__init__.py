"""The Engine protocol every model runtime implements, and engine lookup by catalog entry."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from open_stt_server.catalog import ModelSpec
from open_stt_server.settings import Settings
from open_stt_server.transcript import Segment, TranscribeOptions


@dataclass
class Decoding:
    """A transcription under way: the language is known, segments come one decoding step at a time."""

    language: str
    segments: Iterator[Segment]


class Engine(Protocol):
    spec: ModelSpec
    english_only: bool
    supports_translation: bool
    supports_word_timestamps: bool
    device: str

    def start(self, samples: np.ndarray, options: TranscribeOptions) -> Decoding: ...

    def close(self) -> None: ...


class EngineUnavailable(RuntimeError):
    """The engine for a model cannot run here (missing extra, not implemented yet)."""


def load_engine(spec: ModelSpec, weights: Path, settings: Settings) -> Engine:
    if spec.engine == "whisper":
        from open_stt_server.engines.whisper_ct2 import WhisperEngine

        return WhisperEngine(spec, weights, settings)
    raise EngineUnavailable(
        f"Model '{spec.name}' needs the Voxtral engine, which is not available in this version yet; "
        "serve a Whisper model instead."
    )
