"""One OpenAI realtime transcription session: its settings in either dialect, and the events of its live speech
stream (`live.SpeechStream`) rendered as OpenAI's. Audio arrives base64-encoded in `input_audio_buffer.append`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from open_stt_server.formats import word_logprobs
from open_stt_server.languages import UnsupportedLanguage, model_language
from open_stt_server.live.audio import SAMPLE_RATE, InvalidAudio
from open_stt_server.live.events import (
    BufferFull,
    LiveEvent,
    SpeechStarted,
    SpeechStopped,
    TextDelta,
    TurnCommitted,
    TurnFailed,
    TurnTranscribed,
)
from open_stt_server.live.stream import BufferTooSmall, LiveOptions, SpeechStream, StreamStats
from open_stt_server.realtime.audio import InputAudio
from open_stt_server.realtime.protocol import (
    Dialect,
    ProtocolError,
    SessionSettings,
    apply_beta,
    apply_ga,
    beta_session,
    error_event,
    event,
    ga_session,
    is_beta_session,
    new_id,
    user_item,
)
from open_stt_server.scheduler import ServedModels, TranscriptionQueue

# Live partials: the realtime-only names, and a `delay` of minimal or low, ask for words while people speak.
LIVE_MODELS = ("gpt-realtime-whisper", "gpt-live-transcribe")
PARTIAL_INTERVAL_S = {"minimal": 0.3, "low": 0.5, "medium": 1.0}
DEFAULT_PARTIAL_INTERVAL_S = 0.5


@dataclass(frozen=True)
class SessionLimits:
    max_session_s: float = 3600.0
    idle_timeout_s: float = 300.0
    max_buffer_s: float = 600.0  # uncommitted audio when the client commits
    partials: bool = False  # server-wide: live partials for every session


def session_language(raw: str, queue: TranscriptionQueue, param: str) -> str:
    """A session's `language` as the file API reads it; one the model cannot take is an error naming `param`, not a
    failure of every turn."""
    engine = queue.engine
    try:
        return model_language(raw, queue.name, engine.english_only, engine.languages)
    except UnsupportedLanguage as exc:
        raise ProtocolError(str(exc), param, "unsupported_language") from None


class RealtimeSession:
    def __init__(
        self,
        served: ServedModels,
        queue: TranscriptionQueue,
        settings: SessionSettings,
        dialect: Dialect,
        send: Callable[[dict], None],
        limits: SessionLimits,
        on_turn: Callable[[str, float], None] | None = None,
    ) -> None:
        self.id = new_id("sess")
        self.served = served
        self.settings = settings
        self.dialect = dialect
        self.send = send
        self.limits = limits
        self.on_turn = on_turn  # (model, seconds from the end of speech or the commit to completed)
        self.started = time.monotonic()
        self.expires_at = int(time.time() + limits.max_session_s)
        self.input = InputAudio(settings.format)
        self.stream = SpeechStream(queue, self._live_options(settings), self._render, lambda: new_id("item"))

    @property
    def queue(self) -> TranscriptionQueue:
        return self.stream.queue

    @property
    def stats(self) -> StreamStats:
        return self.stream.stats

    def _live_options(self, settings: SessionSettings) -> LiveOptions:
        delay = settings.delay
        partials = delay not in ("high", "xhigh") and (
            self.limits.partials or delay in PARTIAL_INTERVAL_S or settings.model in LIVE_MODELS
        )
        return LiveOptions(
            language=settings.language,
            prompt=settings.prompt,
            word_times=settings.logprobs,
            vad=settings.vad,
            partials=partials,
            partial_interval_s=PARTIAL_INTERVAL_S.get(delay or "", DEFAULT_PARTIAL_INTERVAL_S),
            max_buffer_s=self.limits.max_buffer_s,
        )

    # -- settings -----------------------------------------------------------------------------------------

    def session_json(self) -> dict:
        render = ga_session if self.dialect == "ga" else beta_session
        return render(self.id, self.expires_at, self.settings)

    def created(self) -> None:
        self.send(event("session.created", session=self.session_json()))

    def update(self, message: dict, beta: bool) -> None:
        session = message.get("session", {})
        new = apply_beta(self.settings, session) if beta else apply_ga(self.settings, session)
        queue = self.queue
        if new.model != self.settings.model:
            found = self.served.resolve(new.model)
            if found is None:
                raise ProtocolError(
                    f"The model '{new.model}' does not exist or is not loaded on this server. "
                    f"Loaded: {', '.join(self.served.names())}.",
                    "session.audio.input.transcription.model"
                    if not beta
                    else "session.input_audio_transcription.model",
                    "model_not_found",
                )
            queue = found
        if new.language:
            param = "session.input_audio_transcription" if beta else "session.audio.input.transcription"
            new = replace(new, language=session_language(new.language, queue, f"{param}.language"))
        if new.format != self.settings.format:
            self.input = InputAudio(new.format)
        self.settings = new
        self.stream.reconfigure(self._live_options(new), queue)
        if beta:
            self.dialect = "beta"
        name = (
            "transcription_session.updated"
            if message.get("type") == "transcription_session.update"
            else "session.updated"
        )
        self.send(event(name, session=self.session_json()))

    # -- client events ------------------------------------------------------------------------------------

    async def handle(self, message: dict) -> None:
        kind = message.get("type")
        try:
            if kind == "input_audio_buffer.append":
                self.append(message.get("audio"))
            elif kind == "input_audio_buffer.commit":
                self.commit()
            elif kind == "input_audio_buffer.clear":
                self.stream.clear()
                self.send(event("input_audio_buffer.cleared"))
            elif kind == "transcription_session.update":
                self.update(message, beta=True)
            elif kind == "session.update":
                self.update(message, beta=is_beta_session(message.get("session")))
            elif isinstance(kind, str) and kind.startswith(
                ("conversation.", "response.", "output_audio_buffer.")
            ):
                raise ProtocolError(
                    f"'{kind}' does not apply to a transcription session.", "type", "unsupported_event"
                )
            else:
                raise ProtocolError(f"Unknown client event type '{kind}'.", "type", "unknown_event")
        except ProtocolError as exc:
            self.send(
                error_event(
                    exc.message, code=exc.code, param=exc.param, client_event_id=message.get("event_id")
                )
            )
        except InvalidAudio as exc:
            self.send(
                error_event(
                    str(exc), code="invalid_audio", param="audio", client_event_id=message.get("event_id")
                )
            )

    def append(self, audio: object) -> None:
        if not isinstance(audio, str):
            raise ProtocolError("'audio' must be base64-encoded audio.", "audio", "invalid_audio")
        samples, seconds = self.input.decode(audio)
        self.stream.append(samples, seconds)

    def commit(self) -> None:
        try:
            self.stream.commit()
        except BufferTooSmall as exc:
            raise ProtocolError(
                "Error committing input audio buffer: buffer too small. Expected at least 100ms of audio, but "
                f"buffer only has {exc.held_ms:.2f}ms of audio.",
                None,
                "input_audio_buffer_commit_empty",
            ) from None

    # -- the stream's events as OpenAI's ------------------------------------------------------------------

    def _render(self, happened: LiveEvent) -> None:
        if isinstance(happened, SpeechStarted):
            self.send(
                event(
                    "input_audio_buffer.speech_started",
                    audio_start_ms=_ms(happened.start),
                    item_id=happened.turn,
                )
            )
        elif isinstance(happened, SpeechStopped):
            self.send(
                event(
                    "input_audio_buffer.speech_stopped", audio_end_ms=_ms(happened.end), item_id=happened.turn
                )
            )
        elif isinstance(happened, TurnCommitted):
            self.send(
                event(
                    "input_audio_buffer.committed", item_id=happened.turn, previous_item_id=happened.previous
                )
            )
            item = user_item(happened.turn, None, "in_progress" if self.dialect == "ga" else "completed")
            added = "conversation.item.added" if self.dialect == "ga" else "conversation.item.created"
            self.send(event(added, item=item, previous_item_id=happened.previous))
        elif isinstance(happened, TextDelta):
            fields: dict = {"item_id": happened.turn, "content_index": 0, "delta": happened.text}
            if self.settings.logprobs and happened.words:
                fields["logprobs"] = word_logprobs(happened.words)
            self.send(event("conversation.item.input_audio_transcription.delta", **fields))
        elif isinstance(happened, TurnTranscribed):
            self._completed(happened)
        elif isinstance(happened, TurnFailed):
            error = {"type": happened.kind, "code": happened.code, "message": happened.message, "param": None}
            self.send(
                event(
                    "conversation.item.input_audio_transcription.failed",
                    item_id=happened.turn,
                    content_index=0,
                    error=error,
                )
            )
        elif isinstance(happened, BufferFull):
            self.send(
                error_event(
                    f"The uncommitted audio passed this server's {happened.limit_s:g} s limit; it was "
                    "committed as a turn.",
                    code="input_audio_buffer_too_large",
                    param="audio",
                )
            )

    def _completed(self, turn: TurnTranscribed) -> None:
        fields: dict = {
            "item_id": turn.turn,
            "content_index": 0,
            "transcript": turn.text,
            "usage": {"type": "duration", "seconds": round(turn.seconds, 3)},
        }
        if turn.language:
            fields["languages"] = [{"code": turn.language}]
        if self.settings.logprobs:
            fields["logprobs"] = word_logprobs(list(turn.words))
        self.send(event("conversation.item.input_audio_transcription.completed", **fields))
        if self.dialect == "ga":
            self.send(
                event("conversation.item.done", item=user_item(turn.turn, turn.text), previous_item_id=None)
            )
        if self.on_turn is not None:
            self.on_turn(self.queue.name, turn.latency_s)

    async def close(self) -> None:
        await self.stream.close()


def _ms(sample: int) -> int:
    return round(sample * 1000 / SAMPLE_RATE)
