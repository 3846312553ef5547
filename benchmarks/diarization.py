"""Speaker labels: accuracy on conversations with known turns, and the time diarization adds to a request.

Accuracy runs in-process on the server's own code (Whisper engine with word times, the GE2E diarizer, the
segment labeller): word-level speaker accuracy is the share of words whose speaker is right under the best
mapping of labels to true speakers (a word's true speaker is the turn holding its midpoint); the diarization
error rate comes from `pyannote.metrics` on the diarizer's turns against the true turns (collar 0.25 s as is
usual, and 0). Overhead goes through the real server on loopback: the same 5-minute conversation as
`response_format=json` and as `diarized_json`, alternated, median of each; the ratio is diarized ÷ plain.

    .venv/bin/python benchmarks/diarization.py [--model whisper-base] [--minutes 5] [--repeats 2]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.run import bundled_home
from open_stt_server.diarization import DiarizationRequest, load_diarizer
from open_stt_server.diarization.speakers import SegmentLabeller
from open_stt_server.transcript import TranscribeOptions, Transcript
from tests.conftest import start_server, whisper_engine
from tests.conversations import VOICES, Conversation, meeting, recorded

SETS = {
    "3 espeak voices, 0.5 s pauses": lambda: meeting(gap_s=0.5),
    "3 espeak voices, back to back": lambda: meeting(gap_s=0),
    "2 espeak voices": lambda: meeting(voices=VOICES[:2]),
    "5 espeak voices": lambda: meeting(voices=(*VOICES, "en-us+m7", "en+Annie"), rounds=2),
    "3 recorded voices, pauses": lambda: recorded(0.6),
    "3 recorded voices, back to back": lambda: recorded(0),
}


def best_mapping_accuracy(pairs: list[tuple[str, str]], truth_speakers: list[str]) -> float:
    labels = sorted({b for _, b in pairs})
    speakers = truth_speakers + [None] * max(0, len(labels) - len(truth_speakers))
    best = max(
        sum(1 for a, b in pairs if mapping[b] == a)
        for mapping in (
            dict(zip(labels, p, strict=True)) for p in itertools.permutations(speakers, len(labels))
        )
    )
    return best / len(pairs)


def word_accuracy(conversation: Conversation, transcript: Transcript, labeller: SegmentLabeller) -> float:
    pairs = []
    for segment in transcript.segments:
        pieces = labeller.label(segment)
        words = [w for w in segment.words or () if w.word.strip()]
        # split_by_speaker keeps word order: walk the pieces' texts to give each word its piece's speaker
        at = 0
        for piece in pieces:
            take = len(piece.text.split())
            for word in words[at : at + take]:
                truth = conversation.speaker_at((word.start + word.end) / 2)
                if truth is not None:
                    pairs.append((truth, piece.speaker))
            at += take
    return best_mapping_accuracy(pairs, conversation.speakers)


def der(conversation: Conversation, turns) -> dict[str, float]:
    from pyannote.core import Annotation, Segment
    from pyannote.metrics.diarization import DiarizationErrorRate

    reference, hypothesis = Annotation(), Annotation()
    for t in conversation.turns:
        reference[Segment(t.start, t.end)] = t.speaker
    for t in turns:
        hypothesis[Segment(t.start, t.end)] = t.speaker
    return {
        f"collar_{collar:g}": round(DiarizationErrorRate(collar=collar)(reference, hypothesis), 4)
        for collar in (0.25, 0.0)
    }


def accuracy(model: str, home: Path) -> dict:
    engine = whisper_engine(home, model)
    diarizer = load_diarizer("ge2e")
    out = {}
    for name, make in SETS.items():
        conversation = make()
        started = time.perf_counter()
        turns = diarizer.diarize(conversation.samples, DiarizationRequest())
        took = time.perf_counter() - started
        decoding = engine.start(conversation.samples, TranscribeOptions(language="en", word_timestamps=True))
        transcript = Transcript(
            "transcribe", decoding.language, conversation.duration, list(decoding.segments)
        )
        out[name] = {
            "seconds": round(conversation.duration, 1),
            "speakers": len(conversation.speakers),
            "found": len({t.speaker for t in turns}),
            "word_speaker_accuracy": round(
                word_accuracy(conversation, transcript, SegmentLabeller(turns)), 4
            ),
            "der": der(conversation, turns),
            "diarize_seconds": round(took, 2),
        }
        print(name, out[name], file=sys.stderr)
    return out


def overhead(model: str, home: Path, minutes: float, repeats: int, tmp: Path) -> dict:
    rounds = max(1, round(minutes * 60 / 46))
    conversation = meeting(rounds=rounds, gap_s=0.5)
    path = conversation.write(tmp / "conversation.wav")
    server = start_server(home, tmp, "--model", model)
    times: dict[str, list[float]] = {"json": [], "diarized_json": []}
    try:
        for _ in range(repeats):
            for fmt in times:
                started = time.perf_counter()
                with path.open("rb") as fh:
                    r = httpx.post(server.base_url + "/audio/transcriptions", files={"file": fh},
                                   data={"model": model, "response_format": fmt}, timeout=3600)  # fmt: skip
                r.raise_for_status()
                times[fmt].append(time.perf_counter() - started)
                print(fmt, round(times[fmt][-1], 2), file=sys.stderr)
        speakers = len({s["speaker"] for s in r.json()["segments"]})
    finally:
        server.stop()
    plain, diarized = statistics.median(times["json"]), statistics.median(times["diarized_json"])
    return {
        "audio_seconds": round(conversation.duration, 1),
        "json_seconds": [round(t, 2) for t in times["json"]],
        "diarized_json_seconds": [round(t, 2) for t in times["diarized_json"]],
        "speakers_found": speakers,
        "ratio_diarized_vs_plain": round(diarized / plain, 3),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="whisper-base")
    p.add_argument("--minutes", type=float, default=5)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--only", nargs="*", default=["accuracy", "overhead"])
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp())
    home = bundled_home(tmp)
    result: dict = {"model": args.model}
    if "accuracy" in args.only:
        result["accuracy"] = accuracy(args.model, home)
    if "overhead" in args.only:
        result["overhead"] = overhead(args.model, home, args.minutes, args.repeats, tmp)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
