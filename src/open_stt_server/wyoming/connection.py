"""One Wyoming connection: its events in, one utterance at a time as a live speech stream, and the stream's
events out as `transcript-start`, `transcript-chunk`s, `transcript-stop` and the final `transcript`.

Any error is answered with an `error` event and ends the connection: the protocol has no way to say which request
failed, and Home Assistant waits for a `transcript` or the end of the connection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from wyoming.asr import Transcribe, Transcript, TranscriptChunk, TranscriptStart, TranscriptStop
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event, async_read_event, async_write_event
from wyoming.info import Describe
from wyoming.ping import Ping, Pong
from wyoming.server import AsyncEventHandler

from open_stt_server.languages import UnsupportedLanguage, model_language
from open_stt_server.live.audio import InvalidAudio, PcmDecoder
from open_stt_server.live.events import (
    BufferFull,
    LiveEvent,
    SpeechStopped,
    TextDelta,
    TurnCommitted,
    TurnFailed,
    TurnTranscribed,
)
from open_stt_server.live.stream import BufferTooSmall, LiveOptions, SpeechStream
from open_stt_server.live.vad import VadSettings
from open_stt_server.scheduler import TranscriptionQueue
from open_stt_server.wyoming.door import WyomingDoor
from open_stt_server.wyoming.info import wyoming_info

log = logging.getLogger(__name__)

MAX_EVENT_BYTES = 4 * 1024 * 1024  # an event's data or payload; Home Assistant sends 2 KiB chunks
# Silence that ends an utterance with server endpointing, by the client's `vad_sensitivity` (Home Assistant's own
# command timeouts for the same names).
ENDPOINT_SILENCE_MS = {"aggressive": 250, "default": 700, "relaxed": 1250}
HINT_CHARS = 200
# After an error, what the client still sends is read away for up to this long before the connection closes:
# closing with unread data resets the connection, and the client may lose the error event it has not read yet.
LINGER_S = 2.0


class ClientError(Exception):
    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.message, self.code = message, code


class _WatchedReader:
    """The socket's reader as the `wyoming` library reads it, noting what it saw: the library answers a malformed
    or oversized event with None, as it does the end of the stream."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader
        self.line = b""
        self.problem: str | None = None

    async def readline(self) -> bytes:
        try:
            self.line = await self._reader.readline()
        except ValueError:
            self.problem = "An event header is longer than this server reads."
            raise
        return self.line

    async def readexactly(self, count: int) -> bytes:
        if count > MAX_EVENT_BYTES:
            self.problem = f"An event carries {count} bytes; this server reads at most {MAX_EVENT_BYTES}."
            raise ValueError(self.problem)
        return await self._reader.readexactly(count)


@dataclass
class Utterance:
    queue: TranscriptionQueue
    stream: SpeechStream
    decoder: PcmDecoder
    language: str | None
    started_transcript: bool = False
    turn: str | None = None  # the turn whose transcript answers the utterance, once committed
    ended_at: float | None = None  # audio-stop, or the server's endpoint
    answered: bool = False
    holds_slot: bool = True  # one of the model's live-stream slots
    audio_seconds: float = 0.0


class WyomingConnection(AsyncEventHandler):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, door: WyomingDoor) -> None:
        super().__init__(reader, writer)
        self.door = door
        self.request = Transcribe()
        self.target: tuple[TranscriptionQueue, str | None] | None = None  # the request's model and language
        self.utterance: Utterance | None = None
        self._outbox: asyncio.Queue[Event | None] = asyncio.Queue()
        self._writer_task = asyncio.create_task(self._write_all())
        self._closing = False
        self._errored = False

    # -- the connection -----------------------------------------------------------------------------------

    async def run(self) -> None:
        reader = _WatchedReader(self.reader)
        self.door.opened(self)
        try:
            while not self._closing:
                try:
                    event = await asyncio.wait_for(async_read_event(reader), self.door.idle_timeout_s)  # type: ignore[arg-type]
                except asyncio.TimeoutError:
                    self._send_error(
                        f"No event for {self.door.idle_timeout_s:g} s: the connection is closed.",
                        "idle_timeout",
                    )
                    break
                except (asyncio.IncompleteReadError, ConnectionError):
                    break  # the client went away mid-event
                except Exception:  # valid JSON that is not an event (no type, not an object)
                    self._send_error("An event could not be read: send Wyoming events.", "invalid_event")
                    break
                if event is None:
                    if reader.problem or reader.line.strip():
                        self._send_error(
                            reader.problem or "An event header is not valid JSON.", "invalid_event"
                        )
                    break
                try:
                    await self.handle_event(event)
                except ClientError as exc:
                    self._send_error(exc.message, exc.code)
                    break
        finally:
            await self.disconnect()

    async def disconnect(self) -> None:
        if self.utterance is not None:
            await self._end_utterance(self.utterance)
        self._outbox.put_nowait(None)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._writer_task, 5)
        self._writer_task.cancel()
        if self._errored:  # the client may still be sending: read it away so that closing does not reset the
            with contextlib.suppress(Exception):  # connection before the error event was read
                self.writer.write_eof()
                await asyncio.wait_for(self._discard_input(), LINGER_S)
        with contextlib.suppress(Exception):
            self.writer.close()
        self.door.closed(self)

    async def _discard_input(self) -> None:
        while await self.reader.read(1 << 16):
            pass

    async def stop(self) -> None:
        self._closing = True
        await super().stop()

    def _send(self, event: Event) -> None:
        self._outbox.put_nowait(event)

    def _send_error(self, message: str, code: str) -> None:
        log.info("wyoming: %s (%s)", message, code)
        self._errored = True
        self._send(Error(text=message, code=code).event())

    async def _write_all(self) -> None:
        """One writer, so events leave in the order they were made."""
        while True:
            event = await self._outbox.get()
            if event is None:
                return
            try:
                await async_write_event(event, self.writer)
            except Exception:  # the client went away: stop writing, the reader sees the end too
                return

    # -- client events ------------------------------------------------------------------------------------

    async def handle_event(self, event: Event) -> bool:
        if Describe.is_type(event.type):
            self._send(wyoming_info(self.door.served, self.door.endpointing).event())
        elif Ping.is_type(event.type):
            self._send(Pong(text=Ping.from_event(event).text).event())
        elif Transcribe.is_type(event.type):
            self.request = Transcribe.from_event(event)
            self.target = self._queue_for(self.request)  # an unknown model or language is an error now
        elif AudioStart.is_type(event.type):
            await self._start(AudioStart.from_event(event))
        elif AudioChunk.is_type(event.type):
            self._chunk(AudioChunk.from_event(event))
        elif AudioStop.is_type(event.type):
            self._stop()
        else:
            log.debug("wyoming: ignored a '%s' event", event.type)
        return True

    def _queue_for(self, request: Transcribe) -> tuple[TranscriptionQueue, str | None]:
        served = self.door.served
        queue = served.resolve(request.name) if request.name else served.resolve(None)
        if queue is None:
            raise ClientError(
                f"The model '{request.name}' is not loaded on this server. Loaded: {', '.join(served.names())}.",
                "model_not_found",
            )
        language = None
        if request.language:
            engine = queue.engine
            try:
                language = model_language(request.language, queue.name, engine.english_only, engine.languages)
            except UnsupportedLanguage as exc:
                raise ClientError(str(exc), "unsupported_language") from None
        return queue, language

    async def _start(self, start: AudioStart) -> None:
        if self.utterance is not None:
            await self._end_utterance(self.utterance)
        queue, language = self.target or self._queue_for(self.request)
        try:
            decoder = PcmDecoder(start.rate, start.width, start.channels)
        except InvalidAudio as exc:
            raise ClientError(str(exc), "invalid_audio") from None
        if not self.door.take_slot(queue.name):
            raise ClientError(
                f"This server already serves {self.door.max_streams} live streams on '{queue.name}'; try again "
                "later.",
                "session_limit_reached",
            )
        stream = SpeechStream(queue, self._options(language), lambda e: self._render(utterance, e))
        utterance = Utterance(queue, stream, decoder, language)
        self.utterance = utterance

    def _options(self, language: str | None) -> LiveOptions:
        names = [n for n in (self.request.transcript_names or []) if isinstance(n, str)]
        terms = [t for t in (self.request.transcript_terms or []) if isinstance(t, str)]
        hints = ", ".join(names + terms)[:HINT_CHARS] or None
        vad = None
        if self.door.endpointing:
            sensitivity = getattr(self.request.vad_sensitivity, "value", self.request.vad_sensitivity)
            silence = ENDPOINT_SILENCE_MS.get(str(sensitivity or "default"), ENDPOINT_SILENCE_MS["default"])
            vad = VadSettings(silence_duration_ms=silence)
        return LiveOptions(
            language=language,
            prompt=hints or "",  # Whisper reads names best as earlier text; hotwords weigh them again
            hotwords=hints,
            vad=vad,
            partials=self.door.partials,
            partials_bind=True,  # Wyoming: the transcript-chunks join to the final transcript
            max_buffer_s=self.door.max_buffer_s,
        )

    def _chunk(self, chunk: AudioChunk) -> None:
        utterance = self.utterance
        if utterance is None:
            raise ClientError(
                "Audio arrived before 'audio-start': send audio-start first.", "audio_not_started"
            )
        if utterance.ended_at is not None:
            return  # the server ended the utterance (endpointing): the rest is not needed
        decoder = utterance.decoder
        if (chunk.rate, chunk.width, chunk.channels) != (decoder.rate, decoder.width, decoder.channels):
            try:
                utterance.decoder = decoder = PcmDecoder(chunk.rate, chunk.width, chunk.channels)
            except InvalidAudio as exc:
                raise ClientError(str(exc), "invalid_audio") from None
        samples, seconds = decoder.decode(chunk.audio or b"")
        utterance.audio_seconds += seconds
        utterance.stream.append(samples, seconds)

    def _stop(self) -> None:
        utterance = self.utterance
        if utterance is None:
            raise ClientError("'audio-stop' arrived before 'audio-start'.", "audio_not_started")
        if utterance.ended_at is not None:
            return  # already ended by the server's endpointing
        utterance.ended_at = time.monotonic()
        stream = utterance.stream
        try:
            if stream.options.vad is not None and stream.open is None:
                raise BufferTooSmall(0)  # endpointing heard no speech at all
            utterance.turn = stream.commit()
        except BufferTooSmall:
            self._answer(utterance, "", utterance.language)

    # -- the stream's events as Wyoming's -----------------------------------------------------------------

    def _render(self, utterance: Utterance, happened: LiveEvent) -> None:
        if utterance.answered:
            return
        if isinstance(happened, SpeechStopped) and utterance.ended_at is None:
            utterance.ended_at = time.monotonic()  # the server's endpoint: what follows is ignored
        elif isinstance(happened, TurnCommitted) and utterance.turn is None:
            utterance.turn = happened.turn
        elif isinstance(happened, TextDelta) and utterance.turn in (None, happened.turn):
            self._start_transcript(utterance)
            self._send(TranscriptChunk(text=happened.text).event())
        elif isinstance(happened, TurnTranscribed) and happened.turn == utterance.turn:
            self._answer(utterance, happened.text, happened.language)
        elif isinstance(happened, TurnFailed) and happened.turn == utterance.turn:
            self._fail(utterance, happened.message, happened.code)
        elif isinstance(happened, BufferFull):
            self._fail(
                utterance,
                f"The utterance is longer than this server's {happened.limit_s:g} s limit.",
                "audio_too_long",
            )

    def _start_transcript(self, utterance: Utterance) -> None:
        if not utterance.started_transcript:
            utterance.started_transcript = True
            self._send(TranscriptStart(language=utterance.language).event())

    def _answer(self, utterance: Utterance, text: str, language: str | None) -> None:
        self._start_transcript(utterance)
        self._send(TranscriptStop().event())  # the stream's deltas, sent as chunks, already join to `text`
        self._send(Transcript(text=text, language=language or utterance.language).event())
        utterance.answered = True
        self.door.answered(
            utterance.queue.name, utterance.audio_seconds, self._latency(utterance), "transcribed"
        )
        self._release(utterance)

    def _fail(self, utterance: Utterance, message: str, code: str) -> None:
        self._send_error(message, code)
        utterance.answered = True
        self.door.answered(utterance.queue.name, utterance.audio_seconds, None, "failed")
        self._release(utterance)
        self._closing = True
        self.reader.feed_eof()

    @staticmethod
    def _latency(utterance: Utterance) -> float | None:
        return None if utterance.ended_at is None else time.monotonic() - utterance.ended_at

    def _release(self, utterance: Utterance) -> None:
        """The utterance is over: its slot back, its stream closed (off this call's task, which may be the
        stream's own decoder)."""
        if self.utterance is utterance:
            self.utterance = None
        asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(self._end_utterance(utterance)))

    async def _end_utterance(self, utterance: Utterance) -> None:
        if self.utterance is utterance:
            self.utterance = None
        if not utterance.answered:
            utterance.answered = True
            self.door.answered(utterance.queue.name, utterance.audio_seconds, None, "abandoned")
        if utterance.holds_slot:
            utterance.holds_slot = False
            self.door.give_slot(utterance.queue.name)
        await utterance.stream.close()
