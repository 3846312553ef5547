"""The cluster's queue interface without a cluster: error mapping, the retry rule, admission and cancellation of
`RemoteModelQueue` over a scripted replica, and what a client of the app sees for each (real HTTP through our
app, with Ray's real exception types)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

pytest.importorskip("ray.serve")

from ray.exceptions import ActorDiedError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

from open_stt_server import catalog
from open_stt_server.api.app import create_app
from open_stt_server.audio import AudioError, AudioTooLong
from open_stt_server.cluster.remote import (
    Failed,
    Finished,
    RemoteModelQueue,
    Started,
    failure,
    may_retry,
    raised,
)
from open_stt_server.engines import capabilities
from open_stt_server.scheduler import EngineFailure, ModelUnavailable, QueueFull, ServedModels
from open_stt_server.settings import Settings
from open_stt_server.transcript import Segment, TranscribeOptions

MODEL = "whisper-tiny.en"


def segment(i: int, text: str) -> Segment:
    return Segment(id=i, seek=0, start=float(i), end=float(i + 1), text=text, tokens=[1], avg_logprob=-0.1,
                   compression_ratio=1.0, no_speech_prob=0.0, temperature=0.0)  # fmt: skip


@dataclass
class Call:
    """One streaming call to a replica: a script of items, where an exception in it is raised at that point."""

    script: list
    cancelled: bool = False
    gate: asyncio.Event | None = None  # when set, the call waits for it before the item after Started

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self.cancelled:
            raise asyncio.CancelledError
        if not self.script:
            raise StopAsyncIteration
        item = self.script.pop(0)
        if self.gate is not None and not isinstance(item, Started):
            await self.gate.wait()
        if isinstance(item, BaseException):
            raise item
        return item

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class Replicas:
    """The deployment handle: each call takes the next script (the next replica to answer)."""

    scripts: Iterator[list]
    calls: list[Call] = field(default_factory=list)
    gate: asyncio.Event | None = None

    def remote(self, audio, options, priority, max_audio_s) -> Call:
        call = Call(list(next(self.scripts)), gate=self.gate)
        self.calls.append(call)
        return call


def ok(*texts: str) -> list:
    return [
        Started(len(texts), "r1@node"),
        *(segment(i, t) for i, t in enumerate(texts)),
        Finished("en", 0.1),
    ]


def queue_over(*scripts: list) -> tuple[RemoteModelQueue, Replicas]:
    replicas = Replicas(iter(scripts))
    return RemoteModelQueue(MODEL, capabilities(catalog.lookup(MODEL)), replicas, slots=2), replicas


OPTIONS = TranscribeOptions(language="en")


def run(coro):
    return asyncio.run(coro)


def test_a_request_runs_and_its_queue_counts_return_to_zero() -> None:
    queue, _ = queue_over(ok(" one", " two"))

    async def go():
        job = await queue.admit(b"audio", OPTIONS)
        assert (queue.depth, queue.running) == (1, 1)
        assert job.served_by == "r1@node"
        transcript = await job.result()
        return transcript

    transcript = run(go())
    assert transcript.text == "one two" and transcript.language == "en"
    assert (queue.depth, queue.running) == (0, 0)


@pytest.mark.parametrize(
    ("failed", "expected"),
    [
        (Failed("invalid_audio", "bad"), AudioError),
        (Failed("audio_too_long", "long"), AudioTooLong),
        (Failed("queue_full", "full", 7), QueueFull),
        (Failed("engine_error", "boom"), EngineFailure),
    ],
)
def test_a_replicas_refusal_becomes_the_single_boxs_error(failed: Failed, expected: type) -> None:
    queue, _ = queue_over([failed])
    with pytest.raises(expected) as info:
        run(queue.admit(b"audio", OPTIONS))
    assert queue.depth == 0
    if expected is QueueFull:
        assert info.value.retry_after_s == 7
    if expected is AudioError:
        assert not isinstance(info.value, AudioTooLong)


def test_failure_and_raised_are_inverse_for_our_errors() -> None:
    for exc in (AudioError("a"), AudioTooLong("b"), QueueFull(MODEL, 3), EngineFailure("c")):
        back = raised(failure(exc), MODEL)
        assert type(back) is type(exc) and str(back) == str(exc)
    assert failure(ValueError("not ours")) is None


def test_a_full_deployment_is_our_429_with_a_retry_after() -> None:
    queue, _ = queue_over([BackPressureError(num_queued_requests=6, max_queued_requests=6)])
    with pytest.raises(QueueFull) as info:
        run(queue.admit(b"audio", OPTIONS))
    assert 1 <= info.value.retry_after_s <= 60 and queue.depth == 0


def test_no_running_replica_is_model_unavailable() -> None:
    queue, _ = queue_over([DeploymentUnavailableError("Model:whisper-tiny.en")])
    with pytest.raises(ModelUnavailable) as info:
        run(queue.admit(b"audio", OPTIONS))
    assert info.value.code == "model_unavailable"


def test_the_retry_rule() -> None:
    assert may_retry(1, 0)
    assert not may_retry(2, 0)  # once only
    assert not may_retry(1, 1)  # the client already has text


def test_a_replica_lost_before_admitting_is_retried_once() -> None:
    queue, replicas = queue_over([ActorDiedError()], ok(" hello"))
    transcript = run(_result(queue))
    assert transcript.text == "hello" and len(replicas.calls) == 2
    queue, replicas = queue_over([ActorDiedError()], [ActorDiedError()], ok(" never"))
    with pytest.raises(ModelUnavailable) as info:
        run(_result(queue))
    assert info.value.code == "replica_lost" and len(replicas.calls) == 2 and queue.depth == 0


def test_a_replica_lost_mid_file_runs_the_file_again_without_duplicate_segments() -> None:
    lost = [Started(2, "r1@a"), segment(0, " one"), ActorDiedError()]
    queue, replicas = queue_over(lost, ok(" one", " two"))
    transcript = run(_result(queue))
    assert [s.text for s in transcript.segments] == [" one", " two"] and len(replicas.calls) == 2
    assert (queue.depth, queue.running) == (0, 0)


def test_a_stream_that_already_sent_text_is_not_retried() -> None:
    lost = [Started(2, "r1@a"), segment(0, " one"), ActorDiedError()]
    queue, replicas = queue_over(lost, ok(" one", " two"))

    async def go() -> list[str]:
        job = await queue.admit(b"audio", OPTIONS)
        seen = []
        with pytest.raises(ModelUnavailable) as info:
            async for s in job.stream():
                seen.append(s.text)
        assert info.value.code == "replica_lost"
        return seen

    assert run(go()) == [" one"] and len(replicas.calls) == 1 and queue.depth == 0


def test_a_stream_lost_before_its_first_segment_is_retried() -> None:
    queue, replicas = queue_over([Started(1, "r1@a"), ActorDiedError()], ok(" again"))

    async def go() -> list[str]:
        job = await queue.admit(b"audio", OPTIONS)
        return [s.text async for s in job.stream()]

    assert run(go()) == [" again"] and len(replicas.calls) == 2


def test_cancel_reaches_the_replica_call() -> None:
    queue, replicas = queue_over(ok(" one", " two"))

    async def go() -> None:
        replicas.gate = asyncio.Event()  # the replica is slow: the client leaves first
        job = await queue.admit(b"audio", OPTIONS)
        job.cancel()

    run(go())
    assert replicas.calls[0].cancelled and (queue.depth, queue.running) == (0, 0)


# -- what a client sees: our app over the scripted replicas --------------------------------------------------


async def _post(*scripts: list, **data: str) -> httpx.Response:
    queue, _ = queue_over(*scripts)
    served = ServedModels({MODEL: queue}, MODEL, 0)
    app = create_app(Settings(models=(MODEL,), diarizer="off"), served, speaker_labels=None)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://cluster") as client:
            return await client.post(
                "/v1/audio/transcriptions", files={"file": ("a.wav", b"RIFF")}, data={"model": MODEL, **data}
            )


async def _result(queue: RemoteModelQueue):
    job = await queue.admit(b"audio", OPTIONS)
    return await job.result()


def test_clients_get_envelopes_for_cluster_failures() -> None:
    full = run(_post([BackPressureError(num_queued_requests=3, max_queued_requests=3)]))
    assert full.status_code == 429 and full.json()["error"]["code"] == "queue_full"
    assert int(full.headers["retry-after"]) >= 1
    lost = run(_post([ActorDiedError()], [ActorDiedError()]))
    assert lost.status_code == 503 and lost.json()["error"]["code"] == "replica_lost"
    assert lost.headers["retry-after"] == "5"
    down = run(_post([DeploymentUnavailableError("Model:x")]))
    assert down.status_code == 503 and down.json()["error"]["code"] == "model_unavailable"
    bad = run(_post([Failed("invalid_audio", "The audio file could not be decoded.")]))
    assert bad.status_code == 400 and bad.json()["error"] == {
        "message": "The audio file could not be decoded.",
        "type": "invalid_request_error",
        "param": "file",
        "code": "invalid_audio",
    }
    fine = run(_post(ok(" hi")))
    assert fine.status_code == 200 and fine.json()["text"] == "hi"
    assert fine.headers["x-served-by"] == "r1@node"


def test_a_stream_whose_replica_is_lost_ends_with_an_error_event() -> None:
    lost = [Started(2, "r1@a"), segment(0, " one"), ActorDiedError()]
    response = run(_post(lost, ok(" one", " two"), stream="true"))
    assert response.status_code == 200
    events = [line for line in response.text.splitlines() if line.startswith("data: ")]
    assert '"transcript.text.delta"' in events[0] and '"replica_lost"' in events[-1]
