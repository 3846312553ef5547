"""Home Assistant's door, side by side with `wyoming-faster-whisper` (Home Assistant's own add-on, same engine, the
same CTranslate2 weights directory, the same CPU threads), in one run per model.

- `wyoming-bench` (third-party) against both servers with the audio sent at once (non_streaming): total time,
  WER; the servers take turns, each order `--at-once-pairs` times; ratio = mean of our median total times ÷ mean
  of theirs;
- `wyoming-bench` streaming mode against ours (theirs does not advertise streaming): time to the first chunk;
- our own client (the `wyoming` library's) at real-time pace with 0.5 s of trailing silence, as Home Assistant sends
  a voice command, against both: the final `transcript` after `audio-stop` (p50), the first `transcript-chunk`
  after the first audio, WER.

    .venv/bin/python benchmarks/home_assistant.py [--models whisper-tiny.en whisper-base] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wyoming.asr import Transcribe

from benchmarks.run import bundled_home
from open_stt_server import catalog, hub
from tests.conftest import SAMPLES, free_port, server_env, start_server, wer
from tests.wyoming_client import read_pcm, transcribe

COMMANDS = (
    "Turn on the kitchen lights.",
    "Set a timer for ten minutes.",
    "What is the weather like tomorrow?",
    "Close the garage door and lock the front door.",
    "Play some relaxing music in the living room.",
    "Turn off all the lights in the bedroom.",
    "Add milk and eggs to the shopping list.",
    "Dim the hallway lights to thirty percent.",
)


def build_corpus(folder: Path) -> list[tuple[Path, str]]:
    """Voice commands (espeak-ng) and the real English recordings of pytest-audioeval, 16 kHz 16-bit mono."""
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for index, text in enumerate(COMMANDS):
        raw = folder / f"raw_{index}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(raw), text], check=True)
        items.append((raw, text))
    items += [
        (wav, wav.with_suffix(".txt").read_text().strip()) for wav in sorted((SAMPLES / "en").glob("*.wav"))
    ]
    corpus = []
    for index, (source, text) in enumerate(items):
        out = folder / f"clip_{index:02d}.wav"
        subprocess.run(["sox", "-q", str(source), "-r", "16000", "-c", "1", "-b", "16", "-e", "signed", str(out)],
                       check=True)  # fmt: skip
        out.with_suffix(".txt").write_text(text + "\n")
        corpus.append((out, text))
    for raw in folder.glob("raw_*.wav"):
        raw.unlink()
    return corpus


def wait_for_port(port: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise RuntimeError(f"nothing listens on {port}")


def bench(servers: list[str], corpus: Path, mode: str, rounds: int, extra: list[str]) -> dict[str, dict]:
    """wyoming-bench's figures per server: {host:port: {"total_median_ms", "total_mean_ms", "ttft_median_ms",
    "wer", "ok"}}."""
    command = [str(Path(sys.executable).parent / "wyoming-bench"), "stt", *servers, "--corpus", str(corpus),
               "--mode", mode, "--rounds", str(rounds), "--config", json.dumps({"language": "en"}), *extra]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, timeout=1800).stdout
    figures: dict[str, dict] = {}
    current = None
    for line in out.splitlines():
        if match := re.match(r"Server: (\S+)", line):
            current = figures.setdefault(match.group(1), {})
        elif current is not None and (
            match := re.match(r"\s+(Total|TTFT) \(ms\)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)", line)
        ):
            key = match.group(1).lower()
            current[f"{key}_mean_ms"], current[f"{key}_median_ms"] = (
                float(match.group(3)),
                float(match.group(4)),
            )
        elif current is not None and (match := re.search(r"WER=([\d.]+)%", line)):
            current["wer"] = float(match.group(1)) / 100
        elif current is not None and (match := re.match(r"\[\w+\] ok=(\d+) fail=(\d+)", line)):
            current["ok"], current["failed"] = int(match.group(1)), int(match.group(2))
    return figures


async def paced(port: int, corpus: list[tuple[Path, str]], model: str | None) -> dict:
    """Home Assistant's way: real-time pace, 0.5 s of trailing silence; one utterance at a time."""
    after_stop, first_chunk, refs, hyps, failed = [], [], [], [], 0
    for path, text in corpus:
        pcm, rate, width, channels = read_pcm(path)
        request = Transcribe(name=model, language="en")
        try:
            answer = await asyncio.wait_for(
                transcribe("127.0.0.1", port, pcm, rate, width, channels, realtime=True, trailing_silence_s=0.5,
                           request=request), len(pcm) / (rate * width * channels) + 60)  # fmt: skip
        except (asyncio.TimeoutError, ConnectionError):
            failed += 1
            continue
        if answer.first_at("transcript") is None:
            failed += 1
            continue
        after_stop.append(answer.first_at("transcript") - answer.audio_stop_at)
        chunk = answer.first_at("transcript-chunk")
        if chunk is not None and chunk < answer.audio_stop_at:
            first_chunk.append(chunk)
        refs.append(text)
        hyps.append(answer.text)
    return {
        "final_after_audio_stop_p50_s": round(statistics.median(after_stop), 3),
        "final_after_audio_stop_max_s": round(max(after_stop), 3),
        "first_chunk_before_stop_p50_s": round(statistics.median(first_chunk), 3) if first_chunk else None,
        "utterances_with_words_before_stop": len(first_chunk),
        "utterances": len(corpus),
        "failed": failed,
        "wer": round(wer(" ".join(refs), " ".join(hyps)), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["whisper-tiny.en", "whisper-base"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--at-once-pairs", type=int, default=3, help="at once: both orders, this many times each"
    )
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="wyoming-bench-"))
    hf_home = bundled_home(work)
    corpus_dir = work / "corpus"
    corpus = build_corpus(corpus_dir)
    results: dict = {"corpus": {"clips": len(corpus), "seconds": round(sum(
        len(read_pcm(p)[0]) / 32000 for p, _ in corpus), 1)}, "threads": args.threads, "models": {}}  # fmt: skip
    for model in args.models:
        spec = catalog.lookup(model)
        import os

        os.environ["HF_HOME"] = str(hf_home)
        weights = hub.resolve_weights(spec, download=False)
        ours_port, theirs_port = free_port(), free_port()
        ours = start_server(hf_home, work, "--model", model, "--wyoming-port", str(ours_port),
                            "--cpu-threads", str(args.threads))  # fmt: skip
        theirs = subprocess.Popen(
            [sys.executable, "-m", "wyoming_faster_whisper", "--uri", f"tcp://127.0.0.1:{theirs_port}",
             "--model", str(weights), "--data-dir", str(work / "wfw"), "--cpu-threads", str(args.threads),
             "--beam-size", "5", "--compute-type", "int8"],
            env=server_env(hf_home), stdout=(work / f"theirs-{model}.log").open("w"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_for_port(theirs_port)
            servers = [f"127.0.0.1:{ours_port}", f"127.0.0.1:{theirs_port}"]
            # the two servers take turns, each order as often (neither always runs first on a warm or cold
            # machine, and the machine's speed drifts over minutes)
            runs = [
                bench(servers[:: 1 if i % 2 == 0 else -1], corpus_dir, "non_streaming", args.rounds,
                      ["--trailing-silence", "0"])
                for i in range(2 * args.at_once_pairs)
            ]  # fmt: skip
            streaming = bench(servers[:1], corpus_dir, "streaming", 2, ["--chunk-delay", "0.064"])
            ours_paced = asyncio.run(paced(ours_port, corpus, model))
            theirs_paced = asyncio.run(paced(theirs_port, corpus, None))
            ours_total = statistics.mean(run[servers[0]]["total_median_ms"] for run in runs)
            theirs_total = statistics.mean(run[servers[1]]["total_median_ms"] for run in runs)
            results["models"][model] = {
                "at_once": {"ours": [run[servers[0]] for run in runs],
                            "theirs": [run[servers[1]] for run in runs],
                            "total_median_ratio_ours_over_theirs": round(ours_total / theirs_total, 3)},
                "wyoming_bench_streaming_ours": streaming.get(servers[0]),
                "paced": {"ours": ours_paced, "theirs": theirs_paced,
                          "final_after_stop_ratio_ours_over_theirs": round(
                              ours_paced["final_after_audio_stop_p50_s"]
                              / max(theirs_paced["final_after_audio_stop_p50_s"], 1e-3), 3),
                          "wer_difference": round(ours_paced["wer"] - theirs_paced["wer"], 4)},
            }  # fmt: skip
            print(json.dumps({model: results["models"][model]}), flush=True)
        finally:
            ours.stop()
            theirs.terminate()
            theirs.wait(30)
    print(json.dumps(results, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
