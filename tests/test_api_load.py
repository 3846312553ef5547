"""Serving under load: back-pressure, cancellation, timeouts, graceful shutdown, metrics, request ids, CORS."""

from __future__ import annotations

import concurrent.futures
import re
import signal
import time
import wave
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import Server, metric, reference, sample, start_server, wer


def repeat_wav(source: Path, times: int, out: Path) -> Path:
    with wave.open(str(source), "rb") as r:
        params, frames = r.getparams(), r.readframes(r.getnframes())
    with wave.open(str(out), "wb") as w:
        w.setparams(params)
        w.writeframes(frames * times)
    return out


@pytest.fixture(scope="module")
def three_minutes(long_speech: Path, tmp_path_factory) -> Path:
    return repeat_wav(long_speech, 3, tmp_path_factory.mktemp("long") / "three_minutes.wav")


def wait_for(predicate, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def post_file(server: Server, path: Path, timeout: float = 300, **data) -> httpx.Response:
    with open(path, "rb") as fh:
        return httpx.post(
            server.base_url + "/audio/transcriptions", files={"file": fh}, data=data, timeout=timeout
        )


@pytest.fixture(scope="module")
def tight_server(hf_home, tmp_path_factory):
    """One worker, room for two requests: easy to fill."""
    srv = start_server(hf_home, tmp_path_factory.mktemp("tight"), "--model", "whisper-tiny.en", "--workers", "1",
                       "--max-queue", "2", "--batched-long-audio", "false")  # fmt: skip
    yield srv
    srv.stop()


def test_queue_full_is_429_with_retry_after_and_sdk_retry_succeeds(
    tight_server: Server, three_minutes
) -> None:
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        long_jobs = [pool.submit(post_file, tight_server, three_minutes) for _ in range(2)]
        assert wait_for(lambda: metric(tight_server, "open_stt_queue_depth") >= 2, 30)
        r = post_file(tight_server, sample("en", "hello_world"))
        assert r.status_code == 429, r.text
        assert int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["code"] == "queue_full" and r.json()["error"]["type"] == "rate_limit_error"
        client = openai.OpenAI(base_url=tight_server.base_url, api_key="x", max_retries=8, timeout=300)
        with open(sample("en", "hello_world"), "rb") as fh:
            text = client.audio.transcriptions.create(model="whisper-tiny.en", file=fh).text
        assert wer("Hello world.", text) == 0
        assert all(j.result().status_code == 200 for j in long_jobs)


def test_client_disconnect_cancels_work(tight_server: Server, three_minutes) -> None:
    with pytest.raises(httpx.ReadTimeout):
        post_file(tight_server, three_minutes, timeout=3)
    # The whole file takes far longer than this; the job stops at its next segment boundary.
    assert wait_for(lambda: metric(tight_server, "open_stt_queue_depth") == 0, 15), "work was not cancelled"
    r = post_file(tight_server, sample("en", "hello_world"), timeout=60)
    assert r.status_code == 200


def test_streaming_disconnect_cancels_work(tight_server: Server, three_minutes) -> None:
    with open(three_minutes, "rb") as fh, httpx.stream(
        "POST", tight_server.base_url + "/audio/transcriptions", files={"file": fh}, data={"stream": "true"},
        timeout=300,
    ) as r:  # fmt: skip
        for line in r.iter_lines():
            if "transcript.text.delta" in line:
                break  # leave after the first delta
    assert wait_for(lambda: metric(tight_server, "open_stt_queue_depth") == 0, 15), (
        "stream work was not cancelled"
    )


def test_request_timeout_is_504_and_frees_the_worker(hf_home, tmp_path, three_minutes) -> None:
    srv = start_server(hf_home, tmp_path, "--model", "whisper-tiny.en", "--workers", "1", "--request-timeout", "2",
                       "--batched-long-audio", "false")  # fmt: skip
    try:
        r = post_file(srv, three_minutes)
        assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"
        assert wait_for(lambda: metric(srv, "open_stt_queue_depth") == 0, 15)
        # Streaming: the failure arrives as an SSE error event, which the SDK raises, not as a dropped connection.
        client = openai.OpenAI(base_url=srv.base_url, api_key="x", max_retries=0, timeout=120)
        with open(three_minutes, "rb") as fh, pytest.raises(openai.APIError) as info:
            for _ in client.audio.transcriptions.create(model="whisper-tiny.en", file=fh, stream=True):
                pass
        assert "timeout" in str(info.value.body)
        assert wait_for(lambda: metric(srv, "open_stt_queue_depth") == 0, 15)
        ok = post_file(srv, sample("en", "hello_world"), timeout=60)
        assert ok.status_code == 200 and wer("Hello world.", ok.json()["text"]) == 0
    finally:
        srv.stop()


def test_sigterm_drains_in_flight_requests(hf_home, tmp_path, long_speech) -> None:
    srv = start_server(hf_home, tmp_path, "--model", "whisper-tiny.en")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(post_file, srv, long_speech)
        assert wait_for(lambda: metric(srv, "open_stt_running") >= 1, 30)
        srv.process.send_signal(signal.SIGTERM)
        response = in_flight.result(timeout=300)
    assert response.status_code == 200 and "lighthouse" in response.json()["text"].lower()
    assert srv.process.wait(60) == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(srv.url + "/health", timeout=2)


def test_metrics_count_requests(server: Server) -> None:
    before = metric(
        server, "open_stt_requests_total", endpoint="transcriptions", status="200", model="whisper-base"
    )
    before_404 = metric(server, "open_stt_requests_total", endpoint="transcriptions", status="404")
    for _ in range(3):
        assert post_file(server, sample("en", "hello_world"), model="whisper-base").status_code == 200
    assert post_file(server, sample("en", "hello_world"), model="nope").status_code == 404
    after = metric(
        server, "open_stt_requests_total", endpoint="transcriptions", status="200", model="whisper-base"
    )
    assert after - before == 3
    assert (
        metric(server, "open_stt_requests_total", endpoint="transcriptions", status="404") - before_404 == 1
    )
    text = httpx.get(server.url + "/metrics").text
    for name in ("open_stt_request_duration_seconds_bucket", "open_stt_audio_seconds_total",
                 "open_stt_real_time_factor_bucket", "open_stt_model_load_seconds", "open_stt_queue_depth"):  # fmt: skip
        assert name in text, name
    assert metric(server, "open_stt_audio_seconds_total", model="whisper-base") > 3


def test_request_id_is_returned_and_logged(server: Server) -> None:
    r = httpx.get(server.url + "/health", headers={"X-Request-ID": "test-req-42"})
    assert r.headers["x-request-id"] == "test-req-42"
    generated = httpx.get(server.url + "/health").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    r = post_file(server, sample(*("en", "hello_world")))
    rid = r.headers["x-request-id"]
    assert wait_for(lambda: rid in server.log(), 5)
    line = next(ln for ln in server.log().splitlines() if rid in ln)
    assert "POST /v1/audio/transcriptions 200" in line


def test_cors_off_by_default_and_on_when_asked(server: Server, hf_home, tmp_path) -> None:
    origin = {"Origin": "http://example.test"}
    assert "access-control-allow-origin" not in httpx.get(server.base_url + "/models", headers=origin).headers
    srv = start_server(
        hf_home, tmp_path, "--model", "whisper-tiny.en", "--cors-origins", "http://example.test"
    )
    try:
        preflight = httpx.options(srv.base_url + "/audio/transcriptions", headers={
            **origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"})  # fmt: skip
        assert preflight.headers["access-control-allow-origin"] == "http://example.test"
    finally:
        srv.stop()


def test_json_logs(hf_home, tmp_path) -> None:
    import json

    srv = start_server(hf_home, tmp_path, "--model", "whisper-tiny.en", "--log-format", "json")
    try:
        httpx.get(srv.url + "/health", headers={"X-Request-ID": "json-log-1"})
        assert wait_for(lambda: "json-log-1" in srv.log(), 5)
    finally:
        srv.stop()
    entries = [json.loads(ln) for ln in srv.log().splitlines() if ln.startswith("{")]
    access = next(e for e in entries if e.get("request_id") == "json-log-1")
    assert access["status"] == 200 and access["path"] == "/health"


def test_short_clip_is_not_stuck_behind_a_long_file(server: Server, three_minutes) -> None:
    """Chunk-level scheduling: a short request sent while a 3-minute file decodes is answered before the file.

    Order, not time: the file has six windows left when the clip arrives, the clip one."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        long_job = pool.submit(post_file, server, three_minutes, batched="false")
        assert wait_for(lambda: metric(server, "open_stt_running") >= 1, 30)
        r = post_file(server, sample("en", "quick_brown_fox"))
        assert not long_job.done()
        assert r.status_code == 200 and wer(reference("en", "quick_brown_fox"), r.json()["text"]) <= 0.2
        assert long_job.result().status_code == 200
