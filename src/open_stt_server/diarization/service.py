"""Diarization off the event loop: one low-priority thread, cancellable between steps."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading

import numpy as np

from open_stt_server.diarization.diarizer import DiarizationRequest, Diarizer, SpeakerTurn
from open_stt_server.engines import lower_current_thread_priority


class DiarizationService:
    def __init__(self, diarizer: Diarizer) -> None:
        self.diarizer = diarizer
        # One at a time: a diarization is a few seconds of CPU per hour of audio, and runs beside the decodes.
        self._pool = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="diarize", initializer=lower_current_thread_priority
        )

    @property
    def name(self) -> str:
        return self.diarizer.name

    def submit(self, samples: np.ndarray, request: DiarizationRequest) -> DiarizationJob:
        cancelled = threading.Event()
        future = self._pool.submit(self.diarizer.diarize, samples, request, cancelled)
        return DiarizationJob(asyncio.wrap_future(future), cancelled)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class DiarizationJob:
    def __init__(self, future: asyncio.Future[list[SpeakerTurn]], cancelled: threading.Event) -> None:
        self.future = future
        self._cancelled = cancelled

    async def turns(self) -> list[SpeakerTurn]:
        return await asyncio.shield(self.future)

    def cancel(self) -> None:
        self._cancelled.set()
        self.future.cancel()
