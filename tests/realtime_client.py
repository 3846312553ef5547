"""A plain WebSocket client for the realtime protocol tests, and audio in the wire formats."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import time
from dataclasses import dataclass, field

import numpy as np
import soxr
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import Server


def pcm16(samples: np.ndarray, rate: int = 24_000) -> bytes:
    """16 kHz float samples → little-endian PCM16 at `rate`."""
    if rate != 16_000:
        samples = soxr.resample(samples, 16_000, rate)
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def g711(samples: np.ndarray, codec: str) -> bytes:
    """16 kHz float samples → 8 kHz G.711 (`pcm_mulaw` or `pcm_alaw`), encoded by ffmpeg."""
    return subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "s16le", "-ar", "16000", "-ac", "1", "-i", "-",
         "-ar", "8000", "-f", codec.removeprefix("pcm_"), "-c:a", codec, "-"],
        input=pcm16(samples, 16_000), capture_output=True, check=True,
    ).stdout  # fmt: skip


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(16_000 * seconds), dtype=np.float32)


@dataclass
class Session:
    ws: ClientConnection
    events: list[dict] = field(default_factory=list)

    async def send(self, kind: str, **fields) -> None:
        await self.ws.send(json.dumps({"type": kind, **fields}))

    async def append(self, audio: bytes, chunk_bytes: int = 4800, pace_s: float = 0.0) -> None:
        """Send `audio` in chunks (4800 bytes = 100 ms of 24 kHz PCM16), `pace_s` apart."""
        for i in range(0, len(audio), chunk_bytes):
            await self.send(
                "input_audio_buffer.append", audio=base64.b64encode(audio[i : i + chunk_bytes]).decode()
            )
            if pace_s:
                await asyncio.sleep(pace_s)

    async def next(self, kind: str | None = None, timeout: float = 60) -> dict:
        """The next event (of `kind`, when given), recording every event seen on the way."""
        deadline = time.monotonic() + timeout
        while True:
            raw = await asyncio.wait_for(self.ws.recv(), max(0.01, deadline - time.monotonic()))
            message = json.loads(raw)
            message["_at"] = time.monotonic()
            self.events.append(message)
            if kind is None or message["type"] == kind:
                return message

    async def until(self, kind: str, count: int = 1, timeout: float = 120) -> list[dict]:
        found = [e for e in self.events if e["type"] == kind]
        while len(found) < count:
            found.append(await self.next(kind, timeout))
        return found

    def of(self, kind: str) -> list[dict]:
        return [e for e in self.events if e["type"] == kind]


def url(server: Server, query: str = "intent=transcription") -> str:
    return server.url.replace("http://", "ws://") + "/v1/realtime" + (f"?{query}" if query else "")


async def open_session(server: Server, query: str = "intent=transcription", **kwargs) -> Session:
    ws = await connect(url(server, query), max_size=None, **kwargs)
    session = Session(ws)
    created = await session.next()
    assert created["type"] == "session.created", created
    return session


def transcription_session(**audio_input) -> dict:
    return {"type": "transcription", "audio": {"input": audio_input}}


async def partials_turn(server: Server, model: str, audio: np.ndarray) -> tuple[Session, dict]:
    """One turn with live partials (`delay: minimal`): the speech at real-time pace (100 ms every 100 ms), then the
    silence that ends the turn only once a word has come back — the test depends on event order, not on how fast
    the machine decodes. The session's events and the turn's `completed` event."""
    s = await open_session(server)
    await s.send(
        "session.update", session=transcription_session(transcription={"model": model, "delay": "minimal"})
    )
    await s.next("session.updated")
    await s.append(pcm16(audio), pace_s=0.1)
    await s.next("conversation.item.input_audio_transcription.delta", timeout=120)
    await s.append(pcm16(silence(1.2)))
    done = await s.next("conversation.item.input_audio_transcription.completed")
    await s.ws.close()
    return s, done
