"""The Engine protocol every model runtime implements, what a model can do (its capabilities), and how a
decode starts."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from open_stt_server.catalog import ModelSpec
from open_stt_server.languages import LANGUAGE_NAMES
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
    supports_prompt: bool
    languages: frozenset[str] | None  # codes it accepts in `language`; None = all of Whisper's
    device: str
    compute_type: str

    def start(
        self, samples: np.ndarray, options: TranscribeOptions, cancelled: threading.Event | None = None
    ) -> Decoding:
        """Begin decoding; `cancelled` is set when the request is dropped (an engine may stop mid-step)."""
        ...

    def close(self) -> None: ...


# The language codes Voxtral takes (its engine module imports torch, so they are kept here for the catalog).
VOXTRAL_LANGUAGES = frozenset(code for code in LANGUAGE_NAMES if len(code) == 2 and code != "jw")
# Moonshine's published models are English ones (its later other-language models carry another licence).
MOONSHINE_LANGUAGES = frozenset({"en"})


@dataclass(frozen=True)
class Capabilities:
    """What a model can do, without the model: what request validation and /v1/models read (cluster mode keeps
    the engine in a replica on another machine)."""

    spec: ModelSpec
    english_only: bool
    supports_translation: bool
    supports_word_timestamps: bool
    supports_prompt: bool
    languages: frozenset[str] | None
    device: str = "remote"
    compute_type: str = "remote"

    def close(self) -> None:
        """Nothing to release: the engine lives elsewhere."""


def capabilities(spec: ModelSpec) -> Capabilities:
    """A catalog entry's capabilities, known without loading it (a local directory's language coverage is
    known only to its engine: use `capabilities_of` on a loaded one)."""
    if spec.engine == "voxtral":
        return Capabilities(spec, False, False, False, False, VOXTRAL_LANGUAGES)
    if spec.engine == "moonshine":
        return Capabilities(spec, True, False, False, False, MOONSHINE_LANGUAGES)
    return Capabilities(spec, spec.english_only, not spec.english_only, True, True, None)


def capabilities_of(engine: Engine) -> Capabilities:
    return Capabilities(
        engine.spec,
        engine.english_only,
        engine.supports_translation,
        engine.supports_word_timestamps,
        engine.supports_prompt,
        engine.languages,
        engine.device,
        engine.compute_type,
    )


class EngineUnavailable(RuntimeError):
    """The engine for a model cannot run here (missing extra, not implemented yet)."""


# Decoding threads run this much "nicer" than the event loop, so /health and new uploads are answered at once
# even when inference keeps every core busy. Linux applies niceness per thread and threads inherit it.
DECODE_NICENESS = 10


def lower_current_thread_priority() -> None:
    # Not Linux, or not permitted: serving stays correct, only /health may answer later under load.
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), DECODE_NICENESS)
