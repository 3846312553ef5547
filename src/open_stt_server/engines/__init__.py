"""The Engine protocol every model runtime implements, and engine lookup by catalog entry."""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import threading
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


# Decoding threads run this much "nicer" than the event loop, so /health and new uploads are answered at once
# even when inference keeps every core busy. Linux applies niceness per thread and threads inherit it.
DECODE_NICENESS = 10


def lower_current_thread_priority() -> None:
    # Not Linux, or not permitted: serving stays correct, only /health may answer later under load.
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), DECODE_NICENESS)


def load_engine(spec: ModelSpec, weights: Path, settings: Settings) -> Engine:
    """Build the engine in a lower-priority thread: the runtime's own thread pools inherit that priority."""
    if spec.engine != "whisper":
        raise EngineUnavailable(
            f"Model '{spec.name}' needs the Voxtral engine, which is not available in this version yet; "
            "serve a Whisper model instead."
        )
    from open_stt_server.engines.whisper_ct2 import WhisperEngine

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(_build, WhisperEngine, spec, weights, settings).result()


def _build(engine_class, spec: ModelSpec, weights: Path, settings: Settings) -> Engine:
    lower_current_thread_priority()
    return engine_class(spec, weights, settings)
