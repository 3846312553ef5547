"""The one transport-neutral way to run a transcription: admit it to its model's queue, wait for it within the
request's time limit and while its caller is still there, and hand back the transcript or its segments as they
come. Every door — HTTP files, live streams (realtime sessions, Wyoming utterances) — runs its work through this;
the queue behind it may be local (`scheduler.ModelQueue`) or a cluster replica (`cluster.remote`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from open_stt_server.audio import Audio
from open_stt_server.scheduler import Priority, TranscriptionJob, TranscriptionQueue
from open_stt_server.transcript import Segment, TranscribeOptions, Transcript

GONE_POLL_S = 0.5  # how often a waiting transcription asks whether its caller is still there


class TimedOut(Exception):
    """The transcription did not finish within its time limit; its work was stopped."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"not finished within {seconds:g} s")
        self.seconds = seconds


class CallerGone(Exception):
    """The caller went away while waiting; the work was stopped."""


@dataclass
class Transcription:
    job: TranscriptionJob
    timeout_s: float  # 0 = no limit
    started: float

    @classmethod
    async def start(
        cls,
        queue: TranscriptionQueue,
        audio: bytes | Audio,
        options: TranscribeOptions,
        *,
        priority: Priority = Priority.FILE,
        max_audio_s: float = float("inf"),
        timeout_s: float = 0.0,
    ) -> Transcription:
        """Admit the work (an upload, decoded where the model runs, or samples). Raises what the queue refuses
        with: AudioError / AudioTooLong, QueueFull, ModelUnavailable."""
        job = await queue.admit(audio, options, priority, max_audio_s)
        return cls(job, timeout_s, time.monotonic())  # the limit counts from admission, as the wait does

    def remaining_s(self) -> float | None:
        """Time left under the limit; None when there is none."""
        return None if not self.timeout_s else self.timeout_s - (time.monotonic() - self.started)

    def cancel(self) -> None:
        self.job.cancel()

    async def segments(self) -> AsyncIterator[Segment]:
        """Segments as they are decoded; TimedOut when the limit passes (the job's own failure otherwise). The
        work stops when the iteration ends early."""
        stream = self.job.stream()
        try:
            while True:
                left = self.remaining_s()
                if left is not None and left <= 0:
                    raise TimedOut(self.timeout_s)
                try:
                    segment = await asyncio.wait_for(anext(stream), left)
                except StopAsyncIteration:
                    return
                except asyncio.TimeoutError:
                    raise TimedOut(self.timeout_s) from None
                yield segment
        finally:
            self.job.cancel()  # a no-op when the job finished

    async def transcript(self, caller_gone: Callable[[], Awaitable[bool]] | None = None) -> Transcript:
        """The finished transcript; TimedOut when the limit passes, CallerGone when `caller_gone()` says so."""
        result = asyncio.ensure_future(self.job.result())

        async def watch() -> None:
            while caller_gone is not None and not await caller_gone():
                await asyncio.sleep(GONE_POLL_S)

        watcher = asyncio.ensure_future(watch()) if caller_gone is not None else None
        try:
            done, _ = await asyncio.wait(
                {result} | ({watcher} if watcher else set()),
                timeout=self.remaining_s(),
                return_when=asyncio.FIRST_COMPLETED,
            )
            if result in done:
                return result.result()
            if watcher in done:
                raise CallerGone
            raise TimedOut(self.timeout_s)
        finally:
            if watcher is not None:
                watcher.cancel()
            if not result.done():
                result.cancel()
            self.job.cancel()  # a no-op when the job finished
