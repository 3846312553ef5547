"""Speaker turns + a transcript's segments → diarized segments that never span a change of speaker.

Each word goes to the speaker whose turn overlaps it most (the nearest turn when none does: VAD and Whisper
disagree by a few hundred milliseconds at the edges of speech). A segment is cut wherever consecutive words
change speaker; a segment without word times (Voxtral) takes the speaker that overlaps it most. Unnamed voices
become A, B, C, ... in the order they first speak in the transcript.
"""

from __future__ import annotations

import bisect
import string
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from open_stt_server.diarization.diarizer import UNNAMED_PREFIX, SpeakerTurn
from open_stt_server.transcript import Segment, Word


@dataclass(frozen=True)
class SpeakerSegment:
    start: float
    end: float
    text: str
    speaker: str  # a turn's speaker key; `SpeakerLetters` gives what clients see


class SpeakerLetters:
    """Unnamed speaker keys → "A", "B", ... in order of first appearance (skipping letters used as names)."""

    def __init__(self, reserved: Iterable[str] = ()) -> None:
        self.reserved = set(reserved)
        self.letters: dict[str, str] = {}

    def __call__(self, key: str) -> str:
        if not key.startswith(UNNAMED_PREFIX):
            return key
        if key not in self.letters:
            self.letters[key] = self._next()
        return self.letters[key]

    def _next(self) -> str:
        n = len(self.letters)
        while True:
            letter = _letter(n)
            if letter not in self.reserved and letter not in self.letters.values():
                return letter
            n += 1


def _letter(n: int) -> str:
    """0 → A, 25 → Z, 26 → AA, ..."""
    alphabet = string.ascii_uppercase
    out = ""
    n += 1
    while n:
        n, rest = divmod(n - 1, 26)
        out = alphabet[rest] + out
    return out


class TurnIndex:
    def __init__(self, turns: list[SpeakerTurn]) -> None:
        self.turns = sorted(turns, key=lambda t: t.start)
        self.starts = [t.start for t in self.turns]

    def speaker(self, start: float, end: float) -> str | None:
        """The speaker overlapping [start, end] most, else the nearest one; None when there are no turns."""
        if not self.turns:
            return None
        best, overlap = None, 0.0
        first = max(bisect.bisect_right(self.starts, start) - 1, 0)
        for turn in self.turns[first:]:
            if turn.start > end:
                break
            shared = min(end, turn.end) - max(start, turn.start)
            if shared > overlap:
                best, overlap = turn.speaker, shared
        if best is not None:
            return best
        middle = (start + end) / 2
        nearest = min(self.turns, key=lambda t: max(t.start - middle, middle - t.end, 0.0))
        return nearest.speaker


def split_by_speaker(segment: Segment, turns: TurnIndex, fallback: str) -> Iterator[SpeakerSegment]:
    words = [w for w in segment.words or () if w.word.strip()]
    if not words:
        speaker = turns.speaker(segment.start, segment.end) or fallback
        if segment.text.strip():
            yield SpeakerSegment(segment.start, segment.end, segment.text, speaker)
        return
    runs: list[tuple[str, list[Word]]] = []
    for word in words:
        speaker = turns.speaker(word.start, word.end) or fallback
        if runs and runs[-1][0] == speaker:
            runs[-1][1].append(word)
        else:
            runs.append((speaker, [word]))
    for i, (speaker, run) in enumerate(runs):
        start = segment.start if i == 0 else run[0].start
        end = segment.end if i == len(runs) - 1 else run[-1].end
        yield SpeakerSegment(
            min(start, run[0].start), max(end, run[-1].end), "".join(w.word for w in run), speaker
        )


@dataclass(frozen=True)
class DiarizedSegment:
    id: str
    start: float
    end: float
    text: str  # as the words joined: a leading space where the language puts one
    speaker: str  # what clients see: a known speaker's name, or A, B, ...


class SegmentLabeller:
    """Labels a transcript's segments one at a time, as they stream, keeping ids and letters consistent."""

    def __init__(self, turns: list[SpeakerTurn], known_names: Iterable[str] = ()) -> None:
        self.turns = TurnIndex(turns)
        self.letters = SpeakerLetters(known_names)
        self.count = 0

    def label(self, segment: Segment) -> list[DiarizedSegment]:
        out = []
        for piece in split_by_speaker(segment, self.turns, fallback=f"{UNNAMED_PREFIX}0"):
            out.append(
                DiarizedSegment(
                    f"seg_{self.count}",
                    round(piece.start, 3),
                    round(piece.end, 3),
                    piece.text,
                    self.letters(piece.speaker),
                )
            )
            self.count += 1
        return out
