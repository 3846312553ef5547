"""Live partial words replayed offline, to choose when a word is settled (`live.partials.SettleRule`).

Each turn of a conversation is decoded in process at the times the live stream would run its passes: the first
0.3 s after speech starts, then every `--interval` of audio (sooner where a pass costs little: the stream's own
`pass_interval`), never before the previous pass is done (its decode time is measured). Settle rules are then
compared on the very same passes, through the stream's own function (`settled_count`): the first word's delay
after the speech starts, the share of the words sent that the final decode heard otherwise (a delta cannot be
taken back: those are wrong on the client's screen until the final transcript replaces them), and what the final
transcript would have cost had it kept the words sent (`kept_sent_minus_off`: the contract before the final
transcript became the final decode's own).

Corpora (espeak-ng, 16 → 24 → 16 kHz as a realtime client sends them):
- `meeting`: the realtime benchmark's 12 lines three times over, voices rotated (36 turns);
- `heldout`: other sentences (the long-file ones) and Home Assistant's voice commands, other voices (22 turns).

    .venv/bin/python benchmarks/partials_replay.py [--models moonshine-tiny whisper-tiny.en] [--corpus meeting heldout]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.home_assistant import COMMANDS
from benchmarks.run import SENTENCES, bundled_home, percentile
from open_stt_server import catalog, hub
from open_stt_server.engines import load_engine
from open_stt_server.live.audio import PcmDecoder
from open_stt_server.live.partials import (
    SETTLE,
    SETTLE_BINDING,
    SettleRule,
    aligned_prefix,
    settled_count,
    to_send,
    words_of,
)
from open_stt_server.live.turns import Pass, pass_interval, pass_token_budget
from open_stt_server.settings import Settings
from open_stt_server.transcript import TranscribeOptions, Transcript
from tests.conftest import wer
from tests.conversations import Conversation, meeting
from tests.realtime_client import pcm16

SR = 16_000
PREFIX_S = 0.3  # the stream's prefix padding before speech
FIRST_PASS_S = 0.3  # the first pass waits for this much speech
SILENCE_S = 0.5  # the final hears the turn and the silence that ended it


def quick(confident: float, apart_s: float, after_s: float) -> SettleRule:
    """The 1 s rule, and words at least `confident` settled by every pass over `apart_s`, `after_s` after them."""
    return SettleRule(confident=confident, quick_apart_s=apart_s, quick_after_s=after_s)


RULES = {
    "shipped (realtime)": SETTLE,
    "shipped for Wyoming (words bind the transcript)": SETTLE_BINDING,
    "confident words >= 0.6, every pass over 0.2 s, 0.2 s after": quick(0.6, 0.2, 0.2),
    "confident words >= 0.8, every pass over 0.3 s, 0.3 s after (the rule before)": quick(0.8, 0.3, 0.3),
    "1 s apart, 1 s after (issue 23's first rule)": SettleRule(after_s=1.0, confident=2.0),
    "1 s apart, 0.5 s after, no confident words": SettleRule(confident=2.0),
    "confident words >= 0.5": quick(0.5, 0.3, 0.3),
    "0.5 s apart, 0.5 s after": SettleRule(apart_s=0.5, confident=2.0),
    "any word, every pass over 0.3 s, 0.3 s after": quick(0.0, 0.3, 0.3),
    "confident words >= 0.8, every pass over 0.2 s, 0.2 s after": quick(0.8, 0.2, 0.2),
    "any word, every pass over 0.2 s, 0.2 s after": quick(0.0, 0.2, 0.2),
    "confident words >= 0.6, every pass over 0.15 s, 0.15 s after": quick(0.6, 0.15, 0.15),
    "confident words >= 0.8, every pass over 0.15 s, 0.15 s after": quick(0.8, 0.15, 0.15),
}


@dataclass
class ReplayedTurn:
    reference: str
    onset: int  # where speech starts (sample)
    start: int  # where the stream's turn starts (the prefix padding before speech)
    passes: list[tuple[Pass, int]]  # each pass, and the sample time its result was ready
    final: str


def corpus(name: str) -> Conversation:
    if name == "meeting":
        return meeting(rounds=3)
    return meeting(voices=("en-gb", "en-us+m3", "en-us+f2"), lines=tuple(SENTENCES[:14]) + COMMANDS)


def replay_passes(model: str, talk: Conversation, interval_s: float) -> list[ReplayedTurn]:
    spec = catalog.lookup(model)
    engine = load_engine(spec, hub.resolve_weights(spec, download=False), Settings(cpu_threads=2))
    audio, _ = PcmDecoder(24_000, 2, 1).decode(pcm16(talk.samples, 24_000))

    def decode(samples: np.ndarray, live: bool = True) -> tuple[Transcript, float]:
        """As the stream decodes: a live pass at one temperature within its token budget, the final with
        Whisper's fallback."""
        seconds = len(samples) / SR
        options = TranscribeOptions(language="en", batched=False, fallback=not live,
                                    max_new_tokens=pass_token_budget(seconds) if live else None)  # fmt: skip
        started = time.perf_counter()
        segments = list(engine.start(samples, options).segments)
        return Transcript("transcribe", "en", seconds, segments), time.perf_counter() - started

    turns = []
    for turn in talk.turns:
        first, end = int(turn.start * SR), int(turn.end * SR)
        onset = first + int(np.argmax(np.abs(audio[first:end]) > 0.01))
        start = max(0, onset - int(PREFIX_S * SR))
        passes, at = [], onset + int(FIRST_PASS_S * SR)
        while at < end:
            heard, took = decode(audio[start:at])
            ready = at + int(took * SR)
            result = Pass.heard(at, heard, "en")
            if result.clean:  # the stream compares clean passes only
                passes.append((result, ready))
            at = max(at + int(pass_interval(interval_s, took) * SR), ready)
        final, _ = decode(audio[start : min(len(audio), end + int(SILENCE_S * SR))], live=False)
        turns.append(ReplayedTurn(turn.text, onset, start, passes, final.text))
    return turns


def with_partials(turn: ReplayedTurn, rule: SettleRule) -> tuple[list[str], float | None]:
    """The words the stream sends live under `rule`, and when the first went out."""
    sent: list[str] = []
    heard: list[Pass] = []
    first = None
    for result, ready in turn.passes:
        heard.append(result)
        new = to_send(settled_count(heard, turn.start, sent, rule), words_of(result.text), sent)
        if new:
            first = first if first is not None else (ready - turn.onset) / SR
            sent += new
    return sent, first


def compare(turns: list[ReplayedTurn]) -> dict:
    reference = " ".join(t.reference for t in turns)
    off = wer(reference, " ".join(t.final for t in turns))
    out: dict = {"turns": len(turns), "wer_partials_off": round(off, 4)}
    for name, rule in RULES.items():
        results = [(with_partials(t, rule), words_of(t.final)) for t in turns]
        firsts = [f for (_, f), _ in results if f is not None]
        sent = sum(len(words) for (words, _), _ in results)
        contradicted = sum(  # sent words the final decode heard otherwise (edits against its matching prefix)
            round(
                wer("".join(final[: aligned_prefix(words, final)]) or "-", "".join(words))
                * max(1, aligned_prefix(words, final))
            )
            for (words, _), final in results
            if words
        )
        kept = [
            ("".join(w + final[aligned_prefix(w, final) :]) if w else "".join(final))
            for (w, _), final in results
        ]
        out[name] = {
            "first_word_p50_s": round(statistics.median(firsts), 2) if firsts else None,
            "first_word_p95_s": round(percentile(firsts, 95), 2) if firsts else None,
            "turns_with_words": len(firsts),
            "words_sent": sent,
            "sent_contradicted_share": round(contradicted / sent, 4) if sent else None,
            "kept_sent_minus_off": round(wer(reference, " ".join(kept)) - off, 4),
        }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["moonshine-tiny", "whisper-tiny.en"])
    p.add_argument("--corpus", nargs="+", default=["meeting", "heldout"], choices=["meeting", "heldout"])
    p.add_argument(
        "--interval", type=float, default=0.3, help="seconds of audio between passes (delay minimal)"
    )
    args = p.parse_args()
    bundled_home(Path(tempfile.mkdtemp()))
    out: dict = {"interval_s": args.interval}
    for model in args.models:
        for name in args.corpus:
            out[f"{model} / {name}"] = compare(replay_passes(model, corpus(name), args.interval))
            print(model, name, json.dumps(out[f"{model} / {name}"]), file=sys.stderr, flush=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
