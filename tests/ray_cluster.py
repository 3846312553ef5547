"""A real local Ray cluster for tests and benchmarks: a head (and optionally a second raylet on this machine, a
second "node"), each in its own process group, and `open-stt-server ray` deployments on it; cleaned up by pid
(never `ray stop`, which would stop every Ray on the host)."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import Server, free_port, server_env

APP = "open-stt"


def ray_bin() -> str:
    return str(Path(sys.executable).with_name("ray"))


def wait_for(what: str, check, timeout: float, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def command_line(pid: int) -> str | None:
    """A process's command line (arguments joined by spaces); None once it has gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None


def stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the process name (state ppid pgrp session ...); None once it has gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _all_pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def pids_of(marker: str) -> list[int]:
    """Processes whose command line contains `marker` (an idle actor's process is named after its class)."""
    return [pid for pid in _all_pids() if pid != os.getpid() and marker in (command_line(pid) or "")]


def session_pids(leader: int) -> list[int]:
    """Every process in the session `leader` started (a raylet's workers and actors stay in it)."""
    return [
        pid for pid in _all_pids() if (fields := stat_fields(pid)) is not None and int(fields[3]) == leader
    ]


def pss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return round(total / 1024, 1)


def serve_port() -> int:
    """A free port for Serve's proxy, outside the kernel's ephemeral range (32768+) and Ray's worker ports
    (10002–19999): Ray's own processes bind ephemeral ports while the cluster starts, and one of them took a port
    chosen ahead of time once ("Failed to bind to address")."""
    for _ in range(100):
        port = random.randrange(20_000, 32_000)
        with socket.socket() as s, contextlib.suppress(OSError):
            s.bind(("127.0.0.1", port))
            return port
    return free_port()


@dataclass
class Cluster:
    address: str
    temp_dir: str
    env: dict[str, str]
    http_port: int
    processes: list[subprocess.Popen]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def pids(self) -> list[int]:
        return [pid for p in self.processes for pid in session_pids(p.pid)]

    def nodes(self) -> int:
        """How many nodes are alive (0 while the head is not up)."""
        try:
            return int(self.python("print(sum(n['Alive'] for n in ray.nodes()))", timeout=60))
        except (AssertionError, ValueError, subprocess.TimeoutExpired):
            return 0

    def python(self, code: str, timeout: float = 120) -> str:
        """Run Python against the cluster (a Serve client) and return the last line it printed."""
        done = subprocess.run(
            [sys.executable, "-c", f"import ray; from ray import serve; ray.init(address='{self.address}', "
             f"logging_level='ERROR', namespace='serve'); {code}"],
            env=self.env, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout.strip().splitlines()[-1]

    def add_node(self, num_cpus: int = 2) -> None:
        self.processes.append(_raylet(["--address", self.address], num_cpus, self.env))
        wait_for("the new node", lambda: self.nodes() >= len(self.processes), 90)


def _raylet(where: list[str], num_cpus: int, env: dict[str, str]) -> subprocess.Popen:
    ports = []
    for flag in ("--metrics-export-port", "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
                 "--runtime-env-agent-port"):  # fmt: skip
        ports += [flag, str(free_port())]  # distinct per raylet: two share this machine
    return subprocess.Popen(
        [ray_bin(), "start", *where, *ports, "--block", "--disable-usage-stats", "--num-cpus", str(num_cpus)],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


@contextlib.contextmanager
def local_cluster(hf_home: Path, num_cpus: int = 2, nodes: int = 1) -> Iterator[Cluster]:
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths live under it
    env = server_env(
        hf_home,
        RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S="1",
        RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S="1",
        RAY_USAGE_STATS_ENABLED="0",
    )
    port = free_port()
    head = _raylet(["--head", "--port", str(port), "--include-dashboard=false", "--temp-dir", temp_dir],
                   num_cpus, env)  # fmt: skip
    cluster = Cluster(f"127.0.0.1:{port}", temp_dir, env, serve_port(), [head])
    try:
        wait_for("the Ray head", lambda: cluster.nodes() >= 1, 90)
        for _ in range(nodes - 1):
            cluster.add_node(num_cpus)
        yield cluster
    finally:
        leftovers = cluster.pids()
        for process in cluster.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in cluster.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(20)
        for pid in set(
            leftovers + pids_of(temp_dir) + pids_of(cluster.address)
        ):  # whatever outlived its raylet
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@dataclass
class Deployed:
    server: Server
    cluster: Cluster

    @property
    def url(self) -> str:
        return self.server.url

    def replicas(self, model: str) -> int:
        return int(
            self.cluster.python(
                f"s = serve.status().applications['{APP}'].deployments['Model:{model}']; "
                "print(s.replica_states.get('RUNNING', 0))"
            )
        )


@contextlib.contextmanager
def deployed(cluster: Cluster, log_dir: Path, *flags: str) -> Iterator[Deployed]:
    """`open-stt-server ray ...` running (its app ready and answering), stopped and deleted afterwards."""
    log_path = log_dir / f"ray-{time.monotonic_ns()}.log"
    log_file = open(log_path, "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "open_stt_server", "ray", "--address", cluster.address, "--host", "127.0.0.1",
         "--port", str(cluster.http_port), "--proxy-location", "HeadOnly", *flags],
        env=cluster.env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    server = Server(cluster.url, process, log_path)
    try:
        wait_for("the application", lambda: "ready in" in server.log() or process.poll() is not None, 180)
        assert process.poll() is None, server.log()
        yield Deployed(server, cluster)
    finally:
        server.stop(signal.SIGTERM, timeout=120)  # deletes the application
        log_file.close()
