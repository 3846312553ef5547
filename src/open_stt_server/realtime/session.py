"""One realtime transcription session: its settings, the uncommitted audio, turns, and their transcripts.

Audio arrives in `input_audio_buffer.append` events and is kept at 16 kHz. With server VAD a streaming detector
opens and closes turns; without it the client commits. Each committed turn is decoded through the model's
scheduler at `Priority.TURN` (ahead of file windows), one turn at a time, so completions come in audio order.
Live partials, when on, re-decode the open turn at `Priority.SPECULATIVE` (spare capacity only) and send the
words two consecutive passes agree on; the final decode then covers only the audio after those words.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from open_stt_server.realtime.audio import SAMPLE_RATE, InputAudio, InvalidAudio
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
from open_stt_server.realtime.vad import SpeechStarted, TurnDetector, VadSettings
from open_stt_server.scheduler import (
    EngineFailure,
    JobCancelled,
    ModelQueue,
    Priority,
    QueueFull,
    ServedModels,
)
from open_stt_server.transcript import Segment, TranscribeOptions, Word, text_pieces

log = logging.getLogger(__name__)

MIN_COMMIT_SAMPLES = SAMPLE_RATE // 10  # OpenAI refuses commits of less than 100 ms
MAX_TURN_SAMPLES = 30 * SAMPLE_RATE  # a longer turn is committed at its latest pause
MIN_CUT_SAMPLES = 10 * SAMPLE_RATE  # ... when that pause is at least this far into the turn
# Live partials: the realtime-only names, and a `delay` of minimal or low, ask for words while people speak.
LIVE_MODELS = ("gpt-realtime-whisper", "gpt-live-transcribe")
PARTIAL_INTERVAL_S = {"minimal": 0.3, "low": 0.5, "medium": 1.0}
DEFAULT_PARTIAL_INTERVAL_S = 0.5
PROMPT_CHARS = 200


@dataclass(frozen=True)
class SessionLimits:
    max_session_s: float = 3600.0
    idle_timeout_s: float = 300.0
    max_buffer_s: float = 600.0  # uncommitted audio when the client commits
    partials: bool = False  # server-wide: live partials for every session


@dataclass
class SessionStats:
    turns: int = 0
    audio_seconds: float = 0.0
    failed: int = 0


@dataclass
class OpenTurn:
    """The turn being spoken: its item id and, with live partials, the words already sent."""

    item_id: str
    start: int  # sample offset in the session's audio
    sent_text: str = ""
    sent_end: int = 0  # sample offset where the sent words end (0 = none sent)
    hypothesis: list[Word] = field(default_factory=list)  # the latest pass's unconfirmed words
    partial: asyncio.Task | None = None
    partial_at: int = 0  # samples of audio the latest pass covered


@dataclass(frozen=True)
class CommittedTurn:
    item_id: str
    samples: np.ndarray  # the audio still to decode (after any words partials sent)
    seconds: float  # the whole turn's length
    sent_text: str
    offset_s: float  # where `samples` begin in the session's audio
    ended_at: float  # monotonic time of the end of speech or the commit


def _normal(word: str) -> str:
    return re.sub(r"[^\w']", "", word.lower())


class RealtimeSession:
    def __init__(
        self,
        served: ServedModels,
        queue: ModelQueue,
        settings: SessionSettings,
        dialect: Dialect,
        send: Callable[[dict], None],
        limits: SessionLimits,
        on_turn: Callable[[str, float, float], None] | None = None,
    ) -> None:
        self.id = new_id("sess")
        self.served = served
        self.queue = queue
        self.settings = settings
        self.dialect = dialect
        self.send = send
        self.limits = limits
        self.on_turn = on_turn  # (model, audio seconds, end-of-speech → completed seconds)
        self.started = time.monotonic()
        self.expires_at = int(time.time() + limits.max_session_s)
        self.stats = SessionStats()
        self.input = InputAudio(settings.format)
        self.detector = TurnDetector(settings.vad or VadSettings())
        self.position = 0  # samples written in the session
        self.buffer_start = 0  # sample offset of `buffer[0]`
        self.buffer = np.zeros(0, dtype=np.float32)
        self.open: OpenTurn | None = None
        self.previous_item: str | None = None
        self.heard_speech = False  # manual mode: the VAD heard speech since the last commit (gates partials)
        self._turns: asyncio.Queue[CommittedTurn | None] = asyncio.Queue()
        self._decoder = asyncio.create_task(self._decode_turns())

    # -- settings -----------------------------------------------------------------------------------------

    def session_json(self) -> dict:
        render = ga_session if self.dialect == "ga" else beta_session
        return render(self.id, self.expires_at, self.settings)

    def created(self) -> None:
        self.send(event("session.created", session=self.session_json()))

    @property
    def vad(self) -> VadSettings | None:
        return self.settings.vad

    @property
    def partials(self) -> bool:
        delay = self.settings.delay
        if delay in ("high", "xhigh"):
            return False
        return self.limits.partials or delay in PARTIAL_INTERVAL_S or self.settings.model in LIVE_MODELS

    @property
    def partial_interval(self) -> int:
        seconds = PARTIAL_INTERVAL_S.get(self.settings.delay or "", DEFAULT_PARTIAL_INTERVAL_S)
        return int(seconds * SAMPLE_RATE)

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
        if new.language and queue.engine.english_only and new.language != "en":
            raise ProtocolError(
                f"Model '{queue.name}' is English-only and cannot transcribe '{new.language}'.",
                "session.audio.input.transcription.language",
                "unsupported_language",
            )
        if new.format != self.settings.format:
            self.input = InputAudio(new.format)
        if new.vad != self.settings.vad:
            self.detector = TurnDetector(new.vad or VadSettings())
            self._drop_open_turn()
        self.settings, self.queue = new, queue
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
                self.commit_by_client()
            elif kind == "input_audio_buffer.clear":
                self.clear()
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
        self.stats.audio_seconds += seconds
        start = self.position
        self.position += len(samples)
        self.buffer = np.concatenate([self.buffer, samples]) if len(self.buffer) else samples
        if self.vad is None:
            self._append_manual(samples, start)
        else:
            self._append_vad(samples)
        self._maybe_partial()

    def _append_manual(self, samples: np.ndarray, start: int) -> None:
        if self.open is None:
            self.open = OpenTurn(new_id("item"), self.buffer_start)
        if any(isinstance(e, SpeechStarted) for e in self.detector.feed(samples)) or self.detector.speaking:
            self.heard_speech = True
        if len(self.buffer) > self.limits.max_buffer_s * SAMPLE_RATE:
            self.send(
                error_event(
                    f"The uncommitted audio passed this server's {self.limits.max_buffer_s:g} s limit; it was "
                    "committed as a turn.",
                    code="input_audio_buffer_too_large",
                    param="audio",
                )
            )
            self._commit(self.position)

    def _append_vad(self, samples: np.ndarray) -> None:
        vad = self.vad
        assert vad is not None
        for happened in self.detector.feed(samples):
            if isinstance(happened, SpeechStarted):
                start = max(happened.at - vad.prefix_padding_ms * SAMPLE_RATE // 1000, self.buffer_start)
                self.open = OpenTurn(new_id("item"), start)
                self.send(
                    event(
                        "input_audio_buffer.speech_started",
                        audio_start_ms=_ms(start),
                        item_id=self.open.item_id,
                    )
                )
            elif self.open is not None:
                self._stop_and_commit(happened.at)
        if (
            self.open is not None
            and self.detector.speaking
            and self.position - self.open.start > MAX_TURN_SAMPLES
        ):
            pause = self.detector.last_pause
            cut = pause if pause - self.open.start >= MIN_CUT_SAMPLES else self.position
            self._stop_and_commit(cut)
            self.detector.restart(cut)
            self.open = OpenTurn(new_id("item"), cut)
            self.send(
                event("input_audio_buffer.speech_started", audio_start_ms=_ms(cut), item_id=self.open.item_id)
            )
        if self.open is None:
            keep = (vad.prefix_padding_ms * SAMPLE_RATE) // 1000 + SAMPLE_RATE // 10
            self._drop_before(self.position - keep)

    def _stop_and_commit(self, end: int) -> None:
        assert self.open is not None
        self.send(
            event("input_audio_buffer.speech_stopped", audio_end_ms=_ms(end), item_id=self.open.item_id)
        )
        self._commit(end)

    def commit_by_client(self) -> None:
        start = self.open.start if self.open is not None else self.buffer_start
        if self.position - start < MIN_COMMIT_SAMPLES:
            held = (self.position - start) / SAMPLE_RATE * 1000
            raise ProtocolError(
                "Error committing input audio buffer: buffer too small. Expected at least 100ms of audio, but "
                f"buffer only has {held:.2f}ms of audio.",
                None,
                "input_audio_buffer_commit_empty",
            )
        if self.open is None:
            self.open = OpenTurn(new_id("item"), start)
        self._commit(self.position)
        if self.vad is not None:
            self.detector.reset()

    def clear(self) -> None:
        self._drop_open_turn()
        self._drop_before(self.position)
        if self.vad is not None:
            self.detector.reset()
        self.heard_speech = False
        self.send(event("input_audio_buffer.cleared"))

    # -- turns --------------------------------------------------------------------------------------------

    def _drop_before(self, sample: int) -> None:
        if sample > self.buffer_start:
            self.buffer = self.buffer[sample - self.buffer_start :]
            self.buffer_start = sample

    def _audio(self, start: int, end: int) -> np.ndarray:
        return self.buffer[max(0, start - self.buffer_start) : max(0, end - self.buffer_start)].copy()

    def _drop_open_turn(self) -> None:
        if self.open is not None and self.open.partial is not None:
            self.open.partial.cancel()
        self.open = None

    def _commit(self, end: int) -> None:
        turn = self.open
        assert turn is not None
        if turn.partial is not None:
            turn.partial.cancel()
        self.open = None
        self.heard_speech = False
        decode_from = max(turn.sent_end, turn.start)
        samples = self._audio(decode_from, end)
        self._drop_before(end)
        self.send(
            event("input_audio_buffer.committed", item_id=turn.item_id, previous_item_id=self.previous_item)
        )
        item = user_item(turn.item_id, None, "in_progress" if self.dialect == "ga" else "completed")
        added = "conversation.item.added" if self.dialect == "ga" else "conversation.item.created"
        self.send(event(added, item=item, previous_item_id=self.previous_item))
        self.previous_item = turn.item_id
        self._turns.put_nowait(
            CommittedTurn(
                turn.item_id,
                samples,
                (end - turn.start) / SAMPLE_RATE,
                turn.sent_text,
                decode_from / SAMPLE_RATE,
                time.monotonic(),
            )
        )

    def _options(self, prompt_tail: str = "", speculative: bool = False) -> TranscribeOptions:
        prompt = (self.settings.prompt + prompt_tail)[-PROMPT_CHARS:].strip() or None
        if not self.queue.engine.supports_prompt:
            prompt = None
        return TranscribeOptions(
            language=self.settings.language,
            prompt=prompt,
            word_timestamps=self.queue.engine.supports_word_timestamps
            and (speculative or self.settings.logprobs),
            beam_size=1 if speculative else 5,
            fallback=not speculative,
            batched=False,
        )

    async def _decode_turns(self) -> None:
        while True:
            turn = await self._turns.get()
            if turn is None:
                return
            try:
                await self._decode(turn)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not end the session: the turn fails, the next one is decoded
                log.exception("realtime turn failed")
                self._failed(turn, "The server failed while transcribing this turn.", "internal_error")

    async def _decode(self, turn: CommittedTurn) -> None:
        text = turn.sent_text
        words: list[Word] = []
        language = self.settings.language
        if len(turn.samples) >= MIN_COMMIT_SAMPLES:
            queue = self.queue
            try:
                job = queue.submit(
                    turn.samples,
                    self._options(turn.sent_text),
                    len(turn.samples) / SAMPLE_RATE,
                    Priority.TURN,
                )
            except QueueFull as exc:
                self._failed(turn, str(exc), "queue_full", "rate_limit_error")
                return
            try:
                async for segment in job.stream():
                    for piece in text_pieces([segment.text], first=not text):
                        text += piece
                        self._delta(turn.item_id, piece, segment)
                    words.extend(segment.words or ())
                language = job.language or language
            except (EngineFailure, JobCancelled) as exc:
                self._failed(
                    turn, str(exc) or "The model failed to decode this turn.", "transcription_failed"
                )
                return
            finally:
                job.cancel()
        fields: dict = {
            "item_id": turn.item_id,
            "content_index": 0,
            "transcript": text,
            "usage": {"type": "duration", "seconds": round(turn.seconds, 3)},
        }
        if language:
            fields["languages"] = [{"code": language}]
        if self.settings.logprobs:
            fields["logprobs"] = [
                {
                    "token": w.word,
                    "logprob": math.log(max(w.probability, 1e-12)),
                    "bytes": list(w.word.encode()),
                }
                for w in words
            ]
        self.send(event("conversation.item.input_audio_transcription.completed", **fields))
        if self.dialect == "ga":
            self.send(
                event("conversation.item.done", item=user_item(turn.item_id, text), previous_item_id=None)
            )
        self.stats.turns += 1
        if self.on_turn is not None:
            self.on_turn(self.queue.name, turn.seconds, time.monotonic() - turn.ended_at)

    def _delta(self, item_id: str, piece: str, segment: Segment | None = None) -> None:
        fields: dict = {"item_id": item_id, "content_index": 0, "delta": piece}
        if self.settings.logprobs and segment is not None and segment.words:
            fields["logprobs"] = [
                {
                    "token": w.word,
                    "logprob": math.log(max(w.probability, 1e-12)),
                    "bytes": list(w.word.encode()),
                }
                for w in segment.words
            ]
        self.send(event("conversation.item.input_audio_transcription.delta", **fields))

    def _failed(self, turn: CommittedTurn, message: str, code: str, kind: str = "server_error") -> None:
        self.stats.failed += 1
        self.send(
            event(
                "conversation.item.input_audio_transcription.failed",
                item_id=turn.item_id,
                content_index=0,
                error={"type": kind, "code": code, "message": message, "param": None},
            )
        )

    # -- live partials ------------------------------------------------------------------------------------

    def _maybe_partial(self) -> None:
        turn = self.open
        if turn is None or not self.partials or turn.partial is not None:
            return
        if self.vad is None and not self.heard_speech:
            return  # no speech yet: a decode of silence would only invent words
        if self.position - max(turn.partial_at, turn.start) < self.partial_interval:
            return
        start = max(turn.sent_end, turn.start)
        samples = self._audio(start, self.position)
        if len(samples) < self.partial_interval:
            return
        turn.partial_at = self.position
        turn.partial = asyncio.create_task(self._partial(turn, samples, start))

    async def _partial(self, turn: OpenTurn, samples: np.ndarray, start: int) -> None:
        try:
            job = self.queue.submit(samples, self._options(turn.sent_text, speculative=True),
                                    len(samples) / SAMPLE_RATE, Priority.SPECULATIVE)  # fmt: skip
        except QueueFull:
            turn.partial = None
            return
        try:
            transcript = await job.result()
        except (EngineFailure, JobCancelled):
            turn.partial = None
            return
        except asyncio.CancelledError:
            job.cancel()
            raise
        if self.open is not turn:
            return
        turn.partial = None
        words = [
            replace(w, start=w.start + start / SAMPLE_RATE, end=w.end + start / SAMPLE_RATE)
            for s in transcript.segments
            if s.no_speech_prob < 0.6 and s.avg_logprob > -1.0
            for w in (s.words or ())
            if w.word.strip()
        ]
        agreed = 0
        for before, now in zip(turn.hypothesis, words, strict=False):
            if _normal(before.word) != _normal(now.word) or not _normal(now.word):
                break
            agreed += 1
        # The last word heard may still be cut off: a word is confirmed only when audio follows it.
        while agreed and words[agreed - 1].end > (self.position / SAMPLE_RATE) - 0.3:
            agreed -= 1
        if agreed:
            confirmed = words[:agreed]
            for piece in text_pieces(["".join(w.word for w in confirmed)], first=not turn.sent_text):
                turn.sent_text += piece
                self._delta(turn.item_id, piece)
            # The final decode starts midway between the last word sent and the next one heard: word times are
            # approximate, and a cut in the gap loses neither word.
            cut = confirmed[-1].end if agreed == len(words) else (confirmed[-1].end + words[agreed].start) / 2
            turn.sent_end = int(cut * SAMPLE_RATE)
            turn.hypothesis = words[agreed:]
        else:
            turn.hypothesis = words
        self._maybe_partial()

    # -- end ----------------------------------------------------------------------------------------------

    async def close(self) -> None:
        self._drop_open_turn()
        self._decoder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._decoder


def _ms(sample: int) -> int:
    return round(sample * 1000 / SAMPLE_RATE)
