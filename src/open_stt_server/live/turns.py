"""A live stream's turns: the one being spoken (with its live passes) and the committed ones awaiting their
final transcript. Offsets are samples at 16 kHz from the start of the stream."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np

from open_stt_server.scheduler import TranscriptionJob


@dataclass(frozen=True)
class Pass:
    """One decode of an open turn, from its start up to `covered` (a sample offset)."""

    covered: int
    text: str
    language: str | None
    probabilities: tuple[float, ...] | None = None  # of each word of `text`, where the engine gives them
    # Its decode passed the engine's checks at the first temperature (no repetition, not unsure): it says what
    # the final decode would, and its words may be compared. A pass that looped, or ran out of tokens, is neither.
    clean: bool = True


@dataclass
class OpenTurn:
    """The turn being spoken and, with live partials, the words already sent."""

    id: str
    start: int  # sample offset in the stream's audio
    sent: list[str] = field(default_factory=list)  # words sent as deltas, each with its leading space
    passes: list[Pass] = field(default_factory=list)  # the live passes so far, oldest first
    partial: asyncio.Task | None = None  # the pass under way
    partial_job: TranscriptionJob | None = None
    partial_covers: int = 0  # where the latest pass's audio ends
    last_pass: Pass | None = None


@dataclass(frozen=True)
class CommittedTurn:
    id: str
    samples: np.ndarray
    start: int
    end: int
    sent: tuple[str, ...]  # words live partials already sent
    ready: Pass | None  # a pass that heard the whole turn: its text is the final one
    pending: asyncio.Task | None  # ... or the pass under way that will have
    ended_at: float  # monotonic time of the end of speech or the commit
