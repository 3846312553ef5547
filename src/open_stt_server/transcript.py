"""The shared vocabulary between engines and response formats."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

Task = Literal["transcribe", "translate"]

# Whisper's fallback schedule: OpenAI's `temperature=0` means "start greedy, retry hotter when the output looks bad".
FALLBACK_TEMPERATURES: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


@dataclass(frozen=True)
class Word:
    start: float
    end: float
    word: str
    probability: float


@dataclass(frozen=True)
class Segment:
    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: tuple[int, ...]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    words: tuple[Word, ...] | None = None
    # The probability of each word of `text` (as split at spaces), where the engine knows it without word times
    # (Moonshine): live partials may send a confident word sooner.
    word_probabilities: tuple[float, ...] | None = None


@dataclass(frozen=True)
class TranscribeOptions:
    task: Task = "transcribe"
    language: str | None = None  # ISO 639-1 code; None = detect
    prompt: str | None = None
    hotwords: str | None = None  # words to bias recognition towards (Whisper: a hint ahead of the prompt)
    temperature: float = 0.0
    word_timestamps: bool = False
    vad_filter: bool = False
    vad_min_silence_ms: int = 2000
    vad_threshold: float = 0.5
    vad_speech_pad_ms: int = 400
    beam_size: int = 5
    # None = let the engine decide (long files take the batched path when the server allows it)
    batched: bool | None = None
    fallback: bool = True  # temperature 0 retries hotter on a bad decode; off for quick speculative passes
    early_text: bool = False  # the client streams: text early is worth a little total time (long files)
    max_new_tokens: int | None = None  # a decode stops after this many tokens (a window, for Whisper)
    # The caller reads segments' times (verbose_json, subtitles, speakers): long audio is then cut into
    # sentence-sized segments at word times; without it only the text is read, and no word alignment is paid for.
    segment_times: bool = True

    @property
    def temperatures(self) -> tuple[float, ...]:
        return FALLBACK_TEMPERATURES if self.temperature == 0 and self.fallback else (self.temperature,)


COMPRESSION_RATIO_LIMIT = 2.4  # Whisper's own threshold for "this text repeats itself"
LOGPROB_LIMIT = -1.0  # ... and for "this decode is unsure", unless the window holds no speech
NO_SPEECH_LIMIT = 0.6


def accepted_at_first_try(segment: Segment) -> bool:
    """The decode that gave `segment` passed Whisper's checks at its first temperature: a decode with temperature
    fallback would have kept it as it is."""
    unsure = segment.avg_logprob < LOGPROB_LIMIT and segment.no_speech_prob <= NO_SPEECH_LIMIT
    return segment.compression_ratio <= COMPRESSION_RATIO_LIMIT and not unsure


@dataclass
class Transcript:
    task: Task
    language: str
    duration: float
    segments: list[Segment] = field(default_factory=list)

    @classmethod
    def so_far(
        cls, options: TranscribeOptions, language: str | None, duration: float, segments: list[Segment]
    ) -> Transcript:
        """A request's transcript from what its decoding has produced (a copy of the segment list)."""
        return cls(task=options.task, language=language or "", duration=duration, segments=list(segments))

    @property
    def text(self) -> str:
        return "".join(text_pieces(s.text for s in self.segments))

    @property
    def words(self) -> list[Word]:
        return [w for s in self.segments for w in (s.words or ())]


def text_pieces(texts: Iterable[str], first: bool = True) -> Iterator[str]:
    """Segment texts as pieces that concatenate to the transcript.

    Whisper segment texts carry their own leading space (none for CJK): keep it between pieces, drop it
    before the very first one and drop trailing space everywhere, so streamed deltas join to exactly the
    text a non-streaming request returns.
    """
    for text in texts:
        piece = text.rstrip()
        if first:
            piece = piece.lstrip()
            if not piece:
                continue
            first = False
        yield piece
