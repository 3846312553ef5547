"""What a live speech stream tells the door it came through: plain events, no protocol. Offsets are samples at
16 kHz from the start of the stream."""

from __future__ import annotations

from dataclasses import dataclass

from open_stt_server.transcript import Word


@dataclass(frozen=True)
class SpeechStarted:
    """The stream's VAD heard speech: a turn opened (its audio starts `start`, prefix padding included)."""

    turn: str
    start: int


@dataclass(frozen=True)
class SpeechStopped:
    """The stream's VAD heard the speaker stop: the turn ends at `end` and is committed next."""

    turn: str
    end: int


@dataclass(frozen=True)
class TurnCommitted:
    """A turn's audio is final (by the VAD, the client, or a limit); its transcript follows."""

    turn: str
    previous: str | None  # the turn committed before it


@dataclass(frozen=True)
class TextDelta:
    """More of a turn's transcript, append-only: live partial words while the speaker talks, then the rest from
    the final decode (from where the words sent live end in it). Joined, a turn's deltas equal its final text
    when the words sent bind it (`LiveOptions.partials_bind`) or the final decode heard them as they were sent;
    otherwise the final text wins."""

    turn: str
    text: str
    words: tuple[Word, ...] = ()  # the decoded segment's timed words, when the final decode asked for them


@dataclass(frozen=True)
class TurnTranscribed:
    turn: str
    text: str
    language: str | None
    seconds: float  # the turn's audio
    start: int
    end: int
    words: tuple[Word, ...]
    latency_s: float  # from the end of speech (or the commit) to this transcript


@dataclass(frozen=True)
class TurnFailed:
    turn: str
    message: str
    code: str
    kind: str = "server_error"


@dataclass(frozen=True)
class BufferFull:
    """Uncommitted audio (no VAD) passed the limit: it is committed as a turn."""

    limit_s: float


LiveEvent = (
    SpeechStarted | SpeechStopped | TurnCommitted | TextDelta | TurnTranscribed | TurnFailed | BufferFull
)
