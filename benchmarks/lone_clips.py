"""Lone short clips through the file API, one at a time, on servers that differ only in their flags: the default
(`--workers 2`, one-thread decoders on), `--workers 1`, and `--cpu-decoders 0`; the servers take turns, the first
round is a warm-up, and each prints its median and fastest request (whisper-base, `language=en`).

    .venv/bin/python benchmarks/lone_clips.py [--rounds 6]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.run import bundled_home
from tests.conftest import SAMPLES, start_server

CONFIGS = {
    "default (--workers 2)": ["--workers", "2"],
    "--workers 1": ["--workers", "1"],
    "--workers 2 --cpu-decoders 0": ["--workers", "2", "--cpu-decoders", "0"],
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--model", default="whisper-base")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp())
    home = bundled_home(tmp)
    clips = sorted((SAMPLES / "en").glob("*.wav"))[:3]
    servers = {
        name: start_server(home, tmp, "--model", args.model, *flags) for name, flags in CONFIGS.items()
    }
    client = httpx.Client(timeout=120)
    times: dict[str, list[float]] = {name: [] for name in CONFIGS}
    try:
        for round_ in range(args.rounds):
            for name, server in servers.items():
                for clip in clips:
                    started = time.perf_counter()
                    with clip.open("rb") as fh:
                        client.post(server.url + "/v1/audio/transcriptions", files={"file": fh},
                                    data={"model": args.model, "language": "en"}).raise_for_status()  # fmt: skip
                    if round_:
                        times[name].append(time.perf_counter() - started)
    finally:
        for server in servers.values():
            server.stop()
    print(json.dumps({name: {"median_s": round(statistics.median(v), 3), "fastest_s": round(min(v), 3),
                             "requests": len(v)} for name, v in times.items()}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
