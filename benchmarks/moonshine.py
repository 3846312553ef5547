"""Moonshine beside Whisper on short English clips: one server holding moonshine-tiny, whisper-tiny.en,
moonshine-base and whisper-base; each model's clips posted one at a time (c=1) and by 4 clients at once (c=4);
throughput (audio seconds ÷ wall seconds) and word error rate per model, and the ratio of each Moonshine model to
its Whisper counterpart measured in the same run. Each engine is also timed in process on the same clips (the
server's own engine classes, one clip after another) so the server's overhead shows.

Clips: pytest-audioeval's English recordings, and `--sentences` of benchmarks/run.py's sentences spoken by
espeak-ng in two English voices (synthetic speech: Moonshine is weaker on it than on recordings).

    .venv/bin/python benchmarks/moonshine.py [--rounds 2] [--sentences 8]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.run import SENTENCES, bundled_home, percentile, wav_seconds
from open_stt_server import catalog, hub
from tests.conftest import SAMPLES, start_server, wer

PAIRS = (("moonshine-tiny", "whisper-tiny.en"), ("moonshine-base", "whisper-base"))
VOICES = ("en-us", "en-gb")


def clips(folder: Path, sentences: int) -> dict[Path, str]:
    """Each clip with its reference text."""
    out = {p: p.with_suffix(".txt").read_text().strip() for p in sorted((SAMPLES / "en").glob("*.wav"))}
    for i, text in enumerate(SENTENCES[:sentences]):
        raw, path = folder / f"s{i}.raw.wav", folder / f"s{i}.wav"
        voice = VOICES[i % len(VOICES)]
        subprocess.run(["espeak-ng", "-v", voice, "-s", "160", "-w", str(raw), text], check=True)
        subprocess.run(["sox", str(raw), "-r", "16000", str(path)], check=True)
        out[path] = text
    return out


# One client for every request, as a real client keeps one: making an httpx client costs 10-20 ms (its TLS
# context), as much as moonshine-tiny's whole decode of a short clip.
CLIENT = httpx.Client(timeout=600, limits=httpx.Limits(max_connections=8))


def post(url: str, model: str, path: Path) -> tuple[float, str]:
    started = time.perf_counter()
    with open(path, "rb") as fh:
        r = CLIENT.post(url + "/v1/audio/transcriptions", files={"file": fh},
                        data={"model": model, "language": "en"})  # fmt: skip
    r.raise_for_status()
    return time.perf_counter() - started, r.json()["text"]


def served(url: str, model: str, refs: dict[Path, str], concurrency: int, rounds: int) -> dict:
    jobs = list(refs) * rounds
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        post(url, model, jobs[0])  # warm-up
        started = time.perf_counter()
        results = list(pool.map(lambda p: post(url, model, p), jobs))
        wall = time.perf_counter() - started
    seconds = sum(wav_seconds(p) for p in jobs)
    latencies = [t for t, _ in results]
    texts = [text for _, text in results[: len(refs)]]
    return {
        "concurrency": concurrency,
        "requests": len(jobs),
        "throughput_x_realtime": round(seconds / wall, 3),
        "p50_s": round(percentile(latencies, 50), 3),
        "p95_s": round(percentile(latencies, 95), 3),
        "wer": round(wer(" ".join(refs.values()), " ".join(texts)), 4),
    }


def in_process(model: str, refs: dict[Path, str], threads: int, ort_as_is: bool = False) -> dict:
    """The server's engine for `model`, called directly, one clip after another (best of two passes).
    `ort_as_is`: Moonshine's ONNX Runtime format files loaded as they are, not re-serialised for optimisation
    (how the engine was before it folded the int8 weights: the figure that shows what that gained)."""
    from open_stt_server.audio import decode_audio
    from open_stt_server.engines import load_engine
    from open_stt_server.engines.moonshine import MoonshineEngine
    from open_stt_server.settings import Settings
    from open_stt_server.transcript import TranscribeOptions

    spec = catalog.lookup(model)
    weights = hub.resolve_weights(spec, download=False)
    if ort_as_is:

        class AsIs(MoonshineEngine):
            def _session(self, path: Path):
                import onnxruntime as ort

                options = ort.SessionOptions()
                options.intra_op_num_threads = self.threads
                return ort.InferenceSession(str(path), options, providers=self.providers)

        engine = AsIs(spec, weights, Settings(cpu_threads=threads))
    else:
        engine = load_engine(spec, weights, Settings(cpu_threads=threads))
    audio = [decode_audio(p.read_bytes(), 3600).samples for p in refs]
    options = TranscribeOptions(language="en")
    best = float("inf")
    for _ in range(2):
        started = time.perf_counter()
        for samples in audio:
            list(engine.start(samples, options).segments)
        best = min(best, time.perf_counter() - started)
    engine.close()
    seconds = sum(len(a) / 16000 for a in audio)
    return {"throughput_x_realtime": round(seconds / best, 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--sentences", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only-in-process", action="store_true", help="the in-process figures only, no server")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp())
    home = bundled_home(tmp)
    refs = clips(tmp, args.sentences)
    real = {p: t for p, t in refs.items() if p.is_relative_to(SAMPLES)}
    models = [m for pair in PAIRS for m in pair]
    out: dict = {"clips": len(refs), "audio_s": round(sum(wav_seconds(p) for p in refs), 1), "models": {}}
    for model in models:
        out["models"][model] = {"in_process": in_process(model, refs, args.threads)}
        if model.startswith("moonshine"):
            out["models"][model]["in_process_ort_as_is"] = in_process(
                model, refs, args.threads, ort_as_is=True
            )
    if args.only_in_process:
        print(json.dumps(out, indent=2))
        return
    server = start_server(home, tmp, "--model", ",".join(models), "--cpu-threads", str(args.threads))
    try:
        for model in models:
            figures = out["models"][model]
            figures["c1"] = served(server.url, model, refs, 1, args.rounds)
            figures["c4"] = served(server.url, model, refs, 4, args.rounds)
            texts = [post(server.url, model, path)[1] for path in real]
            figures["wer_recordings"] = round(wer(" ".join(real.values()), " ".join(texts)), 4)
            figures["server_over_in_process_c1"] = round(
                figures["c1"]["throughput_x_realtime"] / figures["in_process"]["throughput_x_realtime"], 3
            )
            print(model, json.dumps(figures), file=sys.stderr)
    finally:
        server.stop()
    for moonshine, whisper in PAIRS:
        m, w = out["models"][moonshine], out["models"][whisper]
        out[f"{moonshine}_vs_{whisper}"] = {
            "throughput_ratio_c1": round(
                m["c1"]["throughput_x_realtime"] / w["c1"]["throughput_x_realtime"], 3
            ),
            "throughput_ratio_c4": round(
                m["c4"]["throughput_x_realtime"] / w["c4"]["throughput_x_realtime"], 3
            ),
            "wer_difference": round(m["c1"]["wer"] - w["c1"]["wer"], 4),
            "wer_difference_recordings": round(m["wer_recordings"] - w["wer_recordings"], 4),
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
