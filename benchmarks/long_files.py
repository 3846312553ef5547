"""Files of one to three minutes (issue 24): the server's long-file path against faster-whisper called in process
the two ways its users call it, on the same files in the same run (whisper-base int8, beam 5, 2 threads, language
not given).

- in process: `BatchedInferencePipeline(model).transcribe(audio, batch_size=8, beam_size=5, vad_filter=True)` and
  `WhisperModel.transcribe(audio, beam_size=5)` (sequential);
- the server (one request at a time): plain `json` and `stream=true` (time to the first
  `transcript.text.delta`, total, joined deltas = `done.text`) — the four calls take turns, `--rounds` times each
  (the machine's speed drifts over minutes), and the fastest of each counts (the first delta's share is also given
  at its worst over the rounds); then `verbose_json` segment shape.

Files (espeak-ng, known text, so WER is exact): English in two voices and lengths, and Spanish.

    .venv/bin/python benchmarks/long_files.py [--files en-us:100 en-gb:170 es:90]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.run import SENTENCES, bundled_home, wav_seconds, weights_dir
from tests.conftest import start_server, wer

SPANISH = [
    "El río pasa junto al viejo molino y bajo el puente de piedra.",
    "Cada mañana el panadero abre su tienda antes de que salga el sol.",
    "Los niños caminan a la escuela por el camino estrecho junto a los campos.",
    "La biblioteca guarda mapas del valle dibujados hace más de un siglo.",
    "En otoño los huertos están llenos de manzanas y el aire huele dulce.",
    "Un pequeño tren sube la colina dos veces al día y para en cada pueblo.",
    "El consejo se reúne los martes por la tarde para hablar del nuevo parque.",
    "Los pescadores arreglan sus redes en el muelle mientras las gaviotas vuelan.",
]


def make_file(folder: Path, voice: str, seconds: float) -> tuple[Path, str]:
    """Paragraphs spoken by espeak-ng's `voice` until `seconds`, with pauses between them, as 16 kHz wav."""
    sentences = SPANISH if voice.startswith("es") else SENTENCES
    rng = random.Random(f"{voice}{seconds}")
    pieces, texts, total = [], [], 0.0
    while total < seconds:
        paragraph = " ".join(rng.sample(sentences, 4))
        piece = folder / f"{voice}-{len(pieces)}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", "155", "-w", str(piece), paragraph], check=True)
        pieces.append(piece)
        texts.append(paragraph)
        total += wav_seconds(piece) + 0.6
    out = folder / f"{voice}-{int(seconds)}.wav"
    padded = []
    for piece in pieces:  # 0.6 s of silence after each paragraph, as a speaker would pause
        pad = piece.with_suffix(".pad.wav")
        subprocess.run(["sox", "-D", str(piece), "-r", "16000", str(pad), "pad", "0", "0.6"], check=True)
        padded.append(pad)
    # -D: no dither noise, so every run reads the same file
    subprocess.run(["sox", "-D", *map(str, padded), str(out)], check=True)
    return out, " ".join(texts)


class InProcess:
    """faster-whisper in this process, called the two ways its users call it."""

    def __init__(self, threads: int) -> None:
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        self.model = WhisperModel(
            str(weights_dir("whisper-base")), device="cpu", compute_type="int8", cpu_threads=threads
        )
        self.pipeline = BatchedInferencePipeline(self.model)

    def calls(self, path: Path) -> dict[str, Callable[[], str]]:
        from faster_whisper import decode_audio

        audio = decode_audio(str(path))
        return {
            "batched_pipeline": lambda: " ".join(
                s.text for s in self.pipeline.transcribe(audio, batch_size=8, beam_size=5, vad_filter=True)[0]
            ),
            "sequential": lambda: " ".join(s.text for s in self.model.transcribe(audio, beam_size=5)[0]),
        }


def served(client: httpx.Client, url: str, path: Path) -> Callable[[], str]:
    def call() -> str:
        with open(path, "rb") as fh:
            r = client.post(
                url + "/v1/audio/transcriptions", files={"file": fh}, data={"model": "whisper-base"}
            )
        r.raise_for_status()
        return r.json()["text"]

    return call


def best_of(
    calls: dict[str, Callable[[], str]], rounds: int, stream: Callable[[], dict]
) -> tuple[dict[str, tuple[float, str]], list[dict]]:
    """Each call `rounds` times, the calls and the streamed request taking turns (the machine's speed drifts
    over minutes): the fastest time of each call, and its text; every streamed request's figures."""
    best: dict[str, tuple[float, str]] = {name: (float("inf"), "") for name in calls}
    streams = []
    for _ in range(rounds):
        for name, call in calls.items():
            started = time.perf_counter()
            text = call()
            best[name] = min(best[name], (time.perf_counter() - started, text), key=lambda r: r[0])
        streams.append(stream())
    return best, streams


def streamed(url: str, path: Path) -> dict:
    started = time.perf_counter()
    first, deltas, done = None, [], ""
    with open(path, "rb") as fh, httpx.stream(
        "POST", url + "/v1/audio/transcriptions", files={"file": fh},
        data={"model": "whisper-base", "stream": "true"}, timeout=1800,
    ) as response:  # fmt: skip
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            event = json.loads(line[6:])
            if event["type"] == "transcript.text.delta":
                first = first if first is not None else time.perf_counter() - started
                deltas.append(event["delta"])
            elif event["type"] == "transcript.text.done":
                done = event["text"]
    total = time.perf_counter() - started
    return {"first_delta_s": round(first or total, 2), "total_s": round(total, 2),
            "first_delta_share": round((first or total) / total, 3), "deltas_join_to_done": "".join(deltas) == done,
            "text": done}  # fmt: skip


def shape(url: str, path: Path) -> dict:
    """verbose_json: its segments (sentence-sized, cut at word times) and its time (it pays for the alignment)."""
    started = time.perf_counter()
    with open(path, "rb") as fh:
        body = httpx.post(url + "/v1/audio/transcriptions", files={"file": fh},
                          data={"model": "whisper-base", "response_format": "verbose_json"}, timeout=1800).json()  # fmt: skip
    lengths = sorted(s["end"] - s["start"] for s in body["segments"])
    return {"wall_s": round(time.perf_counter() - started, 2), "segments": len(lengths), "longest_s": round(lengths[-1], 2), "median_s": round(lengths[len(lengths) // 2], 2),
            "language": body["language"]}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", nargs="*", default=["en-us:100", "en-gb:170", "es:90"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--rounds", type=int, default=3, help="each call this many times, taking turns; the best counts"
    )
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp())
    home = bundled_home(tmp)
    files = [make_file(tmp, spec.split(":")[0], float(spec.split(":")[1])) for spec in args.files]
    out: dict = {}
    engine = InProcess(args.threads)
    server = start_server(home, tmp, "--model", "whisper-base", "--cpu-threads", str(args.threads))
    client = httpx.Client(timeout=1800)
    try:
        for path, text in files:
            calls = {**engine.calls(path), "server": served(client, server.url, path)}
            figures: dict = {"audio_s": round(wav_seconds(path), 1)}
            best, streams = best_of(calls, args.rounds, lambda path=path: streamed(server.url, path))
            for name, (seconds, said) in best.items():
                figures[name] = {"wall_s": round(seconds, 2), "wer": round(wer(text, said), 4)}
            out[path.stem] = figures
            seconds = figures["server"]["wall_s"]
            fastest = min(streams, key=lambda s: s["total_s"])
            figures["server_stream"] = {
                **{k: v for k, v in fastest.items() if k != "text"},
                "wer": round(wer(text, fastest["text"]), 4),
                "first_delta_share_worst": max(s["first_delta_share"] for s in streams),
                "deltas_join_to_done": all(s["deltas_join_to_done"] for s in streams),
            }
            figures["server_segments"] = shape(server.url, path)
            bip, seq = figures["batched_pipeline"], figures["sequential"]
            figures["speed_vs_batched_pipeline"] = round(bip["wall_s"] / seconds, 3)
            figures["speed_vs_sequential"] = round(seq["wall_s"] / seconds, 3)
            figures["wer_minus_better_of_two"] = round(
                figures["server"]["wer"] - min(bip["wer"], seq["wer"]), 4
            )
            figures["stream_total_vs_plain"] = round(figures["server_stream"]["total_s"] / seconds, 3)
            figures["verbose_json_vs_plain"] = round(figures["server_segments"]["wall_s"] / seconds, 3)
            print(path.stem, json.dumps(figures), file=sys.stderr)
    finally:
        server.stop()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
