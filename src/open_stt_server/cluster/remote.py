"""The scheduler's queue interface over a Ray Serve deployment handle: what routes and realtime sessions use in
cluster mode instead of a local `ModelQueue`.

A request is one streaming call to a model replica, which decodes the upload, queues it with its own
`ModelQueue` and sends back, in order: `Started` (the request is admitted: the route may now answer 200), each
`Segment`, and `Finished` — or a `Failed` that names the error the single box would have raised. Ray's own
failures are mapped here: a full deployment → `QueueFull` (our 429), a replica that died before the client saw
any text → the request runs once more on another replica (transcription is idempotent), otherwise →
`ModelUnavailable` (503 with Retry-After, or an SSE `error` event).

Nothing here imports Ray at module level: the messages and the mapping are tested without a cluster.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from open_stt_server.audio import Audio, AudioError, AudioTooLong
from open_stt_server.engines import Capabilities
from open_stt_server.scheduler import (
    EngineFailure,
    JobCancelled,
    ModelUnavailable,
    Priority,
    QueueFull,
    report_finished,
    smoothed,
)
from open_stt_server.transcript import Segment, TranscribeOptions, Transcript

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5  # what a client is told to wait when a replica was lost or none is up yet


# -- what a replica sends back ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Started:
    """The replica decoded the audio and queued it: the request is admitted."""

    duration_s: float
    served_by: str  # replica id @ node id, for logs and the X-Served-By header


@dataclass(frozen=True)
class Finished:
    language: str | None
    decode_s: float  # from the first decoding step to the last, on the replica


@dataclass(frozen=True)
class Failed:
    """An error the single box would have raised, by name (`code`) so it survives pickling as-is."""

    code: str  # invalid_audio | audio_too_long | queue_full | engine_error | cancelled
    message: str
    retry_after_s: int = 0


def failure(exc: BaseException) -> Failed | None:
    """The `Failed` message for an error of ours raised on the replica; None for anything else."""
    if isinstance(exc, AudioTooLong):
        return Failed("audio_too_long", str(exc))
    if isinstance(exc, AudioError):
        return Failed("invalid_audio", str(exc))
    if isinstance(exc, QueueFull):
        return Failed("queue_full", str(exc), exc.retry_after_s)
    if isinstance(exc, EngineFailure):
        return Failed("engine_error", str(exc))
    if isinstance(exc, JobCancelled):
        return Failed("cancelled", str(exc))
    return None


def raised(failed: Failed, model: str) -> Exception:
    """The exception the routes already map to the right envelope, for a replica's `Failed`."""
    if failed.code == "audio_too_long":
        return AudioTooLong(failed.message)
    if failed.code == "invalid_audio":
        return AudioError(failed.message)
    if failed.code == "queue_full":
        return QueueFull(model, failed.retry_after_s or RETRY_AFTER_S)
    if failed.code == "cancelled":
        return JobCancelled(failed.message)
    return EngineFailure(failed.message)


# -- Ray's failures ----------------------------------------------------------------------------------------

LOST = "lost"  # the replica died or became unreachable while it held the request
FULL = "full"  # every replica is busy and the caller-side queue is at its bound
UNAVAILABLE = "unavailable"  # no replica is running (deploying, or all failed)
BROKEN = "broken"  # anything else Ray or the replica raised


def ray_failure(exc: BaseException) -> str:
    """Which of LOST / FULL / UNAVAILABLE / BROKEN a Ray exception is."""
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
    from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError

    if isinstance(exc, BackPressureError):
        return FULL
    if isinstance(exc, DeploymentUnavailableError):
        return UNAVAILABLE
    if isinstance(exc, ActorDiedError | ActorUnavailableError | RayActorError | ReplicaUnavailableError):
        return LOST
    return BROKEN


def may_retry(attempts: int, delivered: int) -> bool:
    """A request whose replica was lost runs once more, unless the client already has some of its text."""
    return attempts < 2 and delivered == 0


# -- the queue -----------------------------------------------------------------------------------------------


class ModelHandle(Protocol):
    """The streaming call into a model deployment (a `DeploymentHandle` with `stream=True`)."""

    def remote(
        self, audio: bytes | Audio, options: TranscribeOptions, priority: int, max_audio_s: float
    ) -> Any:
        """An async iterator of Started / Segment / Finished / Failed that has `cancel()`."""
        ...


class RemoteModelQueue:
    """One model served by a Serve deployment, behind the same interface as a local `ModelQueue`."""

    def __init__(
        self,
        name: str,
        capabilities: Capabilities,
        handle: ModelHandle,
        slots: int,
        classify: Callable[[BaseException], str] = ray_failure,
    ) -> None:
        self.name = name
        self.engine = capabilities
        self.on_finished: Callable[[RemoteJob], None] | None = None
        self._handle = handle
        self._slots = max(1, slots)  # decodes the deployment runs at once (replicas × workers), for estimates
        self._classify = classify
        self._admitted = 0
        self._running = 0
        self._seconds_per_request = (
            2.0  # running estimate of a request's time in the cluster, for Retry-After
        )

    @property
    def depth(self) -> int:
        return self._admitted

    @property
    def running(self) -> int:
        return self._running

    @property
    def spare_workers(self) -> int:
        """An estimate from this ingress's own requests (other ingress replicas are not counted)."""
        return self._slots - self._admitted

    async def admit(
        self,
        audio: bytes | Audio,
        options: TranscribeOptions,
        priority: Priority = Priority.FILE,
        max_audio_s: float = float("inf"),
    ) -> RemoteJob:
        job = RemoteJob(self, (audio, options, int(priority), max_audio_s), priority)
        self._admitted += 1
        try:
            await job.start()
        except BaseException:
            job.release()
            raise
        return job

    def stop(self) -> None:
        """Nothing to stop here: the deployment belongs to Serve."""

    def retry_after(self, waiting: int) -> int:
        return max(1, min(60, math.ceil(max(1, waiting) * self._seconds_per_request / self._slots)))

    def _call(self, payload: tuple) -> Any:
        return self._handle.remote(*payload)

    def _finished(self, job: RemoteJob, took_s: float) -> None:
        self._seconds_per_request = smoothed(self._seconds_per_request, took_s)
        report_finished(self.on_finished, job)


@dataclass(eq=False)
class RemoteJob:
    """A request admitted by a replica; the same surface as a local `Job`."""

    queue: RemoteModelQueue
    payload: tuple
    priority: Priority = Priority.FILE
    duration_s: float = 0.0
    served_by: str | None = None
    language: str | None = None
    started_at: float | None = None
    error: BaseException | None = None
    segments: list[Segment] = field(default_factory=list)
    attempts: int = 0
    _calls: Any = None
    _submitted: float = field(default_factory=time.monotonic)
    _released: bool = False
    _cancelled: bool = False

    @property
    def options(self) -> TranscribeOptions:
        return self.payload[1]

    @property
    def transcript(self) -> Transcript:
        return Transcript.so_far(self.options, self.language, self.duration_s, self.segments)

    async def start(self) -> None:
        """Send the request and wait until a replica admitted it (or say why none did)."""
        while True:
            self.attempts += 1
            self._calls = self.queue._call(self.payload)
            try:
                first = await anext(self._calls)
            except StopAsyncIteration:
                raise ModelUnavailable(self._lost_message(), RETRY_AFTER_S, "replica_lost") from None
            except Exception as exc:
                kind = self.queue._classify(exc)
                if kind == LOST and may_retry(self.attempts, 0):
                    log.warning(
                        "model %s: replica lost before admitting a request; retrying", self.queue.name
                    )
                    continue
                raise self._mapped(kind, exc) from None
            if isinstance(first, Failed):
                raise raised(first, self.queue.name)
            if not isinstance(first, Started):
                raise EngineFailure(f"The model replica answered {type(first).__name__} before admitting.")
            self.duration_s = first.duration_s
            self.served_by = first.served_by
            if self.started_at is None:
                self.started_at = time.monotonic()
                self.queue._running += 1
            return

    async def stream(self) -> AsyncIterator[Segment]:
        """Segments as the replica decodes them. A replica lost before any was yielded: once more elsewhere."""
        async for segment in self._segments(deliver=True):
            yield segment

    async def result(self) -> Transcript:
        async for _ in self._segments(deliver=False):
            pass
        return self.transcript

    async def _segments(self, deliver: bool) -> AsyncIterator[Segment]:
        delivered = 0
        try:
            while True:
                try:
                    async for item in self._calls:
                        if isinstance(item, Segment):
                            self.segments.append(item)
                            if deliver:
                                delivered += 1
                                yield item
                        elif isinstance(item, Finished):
                            self.language = item.language
                            self.queue._finished(self, time.monotonic() - self._submitted)
                            return
                        elif isinstance(item, Failed):
                            raise raised(item, self.queue.name)
                    raise ModelUnavailable(self._lost_message(), RETRY_AFTER_S, "replica_lost")
                except (AudioError, QueueFull, EngineFailure, JobCancelled, ModelUnavailable):
                    raise
                except Exception as exc:
                    kind = self.queue._classify(exc)
                    if self._cancelled:
                        raise JobCancelled("The request was cancelled.") from None
                    if kind == LOST and may_retry(self.attempts, delivered):
                        log.warning("model %s: replica lost mid-request; running it again", self.queue.name)
                        self.segments.clear()
                        try:
                            await self.start()
                        except (QueueFull, ModelUnavailable, AudioError, EngineFailure) as again:
                            raise ModelUnavailable(
                                f"{self._lost_message()} Retrying it failed too: {again}",
                                RETRY_AFTER_S,
                                "replica_lost",
                            ) from None
                        continue
                    raise self._mapped(kind, exc, delivered) from None
        except BaseException as exc:
            self.error = exc
            raise
        finally:
            self.release()

    def cancel(self) -> None:
        self._cancelled = True
        if self._calls is not None and not self._released:
            self._calls.cancel()  # Serve cancels the replica's generator: the job stops at its next step
        self.release()

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.queue._admitted -= 1
            if self.started_at is not None:
                self.queue._running -= 1

    def _mapped(self, kind: str, exc: BaseException, delivered: int = 0) -> Exception:
        if kind == FULL:
            waiting = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 1
            return QueueFull(self.queue.name, self.queue.retry_after(waiting))
        if kind == UNAVAILABLE:
            return ModelUnavailable(
                f"Model '{self.queue.name}' has no running replica right now: {exc}", RETRY_AFTER_S
            )
        if kind == LOST:
            return ModelUnavailable(self._lost_message(delivered), RETRY_AFTER_S, "replica_lost")
        log.error("model %s: the replica failed: %s", self.queue.name, exc)
        return EngineFailure(f"The model replica failed: {exc}")

    def _lost_message(self, delivered: int = 0) -> str:
        part = f" after sending {delivered} segment(s)" if delivered else ""
        return (
            f"The replica serving model '{self.queue.name}' was lost{part}; "
            f"retry the request in about {RETRY_AFTER_S} s."
        )
