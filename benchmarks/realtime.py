"""Realtime sessions (WS /v1/realtime) at real-time pace, against the file API on the same audio in the same run.

For each model: a conversation of known turns (espeak-ng voices, 1 s pauses) is streamed as 24 kHz PCM16 in 40 ms
chunks at real-time pace.

- latency: `completed` − `speech_stopped` per turn (both read on loopback as they arrive), p50 / p95, ÷ the file
  API's latency for the same turn's audio (the slice between speech_started's `audio_start_ms` and
  speech_stopped's `audio_end_ms`, posted as a 24 kHz WAV — the audio the client sent — right after the session,
  one at a time);
- the same with 4 sessions at once (errors counted);
- live partials (`delay: "minimal"`): first delta after the true start of speech (when the client sent it);
- WER of the realtime transcripts and of the file API on the same turns, against the known text;
- short file requests' p95 while 4 sessions (`--sessions`) stream ÷ their p95 on an idle server.

    .venv/bin/python benchmarks/realtime.py [--models whisper-base whisper-tiny.en] [--only latency ...]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import sys
import tempfile
import time
import wave
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.run import bundled_home, percentile
from tests.conftest import SAMPLES, start_server, wer
from tests.conversations import LINES, Conversation, meeting
from tests.realtime_client import open_session, pcm16, silence, transcription_session

CHUNK_S = 0.04
STAGGER_S = 1.3
RATE = 24_000


def wav_bytes(samples: np.ndarray, rate: int = RATE) -> bytes:
    """16 kHz samples as a WAV file at `rate` (by default the session's 24 kHz: the file API hears the audio
    the realtime client sent, resampled by the server alike)."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm16(samples, rate))
    return out.getvalue()


async def stream_session(
    server, model: str, talk: Conversation, partials: bool = False, lead_s: float = 0.0
) -> dict:
    """Stream `talk` at real-time pace, after `lead_s` of silence; the events with their arrival times, and when
    each audio offset left."""
    session = await open_session(server, f"intent=transcription&model={model}")
    transcription = {"model": model, **({"delay": "minimal"} if partials else {})}
    await session.send("session.update", session=transcription_session(transcription=transcription))
    await session.next("session.updated")
    audio = np.concatenate([silence(lead_s), talk.samples, silence(2.0)])
    pcm = pcm16(audio, RATE)
    chunk = int(RATE * CHUNK_S) * 2
    turns = len(talk.turns)
    sent_at: list[tuple[float, float]] = []  # (audio seconds sent so far, wall time)

    async def reader() -> None:
        while len(session.of("conversation.item.input_audio_transcription.completed")) < turns:
            await session.next(timeout=120)

    reading = asyncio.create_task(reader())
    started = time.monotonic()
    for n, i in enumerate(range(0, len(pcm), chunk)):
        await session.send("input_audio_buffer.append", audio=base64.b64encode(pcm[i : i + chunk]).decode())
        sent_at.append(((i + chunk) / 2 / RATE, time.monotonic()))
        delay = started + (n + 1) * CHUNK_S - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    try:
        await asyncio.wait_for(reading, 120)
    finally:
        await session.ws.close()
    return {"events": session.events, "sent_at": sent_at, "audio": audio}


def turn_table(result: dict) -> list[dict]:
    events = result["events"]
    by_item: dict[str, dict] = {}
    for e in events:
        if e.get("item_id"):
            by_item.setdefault(e["item_id"], {}).setdefault(e["type"], e)  # the first of each kind
    rows = []
    for item, seen in by_item.items():
        if "conversation.item.input_audio_transcription.completed" not in seen:
            continue
        started = seen["input_audio_buffer.speech_started"]
        stopped = seen["input_audio_buffer.speech_stopped"]
        completed = seen["conversation.item.input_audio_transcription.completed"]
        rows.append({
            "item": item,
            "start_ms": started["audio_start_ms"],
            "end_ms": stopped["audio_end_ms"],
            "latency_s": completed["_at"] - stopped["_at"],
            "first_delta_at": seen.get("conversation.item.input_audio_transcription.delta", {}).get("_at"),
            "stopped_at": stopped["_at"],
            "transcript": completed["transcript"],
        })  # fmt: skip
    return sorted(rows, key=lambda r: r["start_ms"])


def sent_time(result: dict, audio_s: float) -> float:
    for seconds, at in result["sent_at"]:
        if seconds >= audio_s:
            return at
    return result["sent_at"][-1][1]


def file_latencies(server, model: str, audio: np.ndarray, rows: list[dict]) -> list[tuple[float, str]]:
    out = []
    for row in rows:
        piece = audio[int(row["start_ms"] * 16) : int(row["end_ms"] * 16)]
        started = time.perf_counter()
        r = httpx.post(server.base_url + "/audio/transcriptions", files={"file": ("t.wav", wav_bytes(piece))},
                       data={"model": model}, timeout=300)  # fmt: skip
        r.raise_for_status()
        out.append((time.perf_counter() - started, r.json()["text"]))
    return out


def truth_for(talk: Conversation, rows: list[dict]) -> list[str]:
    """The known text of each detected turn (the true turn with most overlap)."""
    texts = []
    for row in rows:
        start, end = row["start_ms"] / 1000, row["end_ms"] / 1000
        best = max(talk.turns, key=lambda t: min(end, t.end) - max(start, t.start))
        texts.append(best.text)
    return texts


def latency(server, model: str, talk: Conversation) -> dict:
    result = asyncio.run(stream_session(server, model, talk))
    rows = turn_table(result)
    files = file_latencies(server, model, result["audio"], rows)
    rt = [r["latency_s"] for r in rows]
    fl = [f for f, _ in files]
    truth = truth_for(talk, rows)
    realtime_wer = wer(" ".join(truth), " ".join(r["transcript"] for r in rows))
    file_wer = wer(" ".join(truth), " ".join(t for _, t in files))
    return {
        "turns": len(rows),
        "expected_turns": len(talk.turns),
        "realtime_p50_s": round(percentile(rt, 50), 3),
        "realtime_p95_s": round(percentile(rt, 95), 3),
        "file_p50_s": round(percentile(fl, 50), 3),
        "file_p95_s": round(percentile(fl, 95), 3),
        "ratio_p50": round(percentile(rt, 50) / percentile(fl, 50), 3),
        "ratio_p95": round(percentile(rt, 95) / percentile(fl, 95), 3),
        "realtime_wer": round(realtime_wer, 4),
        "file_wer": round(file_wer, 4),
        "wer_difference": round(realtime_wer - file_wer, 4),
    }


async def concurrent(server, model: str, talk: Conversation, sessions: int) -> list:
    """`sessions` at once, each starting 1.3 s after the one before (people do not stop talking in lockstep)."""
    return await asyncio.gather(
        *(stream_session(server, model, talk, lead_s=STAGGER_S * k) for k in range(sessions)),
        return_exceptions=True,
    )


def four_sessions(server, model: str, talk: Conversation) -> dict:
    results = asyncio.run(concurrent(server, model, talk, 4))
    failures = [r for r in results if isinstance(r, BaseException)]
    rows = [row for r in results if not isinstance(r, BaseException) for row in turn_table(r)]
    errors = sum(
        e["type"] == "error" for r in results if not isinstance(r, BaseException) for e in r["events"]
    )
    lat = [r["latency_s"] for r in rows]
    return {
        "sessions": 4,
        "failed_sessions": len(failures),
        "error_events": errors,
        "turns": len(rows),
        "realtime_p50_s": round(percentile(lat, 50), 3) if lat else None,
        "realtime_p95_s": round(percentile(lat, 95), 3) if lat else None,
    }


def partials(server, model: str, talk: Conversation) -> dict:
    result = asyncio.run(stream_session(server, model, talk, partials=True))
    rows = turn_table(result)
    waits = []
    for row, turn in zip(rows, talk.turns, strict=False):
        if row["first_delta_at"] is not None:
            waits.append(row["first_delta_at"] - sent_time(result, turn.start))
    before_stop = sum(
        1 for r in rows if r["first_delta_at"] is not None and r["first_delta_at"] < r["stopped_at"]
    )
    truth = truth_for(talk, rows)
    return {
        "turns": len(rows),
        "turns_with_words_before_speech_stopped": before_stop,
        "first_delta_after_speech_start_p50_s": round(percentile(waits, 50), 3) if waits else None,
        "first_delta_after_speech_start_p95_s": round(percentile(waits, 95), 3) if waits else None,
        "realtime_p50_s": round(percentile([r["latency_s"] for r in rows], 50), 3),
        "wer": round(wer(" ".join(truth), " ".join(r["transcript"] for r in rows)), 4),
    }


def short_p95(server, model: str, seconds: float) -> float:
    clips = sorted((SAMPLES / "en").glob("*.wav"))
    times = []
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline or len(times) < 6:
        clip = clips[i % len(clips)]
        i += 1
        started = time.perf_counter()
        r = httpx.post(server.base_url + "/audio/transcriptions", files={"file": clip.open("rb")},
                       data={"model": model}, timeout=300)  # fmt: skip
        r.raise_for_status()
        times.append(time.perf_counter() - started)
    return percentile(times, 95)


def fairness(
    server, model: str, talk: Conversation, sessions: int = 4, session_model: str | None = None
) -> dict:
    """Short files on `model`, idle and while `sessions` stream (on `session_model`, else the same model)."""
    idle = short_p95(server, model, 20)

    async def busy() -> float:
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(concurrent(server, session_model or model, talk, sessions))
        await asyncio.sleep(3)
        loaded = await loop.run_in_executor(None, short_p95, server, model, talk.duration - 8)
        await task
        return loaded

    loaded = asyncio.run(busy())
    return {
        "sessions_on": session_model or model,
        "idle_p95_s": round(idle, 3),
        f"with_{sessions}_sessions_p95_s": round(loaded, 3),
        "ratio": round(loaded / idle, 3),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="*", default=["whisper-base", "whisper-tiny.en"])
    p.add_argument("--only", nargs="*", default=["latency", "four", "partials", "fairness"])
    p.add_argument("--lines", type=int, default=len(LINES))
    p.add_argument("--rounds", type=int, default=1, help="the lines this many times over, voices rotated")
    p.add_argument("--sessions", type=int, default=4, help="sessions streaming during the fairness probe")
    p.add_argument(
        "--session-model", help="the fairness probe's sessions use this model (loaded beside --models)"
    )
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp())
    home = bundled_home(tmp)
    talk = meeting(lines=LINES[: args.lines], gap_s=1.0, rounds=args.rounds)
    loaded = args.models + [m for m in [args.session_model] if m and m not in args.models]
    server = start_server(home, tmp, "--model", ",".join(loaded))
    out: dict = {"audio_seconds": round(talk.duration, 1), "turns": len(talk.turns)}
    try:
        for model in args.models:
            figures: dict = {}
            if "latency" in args.only:
                figures["one_session"] = latency(server, model, talk)
            if "four" in args.only:
                figures["four_sessions"] = four_sessions(server, model, talk)
            if "partials" in args.only:
                figures["live_partials"] = partials(server, model, talk)
            if "fairness" in args.only:
                figures["short_files_with_sessions"] = fairness(
                    server, model, talk, args.sessions, args.session_model
                )
            out[model] = figures
            print(model, json.dumps(figures), file=sys.stderr)
    finally:
        server.stop()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
