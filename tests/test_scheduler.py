"""The per-model scheduler in-process on a real engine: priorities and a bounded wait under steady load."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import numpy as np
import pytest

from open_stt_server import scheduler
from open_stt_server.audio import decode_audio
from open_stt_server.scheduler import ModelQueue, Priority
from open_stt_server.transcript import TranscribeOptions
from tests.conftest import SAMPLES, whisper_engine


@pytest.fixture(scope="module")
def tiny(hf_home: Path):
    return whisper_engine(hf_home, "whisper-tiny.en", workers=1)


def clips() -> list[np.ndarray]:
    return [decode_audio(p.read_bytes(), 60).samples for p in sorted((SAMPLES / "en").glob("*.wav"))]


def test_a_long_file_is_not_starved_by_a_closed_loop_of_short_clips(tiny, long_speech, monkeypatch) -> None:
    """Four clients keep sending short clips back to back while a long file waits. Shortest-first alone would
    never run the file while a clip is waiting; with deadlines, no clip submitted after the file's deadline
    starts before the file does, and every request ends with its transcript."""
    monkeypatch.setattr(
        scheduler, "WAIT_PER_AUDIO_SECOND", 0.05
    )  # a deadline a few seconds out: a short test
    long_samples = decode_audio(long_speech.read_bytes(), 600).samples
    short = clips()
    options = TranscribeOptions(language="en", batched=False)

    async def run() -> tuple[scheduler.Job, list[scheduler.Job]]:
        queue = ModelQueue("tiny", tiny, workers=1, max_queue=16)
        pool = itertools.cycle(short)
        done: list[scheduler.Job] = []
        try:
            # the clients are running before the file arrives, so a clip is always waiting
            first = [queue.submit(next(pool), options, 2.0) for _ in range(4)]
            long_job = queue.submit(long_samples, options, len(long_samples) / 16000)
            long_deadline = long_job.deadline

            async def client(job: scheduler.Job) -> None:
                while True:
                    await job.result()
                    done.append(job)
                    if time.monotonic() > long_deadline + 1.0 and long_job.started_at is not None:
                        return
                    samples = next(pool)
                    job = queue.submit(samples, options, len(samples) / 16000)

            await asyncio.wait_for(asyncio.gather(long_job.result(), *(client(j) for j in first)), 300)
            return long_job, done
        finally:
            queue.stop()

    long_job, done = asyncio.run(run())
    assert all(job.error is None and job.segments for job in [long_job, *done])
    after_deadline = [j for j in done if j.submitted_at > long_job.submitted_at + 0.05 * long_job.duration_s]
    assert after_deadline, "the load did not outlast the file's deadline"
    assert all(j.started_at >= long_job.started_at for j in after_deadline)
    # and shorter work still goes first before the deadline: the file did not simply run in arrival order
    assert any(j.submitted_at > long_job.submitted_at and j.started_at < long_job.started_at for j in done)


def test_priority_classes_come_before_deadlines(tiny) -> None:
    """A finished live turn goes ahead of waiting files; a speculative pass waits for spare capacity."""
    short = clips()
    options = TranscribeOptions(language="en")

    async def run() -> list[str]:
        queue = ModelQueue("tiny", tiny, workers=1, max_queue=16)
        order: list[str] = []
        try:
            blocker = queue.submit(short[0], options, 2.0)
            while blocker.started_at is None:  # the worker is busy with it before the others arrive
                await asyncio.sleep(0.001)
            with queue._cond:  # all three wait together: the worker cannot take one before the others exist
                jobs = {
                    "speculative": queue.submit(short[1], options, 1.0, Priority.SPECULATIVE),
                    "file": queue.submit(short[2], options, 1.0),
                    "turn": queue.submit(short[1], options, 3.0, Priority.TURN),
                    "blocker": blocker,
                }

            async def finish(name: str, job: scheduler.Job) -> None:
                await job.result()
                order.append(name)

            await asyncio.gather(*(finish(n, j) for n, j in jobs.items()))
            return order
        finally:
            queue.stop()

    order = asyncio.run(run())
    assert [name for name in order if name != "blocker"] == ["turn", "file", "speculative"]
    assert order[-1] == "speculative"  # even the blocker's remaining steps go before it


def test_an_overdue_file_competes_with_turns_on_deadlines(tiny) -> None:
    """Turns go first, but a file that has waited past its deadline plus the grace is no longer passed by a turn
    that arrived after it (with no grace and no audio left to wait for, the file is overdue from the start)."""
    short = clips()
    options = TranscribeOptions(language="en")

    async def run() -> list[str]:
        queue = ModelQueue("tiny", tiny, workers=1, max_queue=16, file_grace_s=0.0)
        order: list[str] = []
        try:
            blocker = queue.submit(short[0], options, 2.0)
            while blocker.started_at is None:
                await asyncio.sleep(0.001)
            with queue._cond:
                jobs = {
                    "file": queue.submit(short[2], options, 0.0),
                    "turn": queue.submit(short[1], options, 3.0, Priority.TURN),
                }

            async def finish(name: str, job: scheduler.Job) -> None:
                await job.result()
                order.append(name)

            await asyncio.gather(blocker.result(), *(finish(n, j) for n, j in jobs.items()))
            return order
        finally:
            queue.stop()

    assert asyncio.run(run()) == ["file", "turn"]
