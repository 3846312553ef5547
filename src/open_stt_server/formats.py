"""Transcript → response bodies (json, text, srt, vtt, verbose_json) and Server-Sent Events."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from open_stt_server.diarization.speakers import DiarizedSegment
from open_stt_server.languages import language_name
from open_stt_server.transcript import Segment, Transcript, Word, text_pieces

ResponseFormat = Literal["json", "text", "srt", "vtt", "verbose_json", "diarized_json"]
RESPONSE_FORMATS: tuple[str, ...] = ("json", "text", "srt", "vtt", "verbose_json", "diarized_json")
CONTENT_TYPES = {
    "json": "application/json",
    "verbose_json": "application/json",
    "diarized_json": "application/json",
    "text": "text/plain; charset=utf-8",
    "srt": "text/plain; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
}

# Subtitle cues: at most this long on screen and this many characters (two lines of 42).
MAX_CUE_S = 7.0
MAX_CUE_CHARS = 84
SENTENCE_END = (".", "!", "?", "。", "！", "？", "…")
CLAUSE_END = (",", ";", ":", "，", "、", "；")
AUDIO_TOKENS_PER_S = 50  # Whisper's encoder: 1500 positions per 30 s


def render(
    transcript: Transcript,
    response_format: str,
    *,
    words: bool = False,
    logprobs: bool = False,
    usage: bool = True,
    diarized: list[DiarizedSegment] | None = None,
) -> tuple[bytes, str]:
    """The body and content type for a finished transcript (`diarized`: its segments with speakers)."""
    if response_format == "diarized_json":
        body = json.dumps(diarized_json(transcript, diarized or []), ensure_ascii=False)
    elif response_format == "text":
        body = transcript.text + "\n" if transcript.text else ""
    elif response_format == "srt":
        body = to_srt(subtitle_cues(transcript))
    elif response_format == "vtt":
        body = to_vtt(subtitle_cues(transcript))
    elif response_format == "verbose_json":
        body = json.dumps(verbose_json(transcript, words=words, usage=usage), ensure_ascii=False)
    else:
        payload: dict = {"text": transcript.text}
        if logprobs:
            payload["logprobs"] = word_logprobs(transcript.words)
        if usage:
            payload["usage"] = duration_usage(transcript.duration)
        body = json.dumps(payload, ensure_ascii=False)
    return body.encode("utf-8"), CONTENT_TYPES[response_format]


def duration_usage(duration_s: float) -> dict:
    return {"type": "duration", "seconds": math.ceil(duration_s)}


def verbose_json(transcript: Transcript, *, words: bool, usage: bool = True) -> dict:
    out: dict = {
        "task": transcript.task,
        "language": language_name(transcript.language),
        "duration": round(transcript.duration, 3),
        "text": transcript.text,
        "segments": [segment_json(s) for s in transcript.segments],
    }
    if words:
        out["words"] = [{"word": w.word.strip(), "start": w.start, "end": w.end} for w in transcript.words]
    if usage:
        out["usage"] = duration_usage(transcript.duration)
    return out


def segment_json(s: Segment) -> dict:
    return {
        "id": s.id,
        "seek": s.seek,
        "start": s.start,
        "end": s.end,
        "text": s.text,
        "tokens": list(s.tokens),
        "temperature": s.temperature,
        "avg_logprob": s.avg_logprob,
        "compression_ratio": s.compression_ratio,
        "no_speech_prob": s.no_speech_prob,
    }


def diarized_json(transcript: Transcript, segments: list[DiarizedSegment]) -> dict:
    """OpenAI's `TranscriptionDiarized`."""
    return {
        "task": "transcribe",
        "duration": round(transcript.duration, 3),
        "text": diarized_text(segments),
        "segments": [diarized_segment_json(s) for s in segments],
        "usage": duration_usage(transcript.duration),
    }


def diarized_segment_json(s: DiarizedSegment) -> dict:
    return {
        "type": "transcript.text.segment",
        "id": s.id,
        "start": s.start,
        "end": s.end,
        "text": s.text.strip(),
        "speaker": s.speaker,
    }


def diarized_text(segments: Iterable[DiarizedSegment]) -> str:
    return "".join(text_pieces(s.text for s in segments))


def word_logprobs(words: Iterable[Word]) -> list[dict]:
    """Whisper gives a probability per word (the mean over its tokens); reported as one entry per word."""
    return [
        {"token": w.word, "logprob": math.log(max(w.probability, 1e-12)), "bytes": list(w.word.encode())}
        for w in words
    ]


# -- subtitles ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    text: str


def subtitle_cues(transcript: Transcript) -> list[Cue]:
    cues: list[Cue] = []
    for seg in transcript.segments:
        text = seg.text.strip()
        if not text:
            continue
        too_big = seg.end - seg.start > MAX_CUE_S or len(text) > MAX_CUE_CHARS
        if too_big and seg.words:
            cues.extend(_split_words(seg.words))
        elif too_big:
            cues.extend(_split_text(seg.start, seg.end, text))
        else:
            cues.append(Cue(seg.start, seg.end, text))
    return _monotonic(cues)


def _split_words(words: tuple[Word, ...]) -> list[Cue]:
    """Break a long segment into cues at sentence ends, else clause ends, else when a cue is full."""
    cues: list[Cue] = []
    current: list[Word] = []

    def flush() -> None:
        if current:
            text = "".join(w.word for w in current).strip()
            if text:
                cues.append(Cue(current[0].start, current[-1].end, text))
            current.clear()

    for word in words:
        if current:
            span = word.end - current[0].start
            chars = len("".join(w.word for w in current) + word.word)
            if span > MAX_CUE_S or chars > MAX_CUE_CHARS:
                flush()
        current.append(word)
        token = word.word.strip()
        long_enough = current[-1].end - current[0].start > MAX_CUE_S / 2
        if token.endswith(SENTENCE_END) or (long_enough and token.endswith(CLAUSE_END)):
            flush()
    flush()
    return cues


def _split_text(start: float, end: float, text: str) -> list[Cue]:
    """A long segment without word times (Voxtral): cut its text at sentence or clause ends into readable cues,
    each given a share of the segment's time in proportion to its length. Times inside the segment are an
    estimate; the segment's own start and end stay exact."""
    separator = " " if " " in text else ""  # scripts without spaces are cut between characters
    pieces: list[str] = []
    for unit in text.split(" ") if separator else list(text):
        if (
            not pieces
            or len(pieces[-1]) + len(separator) + len(unit) > MAX_CUE_CHARS
            or (pieces[-1].endswith(SENTENCE_END + CLAUSE_END) and len(pieces[-1]) > MAX_CUE_CHARS // 4)
        ):
            pieces.append(unit)
        else:
            pieces[-1] += separator + unit
    pieces = [p.strip() for p in pieces if p.strip()]
    total = sum(len(p) for p in pieces) or 1
    cues, at = [], start
    for piece in pieces:
        until = at + (end - start) * len(piece) / total
        cues.append(Cue(round(at, 3), round(until, 3), piece))
        at = until
    return cues


def _monotonic(cues: list[Cue]) -> list[Cue]:
    """Cues never overlap or run backwards, and every cue lasts at least a frame."""
    fixed: list[Cue] = []
    for cue in cues:
        start = max(cue.start, fixed[-1].end if fixed else 0.0)
        end = max(cue.end, start + 0.04)
        fixed.append(Cue(start, end, cue.text))
    return fixed


def timestamp(seconds: float, separator: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def to_srt(cues: list[Cue]) -> str:
    blocks = [
        f"{i}\n{timestamp(c.start, ',')} --> {timestamp(c.end, ',')}\n{c.text}\n"
        for i, c in enumerate(cues, 1)
    ]
    return "\n".join(blocks)


def to_vtt(cues: list[Cue]) -> str:
    blocks = ["WEBVTT\n"]
    blocks += [f"{timestamp(c.start, '.')} --> {timestamp(c.end, '.')}\n{c.text}\n" for c in cues]
    return "\n".join(blocks)


# -- Server-Sent Events ------------------------------------------------------------------------------------


def sse(event: dict, name: str | None = None) -> bytes:
    head = f"event: {name}\n" if name else ""
    return f"{head}data: {json.dumps(event, ensure_ascii=False)}\n\n".encode()


def delta_event(delta: str, logprobs: list[dict] | None = None, segment_id: str | None = None) -> bytes:
    event: dict = {"type": "transcript.text.delta", "delta": delta}
    if logprobs is not None:
        event["logprobs"] = logprobs
    if segment_id is not None:
        event["segment_id"] = segment_id
    return sse(event)


def done_event(transcript: Transcript, logprobs: bool = False, text: str | None = None) -> bytes:
    output_tokens = sum(len(s.tokens) for s in transcript.segments)
    input_tokens = math.ceil(transcript.duration * AUDIO_TOKENS_PER_S)
    event: dict = {
        "type": "transcript.text.done",
        "text": transcript.text if text is None else text,
        "usage": {
            "type": "tokens",
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
            "input_token_details": {"audio_tokens": input_tokens, "text_tokens": 0},
        },
    }
    if logprobs:
        event["logprobs"] = word_logprobs(transcript.words)
    return sse(event)


def error_event(envelope: dict) -> bytes:
    return sse({"type": "error", **envelope}, name="error")
