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
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from open_stt_server.audio import Audio
from open_stt_server.formats import word_logprobs
from open_stt_server.languages import UnsupportedLanguage, model_language
from open_stt_server.realtime.audio import SAMPLE_RATE, InputAudio, InvalidAudio, SessionAudio
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
    ModelUnavailable,
    Priority,
    QueueFull,
    ServedModels,
    TranscriptionJob,
    TranscriptionQueue,
)
from open_stt_server.transcript import Segment, TranscribeOptions, Word

log = logging.getLogger(__name__)

MIN_COMMIT_SAMPLES = SAMPLE_RATE // 10  # OpenAI refuses commits of less than 100 ms
MAX_TURN_SAMPLES = 30 * SAMPLE_RATE  # a longer turn is committed at its latest pause
MIN_CUT_SAMPLES = 10 * SAMPLE_RATE  # ... when that pause is at least this far into the turn
# Live partials: the realtime-only names, and a `delay` of minimal or low, ask for words while people speak.
LIVE_MODELS = ("gpt-realtime-whisper", "gpt-live-transcribe")
PARTIAL_INTERVAL_S = {"minimal": 0.3, "low": 0.5, "medium": 1.0}
DEFAULT_PARTIAL_INTERVAL_S = 0.5
PROMPT_CHARS = 200
FIRST_PASS_SPEECH = SAMPLE_RATE * 3 // 10  # live partials: the first pass waits for 0.3 s of speech
PASS_SLACK_SAMPLES = SAMPLE_RATE // 20
# The final's decode starts after 120 ms of silence (at most half of silence_duration_ms), not at the first quiet
# window: most gaps between words are shorter.
ANTICIPATE_AFTER_SAMPLES = SAMPLE_RATE * 12 // 100


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


@dataclass(frozen=True)
class Pass:
    """One decode of an open turn, from its start up to `covered` (a sample offset)."""

    covered: int
    text: str
    language: str | None


@dataclass
class OpenTurn:
    """The turn being spoken: its item id and, with live partials, the words already sent."""

    item_id: str
    start: int  # sample offset in the session's audio
    sent: list[str] = field(default_factory=list)  # words sent as deltas, each with its leading space
    hypothesis: list[str] = field(default_factory=list)  # the latest pass's words
    partial: asyncio.Task | None = None  # the pass under way
    partial_job: TranscriptionJob | None = None
    partial_covers: int = 0  # where the latest pass's audio ends
    last_pass: Pass | None = None


@dataclass(frozen=True)
class CommittedTurn:
    item_id: str
    samples: np.ndarray
    seconds: float
    sent: tuple[str, ...]  # words live partials already sent
    ready: Pass | None  # a pass that heard the whole turn: its text is the final one
    pending: asyncio.Task | None  # ... or the pass under way that will have
    ended_at: float  # monotonic time of the end of speech or the commit


def session_language(raw: str, queue: TranscriptionQueue, param: str) -> str:
    """A session's `language` as the file API reads it; one the model cannot take is an error naming `param`, not a
    failure of every turn."""
    engine = queue.engine
    try:
        return model_language(raw, queue.name, engine.english_only, engine.languages)
    except UnsupportedLanguage as exc:
        raise ProtocolError(str(exc), param, "unsupported_language") from None


def aligned_prefix(sent: list[str] | tuple[str, ...], final: list[str]) -> int:
    """How many of `final`'s first words the words already `sent` stand for: the prefix of `final` at the least
    edit distance from `sent` (the longest on a tie)."""
    a = [_normal(w) for w in sent]
    b = [_normal(w) for w in final]
    row = list(range(len(b) + 1))  # distance from a[:i] to b[:k], for the current i
    for i, word in enumerate(a, 1):
        previous, row = row, [i] + [0] * len(b)
        for k in range(1, len(b) + 1):
            row[k] = min(previous[k] + 1, row[k - 1] + 1, previous[k - 1] + (word != b[k - 1]))
    best = min(row)
    return max(k for k, d in enumerate(row) if d == best)


def words_of(text: str) -> list[str]:
    """Words with their leading whitespace: joined again they give the text (less trailing space)."""
    return re.findall(r"\s*\S+", text)


def _normal(word: str) -> str:
    return re.sub(r"[^\w']", "", word.lower())


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
        self.queue = queue
        self.settings = settings
        self.dialect = dialect
        self.send = send
        self.limits = limits
        self.on_turn = on_turn  # (model, seconds from the end of speech or the commit to completed)
        self.started = time.monotonic()
        self.expires_at = int(time.time() + limits.max_session_s)
        self.stats = SessionStats()
        self.input = InputAudio(settings.format)
        self.detector = TurnDetector(settings.vad or VadSettings())
        self.audio = SessionAudio()  # the uncommitted audio
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
        if new.language:
            param = "session.input_audio_transcription" if beta else "session.audio.input.transcription"
            new = replace(new, language=session_language(new.language, queue, f"{param}.language"))
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
        self.audio.append(samples)
        if self.vad is None:
            self._append_manual(samples)
        else:
            self._append_vad(samples)
        self._anticipate()
        self._maybe_partial()

    def _append_manual(self, samples: np.ndarray) -> None:
        if self.open is None:
            self.open = OpenTurn(new_id("item"), self.audio.start)
        if any(isinstance(e, SpeechStarted) for e in self.detector.feed(samples)) or self.detector.speaking:
            self.heard_speech = True
        if len(self.audio) > self.limits.max_buffer_s * SAMPLE_RATE:
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
                start = max(happened.at - vad.prefix_padding_ms * SAMPLE_RATE // 1000, self.audio.start)
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
            self.audio.drop_before(self.position - keep)

    def _stop_and_commit(self, end: int) -> None:
        assert self.open is not None
        self.send(
            event("input_audio_buffer.speech_stopped", audio_end_ms=_ms(end), item_id=self.open.item_id)
        )
        speech_end = self.detector.speech_end if self.open.start < self.detector.speech_end <= end else end
        self._commit(end, speech_end=speech_end)

    def commit_by_client(self) -> None:
        start = self.open.start if self.open is not None else self.audio.start
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
        heard_until = self.detector.speech_end if self.detector.speech_end > start else self.position
        self._commit(self.position, speech_end=min(heard_until, self.position))
        if self.vad is not None:
            self.detector.reset()

    def clear(self) -> None:
        self._drop_open_turn()
        self.audio.drop_before(self.position)
        if self.vad is not None:
            self.detector.reset()
        self.heard_speech = False
        self.send(event("input_audio_buffer.cleared"))

    # -- turns --------------------------------------------------------------------------------------------

    @property
    def position(self) -> int:
        """Samples (16 kHz) received in the session: the offset events are measured from."""
        return self.audio.end

    def _drop_open_turn(self) -> None:
        if self.open is not None and self.open.partial is not None:
            self.open.partial.cancel()
        self.open = None

    def _commit(self, end: int, speech_end: int | None = None) -> None:
        turn = self.open
        assert turn is not None
        self.open = None
        self.heard_speech = False
        # A live pass that heard all the speech of the turn is its final transcript: no decode after the end.
        needed = (speech_end if speech_end is not None else end) - PASS_SLACK_SAMPLES
        reusable = not self.settings.logprobs
        ready = turn.last_pass if reusable and turn.last_pass and turn.last_pass.covered >= needed else None
        pending = None
        if turn.partial is not None:
            if ready is None and reusable and turn.partial_covers >= needed:
                pending = turn.partial
                if turn.partial_job is not None:
                    turn.partial_job.priority = Priority.TURN  # now it is the turn's final decode
            else:
                turn.partial.cancel()
        log.debug(
            "turn %s committed: end %d, speech end %s, last pass covers %s, pass under way covers %d (%s)",
            turn.item_id, end, speech_end, turn.last_pass.covered if turn.last_pass else None,
            turn.partial_covers, "ready" if ready else "pending" if pending else "fresh decode",
        )  # fmt: skip
        samples = self.audio.slice(turn.start, end)
        self.audio.drop_before(end)
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
                tuple(turn.sent),
                ready,
                pending,
                time.monotonic(),
            )
        )

    def _options(self) -> TranscribeOptions:
        """Every decode of a turn, final or live, uses the same options: any pass that heard the whole turn can
        be its final transcript. (A greedy pass is not cheaper here: Whisper's encoder always reads a 30 s
        window, and it costs most of a short decode.)"""
        engine = self.queue.engine
        return TranscribeOptions(
            language=self.settings.language,
            prompt=(self.settings.prompt[-PROMPT_CHARS:] or None) if engine.supports_prompt else None,
            word_timestamps=engine.supports_word_timestamps and self.settings.logprobs,
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
        final: list[str] = []  # the final transcript's words
        text = "".join(turn.sent).lstrip()
        words: list[Word] = []
        language = self.settings.language

        def send(new: list[str], segment: Segment | None = None) -> None:
            nonlocal text
            piece = "".join(new)
            if not text:
                piece = piece.lstrip()
            if piece:
                text += piece
                self._delta(turn.item_id, piece, segment)

        def heard(segment_text: str, segment: Segment | None = None) -> None:
            final.extend(words_of(segment_text))
            if not turn.sent:  # nothing sent live: each segment's words go out as they are decoded
                send(words_of(segment_text), segment)

        ready = turn.ready
        if ready is None and turn.pending is not None:
            with contextlib.suppress(Exception):
                ready = await turn.pending
        if ready is not None:
            heard(ready.text)
            language = ready.language or language
        elif len(turn.samples) >= MIN_COMMIT_SAMPLES:
            job = None
            try:
                job = await self.queue.admit(
                    Audio(turn.samples, len(turn.samples) / SAMPLE_RATE), self._options(), Priority.TURN
                )
                async for segment in job.stream():
                    heard(segment.text, segment)
                    words.extend(segment.words or ())
                language = job.language or language
            except QueueFull as exc:
                self._failed(turn, str(exc), "queue_full", "rate_limit_error")
                return
            except ModelUnavailable as exc:
                self._failed(turn, str(exc), exc.code)
                return
            except (EngineFailure, JobCancelled) as exc:
                self._failed(
                    turn, str(exc) or "The model failed to decode this turn.", "transcription_failed"
                )
                return
            finally:
                if job is not None:
                    job.cancel()
        if turn.sent:  # deltas are append-only: the final goes on from where the words sent live end in it
            send(final[aligned_prefix(turn.sent, final) :])
        fields: dict = {
            "item_id": turn.item_id,
            "content_index": 0,
            "transcript": text,
            "usage": {"type": "duration", "seconds": round(turn.seconds, 3)},
        }
        if language:
            fields["languages"] = [{"code": language}]
        if self.settings.logprobs:
            fields["logprobs"] = word_logprobs(words)
        self.send(event("conversation.item.input_audio_transcription.completed", **fields))
        if self.dialect == "ga":
            self.send(
                event("conversation.item.done", item=user_item(turn.item_id, text), previous_item_id=None)
            )
        self.stats.turns += 1
        if self.on_turn is not None:
            self.on_turn(self.queue.name, time.monotonic() - turn.ended_at)

    def _delta(self, item_id: str, piece: str, segment: Segment | None = None) -> None:
        fields: dict = {"item_id": item_id, "content_index": 0, "delta": piece}
        if self.settings.logprobs and segment is not None and segment.words:
            fields["logprobs"] = word_logprobs(segment.words)
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

    def _anticipate(self) -> None:
        """When silence begins inside a turn, decode what was said at once: if the silence lasts until the turn
        ends, that pass is the final transcript and `completed` follows `speech_stopped` with no wait."""
        turn, silence = self.open, self.detector.silence_start
        if turn is None or silence is None or turn.partial_covers >= silence:
            return
        vad = self.vad or VadSettings()
        wait = min(ANTICIPATE_AFTER_SAMPLES, vad.silence_duration_ms * SAMPLE_RATE // 2000)
        if self.position - silence < wait:
            return  # a gap between words, most likely: a pass for each would be wasted work
        if turn.partial is None and self.queue.spare_workers <= 0:
            return  # a busy machine: speculative decodes would only take time from others
        if (
            self.position - turn.start < MIN_COMMIT_SAMPLES * 3
            or self.position - turn.start > MAX_TURN_SAMPLES
        ):
            return
        if turn.partial is not None:
            job = turn.partial_job
            if job is not None and job.started_at is not None:
                return  # a pass is running: let it finish (this is checked again when it does)
            turn.partial.cancel()  # still queued, and it ends before the silence: replace it
        turn.partial_covers = self.position
        turn.partial = asyncio.create_task(
            self._partial(turn, self.audio.slice(turn.start, self.position), self.position)
        )

    def _maybe_partial(self) -> None:
        turn = self.open
        if turn is None or not self.partials or turn.partial is not None:
            return
        if self.vad is None and not self.heard_speech:
            return  # no speech yet: a decode of silence would only invent words
        if self.position - max(turn.partial_covers, turn.start) < self.partial_interval:
            return
        if self.vad is not None and self.position - self.detector.speech_start < FIRST_PASS_SPEECH:
            return  # too little speech yet for a pass to hold a word worth agreeing on
        if self.position - turn.start > MAX_TURN_SAMPLES:
            return  # a long manual buffer: its words come with the final decode
        turn.partial_covers = self.position
        samples = self.audio.slice(turn.start, self.position)
        turn.partial = asyncio.create_task(self._partial(turn, samples, self.position))

    async def _partial(self, turn: OpenTurn, samples: np.ndarray, end: int) -> Pass | None:
        """Decode the open turn so far (spare capacity only), send the words this pass and the one before agree
        on, and keep the result: when it heard the whole turn it is the final transcript."""
        try:
            job = await self.queue.admit(
                Audio(samples, len(samples) / SAMPLE_RATE), self._options(), Priority.SPECULATIVE
            )
        except (QueueFull, ModelUnavailable):
            turn.partial = None
            return None
        turn.partial_job = job
        try:
            transcript = await job.result()
        except (EngineFailure, JobCancelled, QueueFull, ModelUnavailable):
            turn.partial = None
            return None
        except asyncio.CancelledError:
            job.cancel()
            raise
        result = Pass(end, transcript.text, job.language)
        log.debug("turn %s: pass over %.2f s heard %r", turn.item_id, len(samples) / SAMPLE_RATE, result.text)
        if self.open is turn:
            turn.partial = turn.partial_job = None
            turn.last_pass = result
            if self.partials:
                self._agree(turn, words_of(result.text))
            self._anticipate()
            self._maybe_partial()
        return result

    def _agree(self, turn: OpenTurn, words: list[str]) -> None:
        agreed = 0
        for before, now in zip(turn.hypothesis, words, strict=False):
            if _normal(before) != _normal(now) or not _normal(now):
                break
            agreed += 1
        turn.hypothesis = words
        agreed = min(agreed, len(words) - 1)  # the newest word may still be cut off by the end of the audio
        matches_sent = all(_normal(a) == _normal(b) for a, b in zip(turn.sent, words, strict=False))
        if agreed > len(turn.sent) and matches_sent:
            new = words[len(turn.sent) : agreed]
            piece = "".join(new)
            if not turn.sent:
                piece = piece.lstrip()
            turn.sent.extend(new)
            self._delta(turn.item_id, piece)

    # -- end ----------------------------------------------------------------------------------------------

    async def close(self) -> None:
        self._drop_open_turn()
        self._decoder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._decoder


def _ms(sample: int) -> int:
    return round(sample * 1000 / SAMPLE_RATE)
