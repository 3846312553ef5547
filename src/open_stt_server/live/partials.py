"""Which words of a live pass are settled enough to send, and where a final transcript picks up from the words
already sent. Words keep their leading whitespace, so joined again they give the text."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from open_stt_server.audio import SAMPLE_RATE


def words_of(text: str) -> list[str]:
    """Words with their leading whitespace: joined again they give the text (less trailing space)."""
    return re.findall(r"\s*\S+", text)


def normal(word: str) -> str:
    """A word as compared across passes: lower case, without punctuation."""
    return re.sub(r"[^\w']", "", word.lower())


def agreement(previous: list[str], latest: list[str], held: int = 1) -> int:
    """How many of `latest`'s first words the `previous` pass agrees on, less the `held` last words of the
    previous pass and never the newest word of the latest one: a word the end of the audio cut off, or heard with
    too little after it, is often wrong the same way in two passes."""
    agreed = 0
    for before, now in zip(previous, latest, strict=False):
        if normal(before) != normal(now) or not normal(now):
            break
        agreed += 1
    return max(0, min(agreed, len(previous) - held, len(latest) - 1))


def to_send(agreed: int, latest: list[str], sent: list[str]) -> list[str]:
    """The words of `latest` to send now: its first `agreed` words, past the ones already `sent`. Nothing when
    the latest pass no longer agrees with what was sent: a delta cannot be taken back, and the final transcript
    (the final decode's own) corrects it."""
    matches_sent = all(normal(a) == normal(b) for a, b in zip(sent, latest, strict=False))
    return latest[len(sent) : agreed] if agreed > len(sent) and matches_sent else []


def settled(previous: list[str], latest: list[str], sent: list[str], held: int = 1) -> list[str]:
    """The words of `latest` to send now: those it and the `previous` pass agree on (`agreement`), past the ones
    already `sent`."""
    return to_send(agreement(previous, latest, held), latest, sent)


def confident(agreed: int, probabilities: tuple[float, ...], start: int, floor: float) -> int:
    """How far, from word `start`, the first `agreed` words run with a probability of at least `floor` each."""
    end = start
    while end < agreed and probabilities[end] >= floor:
        end += 1
    return end


def words_in_last(words: list[str], heard_s: float, last_s: float) -> int:
    """About how many of `words`, heard over `heard_s` seconds, were spoken in the last `last_s` of them (at
    the pass's own speaking rate; at least one)."""
    if heard_s <= last_s:
        return len(words)
    return max(1, math.ceil(len(words) * last_s / heard_s))


def aligned_prefix(sent: list[str] | tuple[str, ...], final: list[str]) -> int:
    """How many of `final`'s first words the words already `sent` stand for: the prefix of `final` at the least
    edit distance from `sent` (the longest on a tie)."""
    a = [normal(w) for w in sent]
    b = [normal(w) for w in final]
    row = list(range(len(b) + 1))  # distance from a[:i] to b[:k], for the current i
    for i, word in enumerate(a, 1):
        previous, row = row, [i] + [0] * len(b)
        for k in range(1, len(b) + 1):
            row[k] = min(previous[k] + 1, row[k - 1] + 1, previous[k - 1] + (word != b[k - 1]))
    best = min(row)
    return max(k for k, d in enumerate(row) if d == best)


class HeardPass(Protocol):
    """A live pass over an open turn: its text, heard from the turn's start up to `covered` (a sample offset)."""

    @property
    def covered(self) -> int: ...
    @property
    def text(self) -> str: ...
    @property
    def probabilities(self) -> tuple[float, ...] | None: ...


@dataclass(frozen=True)
class SettleRule:
    """When a word of a live pass is settled enough to send (a delta cannot be taken back: a word the final
    decode hears otherwise is wrong on the client's screen until the final transcript replaces it). Chosen on
    replayed passes (`benchmarks/partials_replay.py`)."""

    apart_s: float = 1.0  # a pass that heard at least this much less audio agrees on the word (and every pass
    after_s: float = 0.5  # since), having heard about this much speech after it
    # Sooner, where the engine gives each word's probability (Moonshine): a word at least `confident`, agreed
    # by every pass over the last `quick_apart_s` of audio, the earliest of which heard `quick_after_s` after it.
    confident: float = 0.6
    quick_apart_s: float = 0.1
    quick_after_s: float = 0.2


SETTLE = SettleRule()  # when a live word is settled enough to send
# ... when it binds the transcript: a confident word needs 0.95, passes over 0.3 s and 0.3 s of speech after it
SETTLE_BINDING = SettleRule(confident=0.95, quick_apart_s=0.3, quick_after_s=0.3)


def settle_rule(binding: bool) -> SettleRule:
    """The rule for a stream whose words sent live bind its transcript (`binding`), or not."""
    return SETTLE_BINDING if binding else SETTLE


def settled_count(
    passes: Sequence[HeardPass], start: int, sent: list[str], rule: SettleRule = SettleRule()
) -> int:
    """How many of the latest pass's (`passes[-1]`) first words are settled; `start` is the turn's first sample.
    A word two passes over nearly the same audio agree on, or one near the end of what they heard, is often wrong
    the same way twice."""
    latest = passes[-1]
    words = words_of(latest.text)

    def agreed_with(apart_s: float, after_s: float) -> int:
        earlier = [p for p in passes if p.covered <= latest.covered - apart_s * SAMPLE_RATE]
        if not earlier:
            return 0
        base = earlier[-1]
        previous = words_of(base.text)
        held = words_in_last(previous, (base.covered - start) / SAMPLE_RATE, after_s)
        agreed = agreement(previous, words, held)
        for later in passes:  # ... and so does every pass since: one that heard otherwise unsettles the word
            if base.covered < later.covered < latest.covered:
                agreed = min(agreed, agreement(words_of(later.text), words, held=0))
        return agreed

    count = agreed_with(rule.apart_s, rule.after_s)
    probabilities = latest.probabilities
    if probabilities is not None and len(probabilities) == len(words):
        quick = agreed_with(rule.quick_apart_s, rule.quick_after_s)
        count = max(count, confident(quick, probabilities, len(sent), rule.confident))
    return count
