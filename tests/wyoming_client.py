"""Home Assistant's side of a Wyoming utterance, with the `wyoming` library's own client: the events its `stt`
integration sends, optionally paced at real time, and every event the server answers with (and when)."""

from __future__ import annotations

import asyncio
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path

from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event

CHUNK_SAMPLES = 1024  # what Home Assistant sends


@dataclass
class Answer:
    events: list[tuple[float, Event]] = field(default_factory=list)  # (seconds since the first audio, event)
    audio_stop_at: float = 0.0

    def of(self, kind: str) -> list[Event]:
        return [e for _, e in self.events if e.type == kind]

    def first_at(self, kind: str) -> float | None:
        return next((t for t, e in self.events if e.type == kind), None)

    @property
    def text(self) -> str:
        return Transcript.from_event(self.of("transcript")[-1]).text

    @property
    def chunks(self) -> list[str]:
        return [e.data["text"] for e in self.of("transcript-chunk")]

    @property
    def error(self) -> Error | None:
        errors = self.of("error")
        return Error.from_event(errors[0]) if errors else None


def read_pcm(path: Path) -> tuple[bytes, int, int, int]:
    """A WAV file's PCM as (bytes, rate, width, channels); float WAVs become 16-bit."""
    try:
        with wave.open(str(path), "rb") as w:
            return w.readframes(w.getnframes()), w.getframerate(), w.getsampwidth(), w.getnchannels()
    except wave.Error:
        import numpy as np
        import soundfile

        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
        pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
        return pcm.tobytes(), rate, 2, samples.shape[1]


async def transcribe(
    host: str,
    port: int,
    pcm: bytes,
    rate: int = 16000,
    width: int = 2,
    channels: int = 1,
    *,
    request: Transcribe | None = None,
    realtime: bool = False,
    trailing_silence_s: float = 0.0,
    timeout_s: float = 120.0,
) -> Answer:
    """One utterance as Home Assistant sends it; the answer ends at `transcript`, `error` or the connection's
    end."""
    frame = width * channels
    pcm = pcm + b"\0" * (int(trailing_silence_s * rate) * frame)
    step = CHUNK_SAMPLES * frame
    answer = Answer()
    try:
        async with AsyncTcpClient(host, port) as client:
            t0 = time.monotonic()

            async def read() -> None:
                while True:
                    try:
                        event = await client.read_event()
                    except ConnectionError:  # reset by the server after its last event
                        return
                    if event is None:
                        return
                    answer.events.append((time.monotonic() - t0, event))
                    if event.type in ("transcript", "error"):
                        return

            reader = asyncio.create_task(read())
            try:
                await client.write_event((request or Transcribe()).event())
                await client.write_event(AudioStart(rate=rate, width=width, channels=channels).event())
                for index, at in enumerate(range(0, len(pcm), step)):
                    if reader.done():
                        break
                    chunk = AudioChunk(rate=rate, width=width, channels=channels, audio=pcm[at : at + step])
                    await client.write_event(chunk.event())
                    if realtime:
                        due = t0 + (index + 1) * CHUNK_SAMPLES / rate
                        await asyncio.sleep(max(0.0, due - time.monotonic()))
                if not reader.done():
                    answer.audio_stop_at = time.monotonic() - t0
                    await client.write_event(AudioStop().event())
            except ConnectionError:
                pass  # the server answered (an error) and closed while audio was still going out: read what it said
            await asyncio.wait_for(reader, timeout_s)
    except ConnectionError:  # closing the connection the server already closed (after its error event)
        if not answer.events:
            raise
    return answer
