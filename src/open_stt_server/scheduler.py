"""Per-model queues and worker threads between HTTP and the engines.

Work is scheduled one decoding step (≈ one 30-second window, yielding a segment) at a time: after each step a
job goes back to its model's ready set, and a cancelled job stops at its next step.

Which job a free worker takes: the highest priority class first (a live turn before a file, a file before a
speculative pass over an unfinished turn), and within a class the earliest *deadline*, where a job's deadline
is the time it was submitted plus `WAIT_PER_AUDIO_SECOND` × the audio it has left. A short request arriving
while a long file is being transcribed has the nearer deadline and starts at the next step of a worker instead
of waiting for the long file to finish; but a deadline never moves later, so anything submitted after a job's
deadline waits behind it: no request can be passed for ever (shortest-first alone let clips a little longer
than their neighbours wait while newer, shorter ones kept passing them).

Routes and realtime sessions reach a model only through `TranscriptionQueue` (`admit` an upload or samples, get
a job to stream or await): `ModelQueue` here, and in cluster mode `cluster.remote.RemoteModelQueue`, which sends
the same call to a model replica on another machine.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Protocol

import anyio
import numpy as np

from open_stt_server.audio import Audio, decode_audio
from open_stt_server.catalog import loaded_name
from open_stt_server.engines import Capabilities, Decoding, Engine, lower_current_thread_priority
from open_stt_server.transcript import Segment, TranscribeOptions, Transcript

log = logging.getLogger(__name__)


class QueueFull(RuntimeError):
    def __init__(self, model: str, retry_after_s: int) -> None:
        super().__init__(f"Model '{model}' is busy: its queue is full. Retry in about {retry_after_s} s.")
        self.retry_after_s = retry_after_s


class JobCancelled(RuntimeError):
    pass


class EngineFailure(RuntimeError):
    """The engine raised while decoding: a bug or a resource problem, not the client's fault."""


class ModelUnavailable(RuntimeError):
    """No replica of the model can take or finish the request right now (cluster mode): retry later."""

    def __init__(self, message: str, retry_after_s: int = 5, code: str = "model_unavailable") -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.code = code


_DONE = object()

# How long a request may be passed by shorter ones, per second of audio it has left: a 4 s clip can be passed for
# 1 s, a 10-minute file for 150 s (while another worker is free it runs at once all the same).
WAIT_PER_AUDIO_SECOND = 0.25


FILE_GRACE_S = 1.0  # how long past its deadline a file window waits behind realtime turns


def smoothed(estimate: float, observed: float) -> float:
    """A running estimate moved a fifth of the way towards what was just observed (for Retry-After)."""
    return 0.8 * estimate + 0.2 * observed


def report_finished(hook: Callable | None, job: object) -> None:
    """Tell a queue's on_finished hook (metrics) about a finished job; a failing hook never breaks serving."""
    if hook is not None:
        try:
            hook(job)
        except Exception:
            log.exception("on_finished hook failed")


class Priority(IntEnum):
    """Classes of work, the lower the sooner."""

    TURN = 0  # a realtime turn that its speaker has finished: someone is waiting for the text now
    FILE = 1  # an uploaded file
    SPECULATIVE = 2  # a pass over a turn still being spoken (live partials): only spare capacity


@dataclass(eq=False)
class Job:
    samples: np.ndarray
    options: TranscribeOptions
    duration_s: float
    loop: asyncio.AbstractEventLoop
    priority: Priority = Priority.FILE
    submitted_at: float = field(default_factory=time.monotonic)
    language: str | None = None
    segments: list[Segment] = field(default_factory=list)
    decoding: Decoding | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    started_at: float | None = None
    served_by: str | None = None  # which process decodes it, when that is not this one (cluster mode)

    @property
    def remaining_s(self) -> float:
        done = self.segments[-1].end if self.segments else 0.0
        return max(0.0, self.duration_s - done)

    @property
    def deadline(self) -> float:
        """When this job should have its next step at the latest, on the monotonic clock."""
        return self.submitted_at + WAIT_PER_AUDIO_SECOND * self.remaining_s

    def cancel(self) -> None:
        self.cancelled.set()

    @property
    def transcript(self) -> Transcript:
        return Transcript.so_far(self.options, self.language, self.duration_s, self.segments)

    async def stream(self) -> AsyncIterator[Segment]:
        """Segments as they are decoded; raises the job's error at the end if it failed."""
        while True:
            item = await self.events.get()
            if item is _DONE:
                break
            yield item
        if self.error is not None:
            raise self.error

    async def result(self) -> Transcript:
        async for _ in self.stream():
            pass
        return self.transcript

    # called from worker threads
    def _emit(self, item: object) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, item)


class TranscriptionJob(Protocol):
    """An admitted request: its segments as they are decoded, or the whole transcript."""

    duration_s: float
    priority: (
        Priority  # raising it while the job waits moves it up (on this machine; a replica keeps its own)
    )
    language: str | None
    started_at: float | None  # when decoding began (monotonic, this process)
    error: BaseException | None
    served_by: str | None

    @property
    def transcript(self) -> Transcript: ...

    def stream(self) -> AsyncIterator[Segment]: ...

    async def result(self) -> Transcript: ...

    def cancel(self) -> None: ...


class TranscriptionQueue(Protocol):
    """What routes and realtime sessions use to reach one model, on this machine or on a cluster."""

    name: str
    engine: Engine | Capabilities  # what the model can do; validation reads only capabilities
    on_finished: Callable[[TranscriptionJob], None] | None

    @property
    def depth(self) -> int: ...

    @property
    def running(self) -> int: ...

    @property
    def spare_workers(self) -> int: ...

    async def admit(
        self,
        audio: bytes | Audio,
        options: TranscribeOptions,
        priority: Priority = Priority.FILE,
        max_audio_s: float = float("inf"),
    ) -> TranscriptionJob:
        """Queue a request: an upload (decoded where the model runs) or decoded samples. Raises AudioError /
        AudioTooLong for bad audio and QueueFull (or ModelUnavailable) before the job exists."""
        ...

    def stop(self) -> None: ...


class ModelQueue:
    """One model's admitted jobs (running or waiting) and the worker threads that step them."""

    def __init__(
        self,
        name: str,
        engine: Engine,
        workers: int,
        max_queue: int,
        on_finished: Callable[[Job], None] | None = None,
        file_grace_s: float = FILE_GRACE_S,
    ) -> None:
        self.name = name
        self.file_grace_s = file_grace_s
        self.engine = engine
        self.max_queue = max_queue
        self._ready: list[Job] = []
        self._admitted = 0
        self._running = 0
        self._speculating = 0  # speculative steps running
        self._cond = threading.Condition()
        self._stopping = False
        self.on_finished = on_finished
        self._seconds_per_audio_second = 0.3  # running estimate, for Retry-After
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-worker-{i}", daemon=True)
            for i in range(workers)
        ]
        for t in self._threads:
            t.start()

    # -- observed from outside (metrics, autoscalers) ----------------------------------------------------
    @property
    def depth(self) -> int:
        """Requests admitted and not finished (running + waiting)."""
        return self._admitted

    @property
    def running(self) -> int:
        return self._running

    # -- admission ---------------------------------------------------------------------------------------
    def submit(
        self,
        samples: np.ndarray,
        options: TranscribeOptions,
        duration_s: float,
        priority: Priority = Priority.FILE,
    ) -> Job:
        job = Job(samples, options, duration_s, asyncio.get_running_loop(), priority)
        with self._cond:
            if self._stopping:
                raise QueueFull(self.name, 5)
            if self._admitted >= self.max_queue:
                raise QueueFull(self.name, self._retry_after())
            self._admitted += 1
            self._ready.append(job)
            self._cond.notify()
        return job

    async def admit(
        self,
        audio: bytes | Audio,
        options: TranscribeOptions,
        priority: Priority = Priority.FILE,
        max_audio_s: float = float("inf"),
    ) -> Job:
        if isinstance(audio, bytes):
            audio = await anyio.to_thread.run_sync(decode_audio, audio, max_audio_s)
        return self.submit(audio.samples, options, audio.duration_s, priority)

    @property
    def spare_workers(self) -> int:
        """Workers neither busy nor about to be: what speculative work may use without delaying anyone."""
        with self._cond:
            return len(self._threads) - self._running - len(self._ready)

    def _retry_after(self) -> int:
        waiting_audio = sum(j.remaining_s for j in self._ready)
        workers = max(1, len(self._threads))
        return max(1, min(60, round(waiting_audio * self._seconds_per_audio_second / workers)))

    def stop(self, timeout_s: float = 5.0) -> None:
        with self._cond:
            self._stopping = True
            for job in self._ready:
                job.cancel()
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout=timeout_s)

    # -- workers -----------------------------------------------------------------------------------------
    def _work(self) -> None:
        lower_current_thread_priority()
        while True:
            with self._cond:
                while (job := self._next_job()) is None and not self._stopping:
                    self._cond.wait()
                if job is None:
                    return
                self._ready.remove(job)
                self._running += 1
                speculative = job.priority == Priority.SPECULATIVE
                self._speculating += speculative
            try:
                requeue = self._step(job)
            finally:
                with self._cond:
                    self._running -= 1
                    self._speculating -= speculative
                    self._cond.notify()
                    if requeue:
                        self._ready.append(job)
                        self._cond.notify()
                    else:
                        self._admitted -= 1

    def _next_job(self) -> Job | None:
        """The ready job to step next: by priority class, then deadline. Speculative work (live partials) never
        takes the last worker, so a file window or a turn that arrives finds one free."""
        if not self._ready:
            return None
        now = time.monotonic()

        def rank(j: Job) -> tuple[int, float, float]:
            # A file window that has waited past its deadline by file_grace_s competes with realtime turns on
            # deadlines: turns go first, but not so far first that a busy machine would never serve a file.
            overdue = j.priority == Priority.FILE and now >= j.deadline + self.file_grace_s
            cls = Priority.TURN if overdue else j.priority
            return (cls, j.deadline, j.submitted_at)

        job = min(self._ready, key=rank)
        if job.priority == Priority.SPECULATIVE and self._speculating >= max(1, len(self._threads) - 1):
            return None
        return job

    def _step(self, job: Job) -> bool:
        """Advance `job` by one decoding step; True when it has more to do."""
        if job.cancelled.is_set():
            self._finish(job, JobCancelled("The request was cancelled."))
            return False
        try:
            if job.decoding is None:
                job.started_at = time.monotonic()
                job.decoding = self.engine.start(job.samples, job.options, job.cancelled)
            segment = next(job.decoding.segments, None)
            job.language = job.decoding.language  # an engine may learn it with its first segment
        except Exception as exc:
            log.exception("engine failed on model %s", self.name)
            self._finish(job, EngineFailure(f"The model failed while transcribing: {exc}"))
            return False
        if job.cancelled.is_set():  # an engine that stops mid-step returns what it had: not a result
            self._finish(job, JobCancelled("The request was cancelled."))
            return False
        if segment is None:
            self._finish(job, None)
            return False
        job.segments.append(segment)
        job._emit(segment)
        return True

    def _finish(self, job: Job, error: BaseException | None) -> None:
        job.error = error
        job.samples = np.empty(0, dtype=np.float32)  # release the audio early
        if error is None and job.started_at is not None and job.duration_s > 0:
            took = time.monotonic() - job.started_at
            self._seconds_per_audio_second = smoothed(self._seconds_per_audio_second, took / job.duration_s)
        job._emit(_DONE)
        report_finished(self.on_finished, job)


class ServedModels:
    """The loaded models by name, each with its queue; resolves the names clients send."""

    def __init__(
        self,
        queues: dict[str, TranscriptionQueue],
        default: str,
        loaded_at: int,
        load_seconds: dict[str, float] | None = None,
        aliases: dict[str, str] | None = None,
    ) -> None:
        self.queues = queues
        self.default = default
        self.aliases = aliases or {}  # OpenAI model names → the loaded model that serves them
        self.loaded_at = loaded_at
        self.load_seconds = load_seconds or {}

    def names(self) -> list[str]:
        return sorted(self.queues)

    def resolve(self, requested: str | None) -> TranscriptionQueue | None:
        """The queue serving `requested` (names are the catalog's to read); None when no loaded model answers."""
        specs = {name: queue.engine.spec for name, queue in self.queues.items()}
        name = loaded_name(requested, specs, self.default, self.aliases)
        return None if name is None else self.queues[name]

    def depths(self) -> dict[str, tuple[int, int]]:
        return {name: (q.depth, q.running) for name, q in self.queues.items()}

    def stop(self) -> None:
        for queue in self.queues.values():
            queue.stop()
            queue.engine.close()
