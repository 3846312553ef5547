"""Cutting a long segment into sentence- or phrase-sized ones at word times.

The batched long-audio path decodes each speech clip (up to 30 s) as one piece of text. Whisper's own segments,
and OpenAI's, are a sentence or a phrase each, and subtitle editors, speaker alignment and search by time rely
on that shape. With word times the cut is exact: a new segment starts at the first word after a sentence end or
a pause, and anything still too long is cut at the clause break (or the widest gap) nearest its middle.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace

from open_stt_server.transcript import Segment, Word

SENTENCE_ENDS = (".", "?", "!", "。", "？", "！", "…")
CLAUSE_ENDS = (",", ";", ":", "，", "；", "：", "、")
PAUSE_S = 0.8  # a silence this long between words ends a phrase
MAX_SEGMENT_S = 15.0
MIN_SEGMENT_S = 1.0  # a sentence end closer than this to the segment start does not cut (e.g. "Mr.")


def _ends_with(word: Word, marks: tuple[str, ...]) -> bool:
    return word.word.rstrip().rstrip("\"'”’)»").endswith(marks)


def _phrases(words: tuple[Word, ...]) -> list[tuple[Word, ...]]:
    pieces: list[tuple[Word, ...]] = []
    current: list[Word] = []
    for index, word in enumerate(words):
        current.append(word)
        following = words[index + 1] if index + 1 < len(words) else None
        if following is None:
            break
        long_enough = word.end - current[0].start >= MIN_SEGMENT_S
        if (long_enough and _ends_with(word, SENTENCE_ENDS)) or following.start - word.end >= PAUSE_S:
            pieces.append(tuple(current))
            current = []
    if current:
        pieces.append(tuple(current))
    return [p for piece in pieces for p in _halve_until_short(piece)]


def _halve_until_short(words: tuple[Word, ...]) -> list[tuple[Word, ...]]:
    if len(words) < 2 or words[-1].end - words[0].start <= MAX_SEGMENT_S:
        return [words]
    middle = (words[0].start + words[-1].end) / 2

    def badness(i: int) -> tuple[int, float]:  # cut after words[i]: clause breaks first, then wide gaps
        gap = words[i + 1].start - words[i].end
        return (0 if _ends_with(words[i], CLAUSE_ENDS) else 1, abs(words[i].end - middle) - 2 * gap)

    cut = min(range(len(words) - 1), key=badness) + 1
    return _halve_until_short(words[:cut]) + _halve_until_short(words[cut:])


def split_segments(
    segments: Iterable[Segment], encode: Callable[[str], list[int]], first_id: int = 0
) -> Iterator[Segment]:
    """Each segment cut at sentence ends and pauses; segments without word times pass through.

    Numbers stay shared by the pieces of one segment (log-probability, compression ratio, temperature), text
    and times come from the words, and tokens are the pieces' own text encoded again.
    """
    next_id = first_id
    for segment in segments:
        if not segment.words or len(segment.words) < 2:
            yield replace(segment, id=next_id)
            next_id += 1
            continue
        phrases = _phrases(segment.words)
        if len(phrases) == 1:
            yield replace(segment, id=next_id)
            next_id += 1
            continue
        for index, words in enumerate(phrases):
            text = "".join(w.word for w in words)
            yield replace(
                segment,
                id=next_id,
                # the segment's outer bounds stay (they may hold padding around the speech); cuts are word times
                start=segment.start if index == 0 else words[0].start,
                end=segment.end if index == len(phrases) - 1 else words[-1].end,
                text=text,
                tokens=tuple(encode(text)),
                words=words,
            )
            next_id += 1
