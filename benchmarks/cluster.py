"""Cluster mode (Ray Serve) against the plain server, measured in the same run on the same clips and model.

- Ray tax: throughput of Ray with 2 replicas × 1 worker × 1 thread ÷ the plain server with 2 workers × 1 thread
  (short clips, 4 clients sending at once);
- scaling: Ray 2 replicas × 1 thread ÷ 2 × (Ray 1 replica × 1 thread), each saturated;
- added latency: p50 / p95 of a 1 s clip sent one at a time, Ray − plain;
- start-up: `ray start` → first transcript (head up, application deployed, model loaded, one request);
- recovery: SIGKILL of the only replica → the first request that succeeds again; and of one of two replicas →
  the deployment back to two;
- memory: PSS of every process of the Ray cluster (idle after deploy, and under load) vs the plain server's.

    .venv/bin/python benchmarks/cluster.py [--model whisper-tiny.en] [--rounds 3] [--out results/cluster-run1.json]
"""

from __future__ import annotations

import argparse
import atexit
import concurrent.futures
import io
import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.run import bundled_home, percentile, short_clips, wav_seconds
from tests.conftest import start_server
from tests.ray_cluster import command_line, deployed, local_cluster, pids_of, pss_mb, stat_fields, wait_for


def post(url: str, audio: bytes, model: str) -> tuple[int, float]:
    started = time.perf_counter()
    r = httpx.post(url + "/v1/audio/transcriptions", files={"file": ("a.wav", audio)}, data={"model": model},
                   timeout=600)  # fmt: skip
    return r.status_code, time.perf_counter() - started


def throughput(url: str, model: str, clips: list[tuple[bytes, float]], clients: int, rounds: int) -> dict:
    jobs = clips * rounds
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        # warm every worker and replica (a first decode allocates), not just the one a single request reaches
        list(pool.map(lambda job: post(url, job[0], model), jobs[: 2 * clients]))
        started = time.perf_counter()
        results = list(pool.map(lambda job: post(url, job[0], model), jobs))
    wall = time.perf_counter() - started
    latencies = [t for _, t in results]
    return {
        "clients": clients,
        "requests": len(jobs),
        "errors": sum(status != 200 for status, _ in results),
        "throughput_x_realtime": round(sum(s for _, s in jobs) / wall, 3),
        "p50_s": round(percentile(latencies, 50), 3),
        "p95_s": round(percentile(latencies, 95), 3),
    }


def cpu_seconds_by_role(pids: list[int]) -> dict[str, float]:
    """CPU time (user + system) used so far by the cluster's processes, summed by what each process is."""
    roles = {"ServeReplica:open-stt:Model": "model_replicas", "ServeReplica:open-stt:Ingress": "ingress",
             "ProxyActor": "http_proxy", "ServeController": "serve_controller"}  # fmt: skip
    ticks = os.sysconf("SC_CLK_TCK")
    used: dict[str, float] = {}
    for pid in pids:
        cmdline, fields = command_line(pid), stat_fields(pid)
        if cmdline is None or fields is None:
            continue
        role = next((name for marker, name in roles.items() if marker in cmdline), "ray_daemons_and_workers")
        used[role] = used.get(role, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return used


def cpu_share(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Each role's share of the CPU time the cluster used between two readings."""
    spent = {role: after[role] - before.get(role, 0.0) for role in after}
    total = sum(spent.values()) or 1.0
    return {role: round(seconds / total, 3) for role, seconds in sorted(spent.items())}


def latencies(urls: list[str], model: str, clip: bytes, count: int) -> list[dict]:
    for url in urls:
        post(url, clip, model)
    times: list[list[float]] = [[] for _ in urls]
    for _ in range(count):
        for i, url in enumerate(urls):
            times[i].append(post(url, clip, model)[1] * 1000)
    return [{"p50_ms": round(percentile(t, 50), 1), "p95_ms": round(percentile(t, 95), 1)} for t in times]


def one_second(path: Path) -> bytes:
    import soundfile

    samples, rate = soundfile.read(path, dtype="float32")
    out = io.BytesIO()
    soundfile.write(out, samples[:rate], rate, format="WAV", subtype="PCM_16")
    return out.getvalue()


def under_load(url: str, model: str, clips, seconds: float, measure) -> float:
    """`measure()` while 4 clients keep the server busy."""
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            for audio, _ in clips:
                post(url, audio, model)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    value = measure()
    stop.set()
    for t in threads:
        t.join()
    return value


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="whisper-tiny.en")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    model = args.model
    work = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    home = bundled_home(work)
    paths = [p for p in short_clips() if not model.endswith(".en") or p.parent.name == "en"]
    clips = [(p.read_bytes(), wav_seconds(p)) for p in paths]
    second = one_second(paths[0])
    # 0.9 CPU per replica: two replicas and the ingress (0.1) fit the 2 CPUs of the head
    common = ("--model", model, "--workers", "1", "--cpu-threads", "1", "--num-cpus", "0.9")
    result: dict = {"model": model, "clips": len(clips), "rounds": args.rounds, "cores": os.cpu_count()}

    one_plain = start_server(home, work, "--model", model, "--workers", "1", "--cpu-threads", "1")
    try:
        plain_one = throughput(one_plain.url, model, clips, 2, args.rounds)
    finally:
        one_plain.stop()
    plain = start_server(home, work, "--model", model, "--workers", "2", "--cpu-threads", "1")
    atexit.register(plain.stop)  # it serves beside the cluster for the latency comparison
    result["plain"] = {
        "one_worker_throughput": plain_one,
        "throughput": throughput(plain.url, model, clips, 4, args.rounds),
        "pss_idle_mb": pss_mb([plain.process.pid]),
        "pss_loaded_mb": under_load(plain.url, model, clips, 3, lambda: pss_mb([plain.process.pid])),
    }
    started = time.perf_counter()
    with local_cluster(home, num_cpus=2) as cluster:
        head_s = time.perf_counter() - started
        with deployed(cluster, work, *common, "--replicas", "1") as app:
            status, _ = post(app.url, second, model)
            first_s = time.perf_counter() - started
            assert status == 200
            one = throughput(app.url, model, clips, 2, args.rounds)
            victim = pids_of(f"ServeReplica:open-stt:Model:{model}")[0]
            killed = time.perf_counter()
            os.kill(victim, signal.SIGKILL)
            wait_for(
                "a request to succeed again", lambda: post(app.url, second, model)[0] == 200, 300, every=0.2
            )
            single_back_s = time.perf_counter() - killed
        with deployed(cluster, work, *common, "--replicas", "2") as app:
            idle_pss = pss_mb(cluster.pids())
            cpu_before = cpu_seconds_by_role(cluster.pids())
            two = throughput(app.url, model, clips, 4, args.rounds)
            two["cpu_share_by_role"] = cpu_share(cpu_before, cpu_seconds_by_role(cluster.pids()))
            # one at a time, alternating with the plain server (idle beside it): the same conditions for both
            ray_latency, plain_latency = latencies([app.url, plain.url], model, second, 40)
            result["plain"]["latency_1s"] = plain_latency
            loaded_pss = under_load(app.url, model, clips, 3, lambda: pss_mb(cluster.pids()))
            victim = pids_of(f"ServeReplica:open-stt:Model:{model}")[0]
            killed = time.perf_counter()
            os.kill(victim, signal.SIGKILL)
            served_during = post(app.url, second, model)[0]
            wait_for("two replicas again", lambda: app.replicas(model) == 2, 300, every=0.5)
            two_back_s = time.perf_counter() - killed
        plain.stop()
        result["ray"] = {
            "head_up_s": round(head_s, 2),
            "ray_start_to_first_transcript_s": round(first_s, 2),
            "one_replica_throughput": one,
            "two_replicas_throughput": two,
            "latency_1s": ray_latency,
            "pss_idle_mb": idle_pss,
            "pss_loaded_mb": loaded_pss,
            "kill_only_replica_to_serving_again_s": round(single_back_s, 2),
            "kill_one_of_two_request_right_after": served_during,
            "kill_one_of_two_to_two_replicas_again_s": round(two_back_s, 2),
        }
    plain_thr = result["plain"]["throughput"]["throughput_x_realtime"]
    result["ratios"] = {
        "ray_2x1_over_plain_2x1": round(two["throughput_x_realtime"] / plain_thr, 3),
        "ray_2_replicas_over_2x_1_replica": round(
            two["throughput_x_realtime"] / (2 * one["throughput_x_realtime"]), 3
        ),
        # the same for the plain server: how far two decodes scale on this machine at all
        "plain_2_workers_over_2x_1_worker": round(plain_thr / (2 * plain_one["throughput_x_realtime"]), 3),
        "added_latency_p50_ms": round(ray_latency["p50_ms"] - result["plain"]["latency_1s"]["p50_ms"], 1),
        "added_latency_p95_ms": round(ray_latency["p95_ms"] - result["plain"]["latency_1s"]["p95_ms"], 1),
        "pss_idle_ray_over_plain": round(idle_pss / result["plain"]["pss_idle_mb"], 2),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
