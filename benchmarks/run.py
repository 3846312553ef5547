"""Benchmarks: the server against faster-whisper in-process on the same clips, ratios measured in one run.

    python benchmarks/run.py                       # everything (about 10 minutes on 2 cores)
    python benchmarks/run.py --only short          # short clips at concurrency 1, 4, 16
    python benchmarks/run.py --only long fairness  # 10-minute file; short-clip p95 beside a long file
    python benchmarks/run.py --only soak --soak-seconds 600
    python benchmarks/run.py --only voxtral          # the Voxtral engine on the tests' tiny random Voxtral

Prints one JSON object; each figure sits beside the baseline it is divided by.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from open_stt_server import catalog, hub  # noqa: E402
from open_stt_server.audio import decode_audio  # noqa: E402
from tests.conftest import SAMPLES, free_port, server_env, start_server, wer  # noqa: E402

SENTENCES = [
    "The river runs past the old mill and under the stone bridge.",
    "Every morning the baker opens his shop before the sun comes up.",
    "Children walk to school along the narrow road beside the fields.",
    "The library keeps maps of the valley drawn more than a century ago.",
    "In autumn the orchards are full of apples and the air smells sweet.",
    "A small train climbs the hill twice a day and stops at every village.",
    "The council meets on Tuesday evenings to talk about the new park.",
    "Fishermen mend their nets on the harbour wall while gulls circle above.",
    "The museum shows tools that farmers used before there were machines.",
    "When it snows, the whole town comes out to clear the main street.",
    "Her grandmother taught her to knit a scarf during the long winter.",
    "The market sells cheese, bread, honey and fresh flowers on Saturdays.",
    "Scientists measured the temperature of the lake every hour for a year.",
    "The bridge was repaired last summer after a storm damaged the railings.",
    "Visitors can rent bicycles at the station and ride along the canal.",
    "A choir sings in the church on the first Sunday of every month.",
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


LANGS: list[str] = []
INPROCESS_TEXTS: dict[Path, set[str]] = {}  # what in-process passes said for each clip (fallback may vary)


def short_clips() -> list[Path]:
    return sorted(p for p in SAMPLES.glob("*/*.wav") if not LANGS or p.parent.name in LANGS)


@functools.cache
def wav_seconds(path: Path) -> float:
    return decode_audio(path.read_bytes(), 24 * 3600).duration_s


def make_long_file(out: Path, seconds: float) -> tuple[Path, str]:
    """Spoken paragraphs (espeak-ng) until `seconds`, as 16 kHz wav; returns the path and its text."""
    rng = random.Random(7)
    pieces, texts, total = [], [], 0.0
    tmp = out.parent
    while total < seconds:
        paragraph = " ".join(rng.sample(SENTENCES, 6))
        piece = tmp / f"p{len(pieces)}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(piece), paragraph], check=True)
        pieces.append(piece)
        texts.append(paragraph)
        total += wav_seconds(piece)
    # -D: no dither noise, so every run reads the same file
    subprocess.run(["sox", "-D", *map(str, pieces), "-r", "16000", str(out)], check=True)
    return out, " ".join(texts)


def bundled_home(tmp: Path) -> Path:
    """A private Hugging Face home under `tmp` holding every bundled model, as the server and in-process engines
    look it up (also set as this process's HF_HOME)."""
    home = tmp / "hf_home"
    for bundled in hub.BUNDLED.values():
        hub.install_bundled(bundled, home / "hub")
    os.environ["HF_HOME"] = str(home)
    return home


def weights_dir(model: str) -> Path:
    return hub.resolve_weights(catalog.lookup(model), download=False)


# -- in-process ceilings ---------------------------------------------------------------------------------------


def inprocess_short(model: str, clips: list[Path], threads: int, repeats: int = 2) -> dict:
    """faster-whisper called directly, one clip after another; the fastest of `repeats` passes is the ceiling
    (temperature fallback samples at random, so one pass can be slower than the next on the same clips)."""
    from faster_whisper import WhisperModel, decode_audio

    m = WhisperModel(str(weights_dir(model)), device="cpu", compute_type="int8", cpu_threads=threads)
    audio = [decode_audio(str(c)) for c in clips]
    list(m.transcribe(audio[0], beam_size=5)[0])  # warm-up
    best: tuple[float, list[float]] | None = None
    texts: list[list[str]] = []
    for _ in range(repeats):
        latencies, pass_texts = [], []
        started = time.perf_counter()
        for a in audio:
            t = time.perf_counter()
            pass_texts.append("".join(s.text for s in m.transcribe(a, beam_size=5)[0]).strip())
            latencies.append(time.perf_counter() - t)
        wall = time.perf_counter() - started
        texts.append(pass_texts)
        if best is None or wall < best[0]:
            best = (wall, latencies)
    wall, latencies = best
    INPROCESS_TEXTS.clear()
    INPROCESS_TEXTS.update({c: {p[i] for p in texts} for i, c in enumerate(clips)})
    seconds = sum(len(a) / 16000 for a in audio)
    return {"requests": len(audio), "audio_s": round(seconds, 2), "wall_s": round(wall, 2),
            "throughput_x_realtime": round(seconds / wall, 3), "p50_s": round(percentile(latencies, 50), 3),
            "p95_s": round(percentile(latencies, 95), 3)}  # fmt: skip


def inprocess_long(model: str, path: Path, threads: int) -> tuple[dict, str]:
    from faster_whisper import WhisperModel, decode_audio

    m = WhisperModel(str(weights_dir(model)), device="cpu", compute_type="int8", cpu_threads=threads)
    audio = decode_audio(str(path))
    started = time.perf_counter()
    segments, _ = m.transcribe(audio, beam_size=5)
    text = "".join(s.text for s in segments).strip()
    wall = time.perf_counter() - started
    return {"audio_s": round(len(audio) / 16000, 1), "wall_s": round(wall, 2),
            "speed_x_realtime": round(len(audio) / 16000 / wall, 3)}, text  # fmt: skip


# -- the server ---------------------------------------------------------------------------------------------


def post(url: str, path: Path, **data) -> tuple[int, float, str]:
    started = time.perf_counter()
    with open(path, "rb") as fh:
        r = httpx.post(url + "/v1/audio/transcriptions", files={"file": fh}, data=data, timeout=1800)
    text = (
        r.json().get("text", "") if r.headers.get("content-type", "").startswith("application/json") else ""
    )
    return r.status_code, time.perf_counter() - started, text


def load(url: str, clips: list[Path], concurrency: int, rounds: int) -> dict:
    jobs = clips * rounds
    latencies, errors, same = [], 0, 0
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        for path, (status, latency, text) in zip(jobs, pool.map(lambda p: post(url, p), jobs), strict=True):
            latencies.append(latency)
            errors += status != 200
            same += text.strip() in INPROCESS_TEXTS.get(path, ())
    wall = time.perf_counter() - started
    seconds = sum(wav_seconds(p) for p in jobs)
    out = {"concurrency": concurrency, "requests": len(jobs), "errors": errors, "wall_s": round(wall, 2),
           "throughput_x_realtime": round(seconds / wall, 3), "p50_s": round(percentile(latencies, 50), 3),
           "p95_s": round(percentile(latencies, 95), 3)}  # fmt: skip
    if INPROCESS_TEXTS:
        out["same_transcript_as_inprocess"] = f"{same}/{len(jobs)}"
    return out


def closed_loop(url: str, clips: list[Path], clients: int, rounds: int) -> dict:
    """`clients` clients, each sending the clips back to back (its own order), `rounds` times over."""
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()

    def client(index: int) -> None:
        nonlocal errors
        order = clips[index:] + clips[:index]
        for _ in range(rounds):
            for path in order:
                status, latency, _ = post(url, path)
                with lock:
                    latencies.append(latency)
                    errors += status != 200

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    wall = time.perf_counter() - started
    seconds = sum(wav_seconds(p) for p in clips) * rounds * clients
    p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
    return {"clients": clients, "requests": len(latencies), "errors": errors, "wall_s": round(wall, 2),
            "throughput_x_realtime": round(seconds / wall, 3), "p50_s": round(p50, 3), "p95_s": round(p95, 3),
            "max_s": round(max(latencies), 3), "p95_over_p50": round(p95 / p50, 3)}  # fmt: skip


def stream_timing(url: str, path: Path, **data) -> dict:
    """Time to the first transcript.text.delta and to the end of an SSE transcription."""
    started = time.perf_counter()
    first = None
    deltas = 0
    with open(path, "rb") as fh, httpx.stream("POST", url + "/v1/audio/transcriptions", files={"file": fh},
                                              data={"stream": "true", **data}, timeout=1800) as r:  # fmt: skip
        for line in r.iter_lines():
            if line.startswith("data:") and '"transcript.text.delta"' in line:
                deltas += 1
                first = first if first is not None else time.perf_counter() - started
    total = time.perf_counter() - started
    return {"first_delta_s": round(first or total, 2), "total_s": round(total, 2), "deltas": deltas,
            "first_delta_share": round((first or total) / total, 3)}  # fmt: skip


def segment_shape(url: str, path: Path, **data) -> dict:
    with open(path, "rb") as fh:
        r = httpx.post(url + "/v1/audio/transcriptions", files={"file": fh}, timeout=1800,
                       data={"response_format": "verbose_json", **data})  # fmt: skip
    lengths = [s["end"] - s["start"] for s in r.json()["segments"]]
    return {"segments": len(lengths), "longest_s": round(max(lengths), 2),
            "median_s": round(percentile(lengths, 50), 2)}  # fmt: skip


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="open-stt-bench-"))
        self.hf_home = Path(os.environ.get("HF_HOME", self.tmp / "hf"))
        for model in hub.BUNDLED.values():
            hub.install_bundled(model, self.hf_home / "hub")
        os.environ["HF_HUB_CACHE"] = str(self.hf_home / "hub")
        self.server_args = ["--model", args.model, *args.server_args]
        self.result: dict = {"machine": {"cpus": os.cpu_count()}, "model": args.model,
                             "server_args": self.server_args}  # fmt: skip

    def server(self, *extra: str):
        return start_server(self.hf_home, self.tmp, *self.server_args, *extra)

    def startup(self) -> None:
        started = time.perf_counter()
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "open_stt_server", "--port", str(port), "--host", "127.0.0.1",
                                 *self.server_args], env=server_env(self.hf_home), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)  # fmt: skip
        clip = SAMPLES / "en" / "hello_world.wav"
        while True:
            try:
                status, _, _ = post(f"http://127.0.0.1:{port}", clip)
                if status == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        first_answer = time.perf_counter() - started
        self.result["startup"] = {"start_to_first_transcript_s": round(first_answer, 2),
                                  "rss_mb": round(rss_mb(proc.pid), 1)}  # fmt: skip
        proc.terminate()
        proc.wait()

    def short(self) -> None:
        clips = short_clips()
        ceiling = inprocess_short(self.args.model, clips, os.cpu_count() or 1)
        out = {"inprocess": ceiling, "server": []}
        srv = self.server()
        try:
            post(srv.url, clips[0])  # warm-up
            for c in self.args.concurrency:
                run = load(srv.url, clips, c, rounds=1 if c == 1 else 2)
                run["ratio_vs_inprocess"] = round(
                    run["throughput_x_realtime"] / ceiling["throughput_x_realtime"], 3
                )
                out["server"].append(run)
            health = []
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                background = pool.submit(load, srv.url, clips, 8, 1)
                while not background.done():
                    # curl in its own process: the load generator's threads must not slow the probe itself
                    probe = subprocess.run(["curl", "-fsS", "-o", "/dev/null", "-w", "%{time_total}",
                                            srv.url + "/health"], capture_output=True, text=True)  # fmt: skip
                    health.append(float(probe.stdout) * 1000)
                    time.sleep(0.1)
            out["health_under_load_ms"] = {"p50": round(percentile(health, 50), 1),
                                           "max": round(max(health), 1), "samples": len(health)}  # fmt: skip
            out["server_rss_mb"] = round(rss_mb(srv.process.pid), 1)
        finally:
            srv.stop()
        self.result["short_clips"] = out

    def long_file(self) -> tuple[Path, str]:
        path = self.tmp / "long.wav"
        if not path.exists():
            self._long = make_long_file(path, self.args.long_seconds)
        return self._long

    def long(self) -> None:
        path, reference = self.long_file()
        baseline, base_text = inprocess_long(self.args.model, path, os.cpu_count() or 1)
        baseline["wer"] = round(wer(reference, base_text), 4)
        srv = self.server()
        try:
            post(srv.url, SAMPLES / "en" / "hello_world.wav")
            runs = {}
            for name, batched in (("server_batched", "true"), ("server_sequential", "false")):
                status, took, text = post(srv.url, path, batched=batched)
                runs[name] = {"status": status, "wall_s": round(took, 2),
                              "speed_x_realtime": round(baseline["audio_s"] / took, 3),
                              "ratio_vs_inprocess_sequential": round(baseline["wall_s"] / took, 3),
                              "wer": round(wer(reference, text), 4)}  # fmt: skip
                runs[name]["wer_minus_sequential"] = round(runs[name]["wer"] - baseline["wer"], 4)
                runs[name]["verbose_json_segments"] = segment_shape(srv.url, path, batched=batched)
            runs["server_batched"]["stream"] = stream_timing(srv.url, path, batched="true")
        finally:
            srv.stop()
        self.result["long_file"] = {"inprocess_sequential": baseline, **runs}

    def closedloop(self) -> None:
        """Four clients, 20 clips of 1–8 s (espeak-ng, English), each client back to back: tail latency."""
        rng = random.Random(11)
        clips = []
        for index in range(20):
            words = " ".join(rng.sample(SENTENCES, 3)).split()
            path = self.tmp / f"loop{index}.wav"
            count = 3 + round(index * 17 / 19)  # 3–20 words: about 1–8 s at 150 words a minute
            subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(path), " ".join(words[:count])],
                           check=True)  # fmt: skip
            clips.append(path)
        rng.shuffle(clips)
        srv = self.server()
        try:
            post(srv.url, clips[0])
            run = closed_loop(srv.url, clips, clients=4, rounds=self.args.loop_rounds)
        finally:
            srv.stop()
        run["clip_seconds"] = [round(min(map(wav_seconds, clips)), 2), round(max(map(wav_seconds, clips)), 2)]
        self.result["closedloop"] = run

    def fairness(self) -> None:
        path, _ = self.long_file()
        clips = [SAMPLES / "en" / f"{n}.wav" for n in ("hello_world", "quick_brown_fox", "counting")] * 4
        srv = self.server()
        try:
            post(srv.url, clips[0])

            def sequential_latencies() -> list[float]:
                out = []
                for c in clips:
                    time.sleep(0.3)
                    out.append(post(srv.url, c)[1])
                return out

            idle = sequential_latencies()
            probing = threading.Event()
            probing.set()

            def long_files() -> int:  # one long file after another for as long as the probes run
                sent = 0
                while probing.is_set():
                    post(srv.url, path)
                    sent += 1
                return sent

            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                background = pool.submit(long_files)
                time.sleep(2)
                busy = sequential_latencies()
                probing.clear()
                long_files_sent = background.result()
        finally:
            srv.stop()
        self.result["fairness"] = {
            "idle_p95_s": round(percentile(idle, 95), 3), "with_long_file_p95_s": round(percentile(busy, 95), 3),
            "ratio": round(percentile(busy, 95) / percentile(idle, 95), 3), "long_files_sent": long_files_sent,
        }  # fmt: skip

    def voxtral(self) -> None:
        """The Voxtral engine on the tiny random Voxtral of the tests (no real Voxtral weights here): server
        overhead over transformers in-process, same clips, same template and budget."""
        from tests.voxtral_tiny import install_into_cache

        weights = install_into_cache(self.hf_home / "hub")
        clips = short_clips()
        temperature = 0.7  # one pass per clip: random weights would trigger every fallback at temperature 0
        ceiling = inprocess_voxtral(weights, clips, temperature)
        out: dict = {
            "model": "tiny random Voxtral (tests/voxtral_tiny.py)",
            "inprocess": ceiling,
            "server": [],
        }
        srv = start_server(self.hf_home, self.tmp, "--model", "voxtral-mini")
        try:
            url = srv.url
            post(url, clips[0], model="voxtral-mini", temperature=temperature)
            for concurrency in (1, 4):
                latencies, errors = [], 0
                started = time.perf_counter()
                with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
                    for status, latency, _ in pool.map(
                        lambda p: post(url, p, model="voxtral-mini", temperature=temperature), clips
                    ):
                        latencies.append(latency)
                        errors += status != 200
                wall = time.perf_counter() - started
                throughput = ceiling["audio_s"] / wall
                out["server"].append({"concurrency": concurrency, "errors": errors, "wall_s": round(wall, 2),
                                      "throughput_x_realtime": round(throughput, 3),
                                      "ratio_vs_inprocess": round(throughput / ceiling["throughput_x_realtime"], 3),
                                      "p95_s": round(percentile(latencies, 95), 3)})  # fmt: skip
            out["server_rss_mb"] = round(rss_mb(srv.process.pid), 1)
        finally:
            srv.stop()
        self.result["voxtral"] = out

    def soak(self) -> None:
        clips = short_clips()
        srv = self.server()
        try:
            post(srv.url, clips[0])
            rss_start = rss_mb(srv.process.pid)
            deadline = time.monotonic() + self.args.soak_seconds
            done = failed = 0

            def worker() -> tuple[int, int]:
                ok = bad = 0
                rng = random.Random()
                while time.monotonic() < deadline:
                    status, _, _ = post(srv.url, rng.choice(clips))
                    ok += status == 200
                    bad += status != 200
                return ok, bad

            rss_curve: list[tuple[int, float]] = []  # (seconds into the soak, RSS MB): a leak keeps climbing
            began = time.monotonic()
            with concurrent.futures.ThreadPoolExecutor(9) as pool:
                runs = [pool.submit(worker) for _ in range(8)]
                while time.monotonic() < deadline:
                    time.sleep(min(30.0, max(0.0, deadline - time.monotonic())))
                    rss_curve.append((round(time.monotonic() - began), round(rss_mb(srv.process.pid), 1)))
                for run in runs:
                    ok, bad = run.result()
                    done, failed = done + ok, failed + bad
            rss_end = rss_mb(srv.process.pid)
        finally:
            srv.stop()
        self.result["soak"] = {"seconds": self.args.soak_seconds, "requests_ok": done, "requests_failed": failed,
                               "rss_start_mb": round(rss_start, 1), "rss_end_mb": round(rss_end, 1),
                               "rss_growth_mb": round(rss_end - rss_start, 1),
                               "rss_growth_second_half_mb": round(rss_end - rss_curve[len(rss_curve) // 2][1], 1),
                               "rss_curve_s_mb": rss_curve}  # fmt: skip


def inprocess_voxtral(weights: Path, clips: list[Path], temperature: float) -> dict:
    """transformers called directly: the same processor template and token budget the engine uses, one clip
    after another (the tiny random model never stops early, so every clip runs to its budget either way)."""
    import torch
    from transformers import AutoProcessor, VoxtralForConditionalGeneration

    from open_stt_server.engines.voxtral import token_budget

    torch.set_num_threads(os.cpu_count() or 1)
    processor = AutoProcessor.from_pretrained(str(weights))
    model = VoxtralForConditionalGeneration.from_pretrained(str(weights), dtype=torch.float32).eval()
    audio = [decode_audio(c.read_bytes(), 3600).samples for c in clips]

    def run(samples) -> int:
        inputs = processor.apply_transcription_request(audio=samples, sampling_rate=16000, format="wav",
                                                       model_id="bench")  # fmt: skip
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=token_budget(len(samples) / 16000), do_sample=True,
                                 temperature=temperature, pad_token_id=2)  # fmt: skip
        return out.shape[1] - inputs["input_ids"].shape[1]

    run(audio[0])  # warm-up
    started = time.perf_counter()
    tokens = sum(run(a) for a in audio)
    wall = time.perf_counter() - started
    seconds = sum(len(a) / 16000 for a in audio)
    return {"requests": len(audio), "audio_s": round(seconds, 2), "wall_s": round(wall, 2), "tokens": tokens,
            "tokens_per_s": round(tokens / wall, 1), "throughput_x_realtime": round(seconds / wall, 3)}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="*", default=["startup", "short", "long", "fairness"],
                   choices=["startup", "short", "long", "fairness", "closedloop", "soak", "voxtral"])  # fmt: skip
    p.add_argument("--model", default="whisper-base")
    p.add_argument("--concurrency", type=int, nargs="*", default=[1, 4, 16])
    p.add_argument("--langs", nargs="*", default=[], help="limit short clips to these languages")
    p.add_argument("--long-seconds", type=float, default=600)
    p.add_argument("--soak-seconds", type=float, default=600)
    p.add_argument(
        "--loop-rounds", type=int, default=2, help="closedloop: passes of each client over the clips"
    )
    p.add_argument("--server-args", nargs=argparse.REMAINDER, default=[], help="passed to open-stt-server")
    args = p.parse_args()
    if shutil.which("espeak-ng") is None and {"long", "fairness"} & set(args.only):
        sys.exit("espeak-ng and sox are needed for the long-file benchmarks (scripts/system-deps)")
    LANGS.extend(args.langs)
    bench = Bench(args)
    for part in args.only:
        getattr(bench, "long" if part == "long" else part)()
        print(json.dumps({part: bench.result.get({"short": "short_clips", "long": "long_file"}.get(part, part))}),
              file=sys.stderr)  # fmt: skip
    shutil.rmtree(bench.tmp, ignore_errors=True)
    print(json.dumps(bench.result, indent=2))


if __name__ == "__main__":
    main()
