"""Cluster mode on a real local Ray cluster: a head plus a second raylet on this machine as a second "node",
started by the test in their own process groups and cleaned up by pid, serving the bundled whisper-tiny.en
through `open-stt-server ray` exactly as a user starts it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

pytest.importorskip("ray.serve")

from open_stt_server.audio import decode_audio
from tests.conftest import SAMPLES, Server, start_server, wer
from tests.ray_cluster import APP, Cluster, Deployed, local_cluster, pids_of, wait_for
from tests.ray_cluster import deployed as deploy

pytestmark = pytest.mark.ray
MODEL = "whisper-tiny.en"
REPLICA_TITLE = f"ServeReplica:{APP}:Model:{MODEL}"
KEY = "cluster-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
COMMON = (
    "--model",
    MODEL,
    "--workers",
    "1",
    "--cpu-threads",
    "1",
    "--api-key",
    KEY,
    "--max-audio-seconds",
    "600",
)


@pytest.fixture(scope="module")
def cluster(hf_home: Path) -> Iterator[Cluster]:
    with local_cluster(hf_home, num_cpus=2, nodes=2) as running:
        yield running


@contextlib.contextmanager
def deployed(cluster: Cluster, tmp_path: Path, *flags: str) -> Iterator[Deployed]:
    with deploy(cluster, tmp_path, *COMMON, *flags) as app:
        yield app


# -- audio ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip() -> bytes:
    return (SAMPLES / "en" / "counting.wav").read_bytes()


@pytest.fixture(scope="module")
def long_file(long_speech: Path, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """About three and a half minutes of speech: long enough to kill a replica in the middle of it."""
    samples = decode_audio(long_speech.read_bytes(), 600).samples
    audio = np.concatenate([samples] * 3)
    import soundfile

    path = tmp_path_factory.mktemp("cluster") / "long.wav"
    soundfile.write(path, audio, 16_000, subtype="PCM_16")
    return path.read_bytes()


def post(url: str, audio: bytes, timeout: float = 300, headers: dict | None = None, **data: str):
    return httpx.post(
        url + "/v1/audio/transcriptions",
        files={"file": ("audio.wav", audio, "audio/wav")},
        data={"model": MODEL, **data},
        headers=AUTH if headers is None else headers,
        timeout=timeout,
    )


# -- one deployment: two replicas spread over both nodes -----------------------------------------------------


@pytest.fixture(scope="module")
def single_box(hf_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(hf_home, tmp_path_factory.mktemp("single"), *COMMON)
    yield srv
    srv.stop()


@pytest.fixture(scope="class")
def spread(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    with deployed(
        cluster, tmp_path_factory.mktemp("spread"), "--replicas", "2", "--num-cpus", "1",
        "--max-replicas-per-node", "1",
    ) as app:  # fmt: skip
        yield app


class TestTwoReplicasOnTwoNodes:
    """One deployment for these: two replicas, at most one per node."""

    @pytest.mark.parametrize(
        "response_format",
        [
            "json",
            pytest.param(
                "verbose_json",
                marks=pytest.mark.xfail(
                    strict=False,
                    reason="on the 2026-12-05 machine one digit of a word-level float differs between a Ray replica "
                    "and the single box, on the base commit too (same threads and workers); under investigation",
                ),
            ),
            "text",
            "srt",
            "vtt",
        ],
    )
    def test_bodies_are_identical_to_the_single_box(self, spread: Deployed, single_box: Server, clip: bytes,
                                                    response_format: str) -> None:  # fmt: skip
        words = {"timestamp_granularities[]": "word"} if response_format == "verbose_json" else {}
        ours = post(spread.url, clip, response_format=response_format, **words)
        theirs = post(single_box.url, clip, response_format=response_format, **words)
        assert ours.status_code == theirs.status_code == 200, ours.text
        assert ours.content == theirs.content
        assert ours.headers["content-type"] == theirs.headers["content-type"]
        assert ours.headers.get_list("x-request-id") and len(ours.headers.get_list("x-request-id")) == 1

    def test_sse_is_identical_and_the_sdk_works(
        self, spread: Deployed, single_box: Server, clip: bytes
    ) -> None:
        ours = post(spread.url, clip, stream="true", response_format="json")
        theirs = post(single_box.url, clip, stream="true", response_format="json")
        assert ours.headers["content-type"].startswith("text/event-stream")
        assert ours.text == theirs.text and "transcript.text.done" in ours.text
        from openai import OpenAI

        client = OpenAI(base_url=spread.url + "/v1", api_key=KEY, max_retries=0)
        text = client.audio.transcriptions.create(model="whisper-1", file=("c.wav", clip)).text
        assert "three" in text.lower()
        assert [m.id for m in client.models.list().data] == [
            m.id for m in OpenAI(base_url=single_box.url + "/v1", api_key=KEY).models.list().data
        ]

    def test_errors_and_auth_are_identical_to_the_single_box(self, spread: Deployed, single_box: Server, clip: bytes,
                                                             tmp_path: Path) -> None:  # fmt: skip
        silence = tmp_path / "long.wav"
        import soundfile

        soundfile.write(silence, np.zeros(16_000 * 610, dtype=np.float32), 16_000, subtype="PCM_16")
        too_long = silence.read_bytes()
        cases = {
            "no key": lambda url: post(url, clip, headers={}),
            "wrong key": lambda url: post(url, clip, headers={"Authorization": "Bearer nope"}),
            "unknown model": lambda url: post(url, clip, model="whisper-huge"),
            "undecodable": lambda url: post(url, b"this is not audio at all"),
            "too long": lambda url: post(url, too_long),
            "bad language": lambda url: post(url, clip, language="xx"),
            "not multipart": lambda url: httpx.post(
                url + "/v1/audio/transcriptions", json={"model": MODEL}, headers=AUTH, timeout=60
            ),
            "no file": lambda url: httpx.post(
                url + "/v1/audio/transcriptions",
                data={"model": MODEL},
                files={"x": ("a", b"b")},
                headers=AUTH,
                timeout=60,
            ),
        }
        seen = {}
        for name, send in cases.items():
            ours, theirs = send(spread.url), send(single_box.url)
            assert (ours.status_code, ours.json()) == (theirs.status_code, theirs.json()), name
            seen[name] = ours.status_code
        assert seen == {"no key": 401, "wrong key": 401, "unknown model": 404, "undecodable": 400, "too long": 413,
                        "bad language": 400, "not multipart": 415, "no file": 400}  # fmt: skip

    def test_two_replicas_on_two_nodes_work_at_once(self, spread: Deployed, long_speech: Path) -> None:
        audio = long_speech.read_bytes()
        with ThreadPoolExecutor(4) as pool:
            responses = list(pool.map(lambda _: post(spread.url, audio), range(4)))
        assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
        served_by = {r.headers["x-served-by"] for r in responses}
        nodes = {s.split("@")[1] for s in served_by}
        assert len(served_by) == 2 and len(nodes) == 2, served_by
        assert len({r.json()["text"] for r in responses}) == 1

    def test_realtime_sessions_run_through_the_cluster(self, spread: Deployed) -> None:
        from tests.conversations import meeting
        from tests.realtime_client import open_session, pcm16, silence, transcription_session

        talk = meeting(lines=("Good morning, thanks for joining the call today.", "Shall we start with the budget?"),
                       gap_s=0.8)  # fmt: skip

        async def scenario() -> list[dict]:
            s = await open_session(spread.server, additional_headers=AUTH)
            await s.send("session.update", session=transcription_session(transcription={"model": MODEL}))
            await s.next("session.updated")
            await s.append(pcm16(np.concatenate([talk.samples, silence(1.5)])))
            done = await s.until("conversation.item.input_audio_transcription.completed", 2)
            await s.ws.close()
            return done

        done = asyncio.run(scenario())
        for turn, completed in zip(talk.turns, done, strict=True):
            assert wer(turn.text, completed["transcript"]) < 0.35, completed

    def test_a_killed_replica_loses_no_request(self, spread: Deployed, long_file: bytes) -> None:
        """SIGKILL one of two replicas with four long files in flight: each ends 200, directly or through the
        SDK's retry of our retryable envelope; Serve brings the replica back."""
        from openai import OpenAI

        client = OpenAI(base_url=spread.url + "/v1", api_key=KEY, max_retries=3, timeout=600)

        def transcribe(_: int) -> str:
            return client.audio.transcriptions.create(model=MODEL, file=("long.wav", long_file)).text

        victims = pids_of(REPLICA_TITLE)  # while idle: a busy actor's process title names its method instead
        assert len(victims) == 2, victims
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(transcribe, i) for i in range(4)]
            time.sleep(3)  # the four are running or queued on the two replicas
            killed_at = time.monotonic()
            os.kill(victims[0], signal.SIGKILL)
            texts = [f.result() for f in futures]
        assert all("lighthouse" in t.lower() for t in texts)
        wait_for("the replica to come back", lambda: spread.replicas(MODEL) == 2, 120)
        assert victims[0] not in pids_of(REPLICA_TITLE)
        print(f"replica back {time.monotonic() - killed_at:.1f} s after the kill")
        assert post(spread.url, long_file[: 16_000 * 2 * 10]).status_code == 200


# -- back-pressure, cancellation, autoscaling: one replica each --------------------------------------------


def test_full_queues_get_our_429_and_a_burst_within_capacity_none(cluster: Cluster, tmp_path: Path,
                                                                 long_speech: Path) -> None:  # fmt: skip
    audio = long_speech.read_bytes()
    # one replica × 1 worker: 2 running on the replica (max_ongoing = 2 × workers) + --max-queue 1 waiting
    with deployed(cluster, tmp_path, "--replicas", "1", "--max-queue", "1") as app:
        with ThreadPoolExecutor(3) as pool:
            burst = list(pool.map(lambda _: post(app.url, audio), range(3)))
        assert [r.status_code for r in burst] == [200, 200, 200], [r.text for r in burst]
        with ThreadPoolExecutor(12) as pool:
            flood = list(pool.map(lambda _: post(app.url, audio), range(12)))
    refused = [r for r in flood if r.status_code == 429]
    assert refused and all(r.status_code in (200, 429) for r in flood), [r.status_code for r in flood]
    for r in refused:
        assert r.headers["content-type"] == "application/json"
        assert r.json()["error"]["code"] == "queue_full" and r.json()["error"]["type"] == "rate_limit_error"
        assert 1 <= int(r.headers["retry-after"]) <= 60


def test_a_client_that_leaves_stops_the_work_on_the_replica(cluster: Cluster, tmp_path: Path,
                                                            long_file: bytes) -> None:  # fmt: skip
    ongoing = (
        f"print(serve.get_deployment_handle('Model:{MODEL}', app_name='{APP}').ongoing.remote().result())"
    )
    with deployed(cluster, tmp_path, "--replicas", "1") as app:
        # streaming: read the first event, then hang up
        with httpx.Client(timeout=60) as client, client.stream(
            "POST", app.url + "/v1/audio/transcriptions", headers=AUTH,
            files={"file": ("long.wav", long_file)}, data={"model": MODEL, "stream": "true"},
        ) as response:  # fmt: skip
            assert response.status_code == 200
            next(response.iter_lines())  # the first event: decoding is under way
        wait_for("the replica to drop the stream's work", lambda: app.cluster.python(ongoing) == "(0, 0)", 60)

        # a plain request whose client gives up while the replica decodes
        def impatient() -> None:
            with contextlib.suppress(httpx.TimeoutException):
                post(app.url, long_file, timeout=4)

        with ThreadPoolExecutor(1) as pool:
            gone = pool.submit(impatient)
            wait_for("the replica to start", lambda: app.cluster.python(ongoing) == "(1, 1)", 60, every=0.2)
            gone.result()
        wait_for(
            "the replica to drop the request's work", lambda: app.cluster.python(ongoing) == "(0, 0)", 60
        )


def test_autoscaling_up_and_down_fails_no_request(
    cluster: Cluster, tmp_path: Path, long_speech: Path
) -> None:
    audio = long_speech.read_bytes()
    flags = ("--autoscale", "1:2", "--target-ongoing", "1", "--upscale-delay", "0", "--downscale-delay", "3",
             "--num-cpus", "1")  # fmt: skip
    with deployed(cluster, tmp_path, *flags) as app:
        assert app.replicas(MODEL) == 1
        # Three requests at a time, a new one whenever one ends, until the second replica runs: the load must
        # outlast the autoscaler's reaction however fast this machine decodes (a single wave of three could end
        # before it acts).
        scaled = threading.Event()
        with ThreadPoolExecutor(3) as pool:

            def keep_busy() -> list[httpx.Response]:
                done = []
                while not scaled.is_set() and len(done) < 30:
                    done.append(post(app.url, audio))
                return done

            futures = [pool.submit(keep_busy) for _ in range(3)]
            try:
                wait_for("a second replica", lambda: app.replicas(MODEL) == 2, 90, every=1)
            finally:
                scaled.set()
            first = [r for f in futures for r in f.result()]
        with ThreadPoolExecutor(1) as pool:  # requests keep coming, one at a time, while it scales down
            later = pool.submit(lambda: [post(app.url, audio) for _ in range(2)])
            wait_for("the scale-down to one replica", lambda: app.replicas(MODEL) == 1, 120, every=1)
            responses = first + later.result()
    assert responses and all(r.status_code == 200 for r in responses), [r.text for r in responses]


def test_missing_weights_fail_the_deploy_at_once_with_our_message(cluster: Cluster, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "open_stt_server", "ray", "--address", cluster.address, "--host", "127.0.0.1",
         "--port", str(cluster.http_port), "--proxy-location", "HeadOnly", "--model", "whisper-small"],
        env=cluster.env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr[-3000:]
    assert "the deployment failed: Weights for model 'whisper-small'" in done.stderr, done.stderr[-3000:]
    assert "--download" in done.stderr  # how fast it fails (≈ 4 s: one constructor attempt) is not asserted
