"""A live stream's turns: the one being spoken (with its live passes) and the committed ones awaiting their
final transcript. Offsets are samples at 16 kHz from the start of the stream."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field

import numpy as np

from open_stt_server.live.partials import words_of
from open_stt_server.scheduler import TranscriptionJob
from open_stt_server.transcript import Transcript, accepted_at_first_try

PASS_TOKENS, PASS_TOKENS_PER_SECOND = 16, 12.0  # a live pass's token budget
PASS_COST_SHARE = 4  # live passes come no closer than this many times a pass's own decode time of audio ...
MIN_PASS_INTERVAL_S = 0.1  # ... and never closer than this


def pass_token_budget(seconds: float) -> int:
    """Tokens a live pass over `seconds` of speech may decode: far more than speech needs (fast speech is about
    5 a second; digits and punctuation more), far fewer than a loop takes."""
    return PASS_TOKENS + math.ceil(PASS_TOKENS_PER_SECOND * seconds)


def pass_interval(asked_s: float, took_s: float | None) -> float:
    """Seconds of audio between two live passes: what the client asked for (its `delay`), sooner where a pass
    costs little (Moonshine decodes a second of speech in tens of milliseconds), so that passes take about a
    quarter of one worker at most."""
    if took_s is None:
        return asked_s
    return min(asked_s, max(MIN_PASS_INTERVAL_S, PASS_COST_SHARE * took_s))


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

    @classmethod
    def heard(cls, covered: int, transcript: Transcript, language: str | None) -> Pass:
        """The pass a live decode of `transcript.duration` seconds (within its token budget) gave."""
        budget = pass_token_budget(transcript.duration) - 2  # the window's own tokens take a few
        clean = all(accepted_at_first_try(s) for s in transcript.segments) and (
            sum(len(s.tokens) for s in transcript.segments) < budget
        )
        return cls(covered, transcript.text, language, word_probabilities(transcript), clean)


def word_probabilities(transcript: Transcript) -> tuple[float, ...] | None:
    """Each word's probability in a pass, where its engine gave them for every segment (and they are its words)."""
    parts = [s.word_probabilities for s in transcript.segments]
    if not parts or any(p is None for p in parts):
        return None
    flat = tuple(p for part in parts for p in part or ())
    return flat if len(flat) == len(words_of(transcript.text)) else None


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
