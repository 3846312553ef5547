"""One speaker's live stream, with no protocol: 16 kHz samples in; turns, partial words and finals out as plain
events (`live.events`).

With a VAD the streaming detector opens and closes turns; without one the door commits (a client's commit, the end
of a Wyoming utterance). Each committed turn is decoded through the model's scheduler at `Priority.TURN` (ahead of
file windows), one turn at a time, so transcripts come in audio order. Live partials, when on, re-decode the open
turn at `Priority.SPECULATIVE` (spare capacity only) and send the words two consecutive passes agree on. When
silence begins inside a turn the stream decodes what was said at once: if the silence ends the turn, that pass is
its final transcript and no decode is left after the end of speech.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from open_stt_server.audio import Audio
from open_stt_server.live.audio import SAMPLE_RATE, ArrivalPace, SpeechBuffer
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
from open_stt_server.live.partials import aligned_prefix, settle_rule, settled_count, to_send, words_of
from open_stt_server.live.turns import CommittedTurn, OpenTurn, Pass, pass_interval, pass_token_budget
from open_stt_server.live.vad import TurnDetector, VadSettings, VoiceStarted
from open_stt_server.scheduler import (
    EngineFailure,
    JobCancelled,
    ModelUnavailable,
    Priority,
    QueueFull,
    TranscriptionQueue,
)
from open_stt_server.transcribe import Transcription
from open_stt_server.transcript import TranscribeOptions, Word

log = logging.getLogger(__name__)

MIN_COMMIT_SAMPLES = SAMPLE_RATE // 10  # a turn of less than 100 ms is not decoded
MAX_TURN_SAMPLES = 30 * SAMPLE_RATE  # a longer VAD turn is committed at its latest pause
MIN_CUT_SAMPLES = 10 * SAMPLE_RATE  # ... when that pause is at least this far into the turn
PROMPT_CHARS = 200
FIRST_PASS_SPEECH = SAMPLE_RATE * 3 // 10  # live partials: the first pass waits for 0.3 s of speech
PASS_SLACK_SAMPLES = SAMPLE_RATE // 20
# The final's decode starts after 120 ms of silence (at most half of silence_duration_ms), not at the first quiet
# window: most gaps between words are shorter.
ANTICIPATE_AFTER_SAMPLES = SAMPLE_RATE * 12 // 100


@dataclass(frozen=True)
class LiveOptions:
    """How a stream decodes and where its turns end."""

    language: str | None = None
    prompt: str = ""  # earlier text or hints (Whisper's prompt); its last PROMPT_CHARS are used
    hotwords: str | None = None  # words to bias recognition towards, where the engine takes them
    word_times: bool = False  # decode with word times (logprobs); live passes cannot then stand for the final
    vad: VadSettings | None = field(default_factory=VadSettings)  # None: the door commits
    partials: bool = False  # send words while the speaker talks
    # The transcript goes on from the words sent live, so that the deltas join to it (Wyoming's contract); those
    # words then settle on more evidence (SETTLE_BINDING). Otherwise the transcript is the final decode's own.
    partials_bind: bool = False
    partial_interval_s: float = 0.5
    max_buffer_s: float = 600.0  # uncommitted audio without a VAD before it is committed anyway


@dataclass
class StreamStats:
    turns: int = 0
    audio_seconds: float = 0.0
    failed: int = 0


class BufferTooSmall(ValueError):
    def __init__(self, held_ms: float) -> None:
        super().__init__(f"{held_ms:.2f} ms")
        self.held_ms = held_ms


def _turn_id() -> str:
    return f"turn_{uuid.uuid4().hex[:20]}"


class SpeechStream:
    def __init__(
        self,
        queue: TranscriptionQueue,
        options: LiveOptions,
        emit: Callable[[LiveEvent], None],
        new_turn_id: Callable[[], str] = _turn_id,
    ) -> None:
        self.queue = queue
        self.options = options
        self.emit = emit
        self.new_turn_id = new_turn_id
        self.stats = StreamStats()
        self.detector = TurnDetector(options.vad or VadSettings())
        self.audio = SpeechBuffer()  # the uncommitted audio
        self.open: OpenTurn | None = None
        self.previous_turn: str | None = None
        self.heard_speech = False  # without a VAD: speech was heard since the last commit (gates partials)
        self._turns: asyncio.Queue[CommittedTurn | None] = asyncio.Queue()
        self._decoder = asyncio.create_task(self._decode_turns())
        self.pace = ArrivalPace()
        self.pass_took_s: float | None = None  # the latest live pass's time, queue included

    @property
    def position(self) -> int:
        """Samples (16 kHz) received in the stream: the offset events are measured from."""
        return self.audio.end

    def reconfigure(self, options: LiveOptions, queue: TranscriptionQueue | None = None) -> None:
        """New options (and model) for the turns to come; a new VAD drops the open turn."""
        if options.vad != self.options.vad:
            self.detector = TurnDetector(options.vad or VadSettings())
            self._drop_open_turn()
        self.options = options
        if queue is not None:
            self.queue = queue

    # -- audio in -----------------------------------------------------------------------------------------

    def append(self, samples: np.ndarray, seconds: float | None = None) -> None:
        """16 kHz samples; `seconds`: the duration as received (before resampling), for the stream's stats."""
        self.stats.audio_seconds += len(samples) / SAMPLE_RATE if seconds is None else seconds
        self.pace.add(len(samples) / SAMPLE_RATE)
        self.audio.append(samples)
        if self.options.vad is None:
            self._append_manual(samples)
        else:
            self._append_vad(samples)
        if not self.pace.bursting:
            self._anticipate()
            self._maybe_partial()

    def _append_manual(self, samples: np.ndarray) -> None:
        if self.open is None:
            self.open = OpenTurn(self.new_turn_id(), self.audio.start)
        if self.pace.bursting:  # sent faster than spoken: no live pass will run, so nothing needs to listen
            self.detector.skip(len(samples))
        elif any(isinstance(e, VoiceStarted) for e in self.detector.feed(samples)) or self.detector.speaking:
            self.heard_speech = True
        if len(self.audio) > self.options.max_buffer_s * SAMPLE_RATE:
            self.emit(BufferFull(self.options.max_buffer_s))
            self._commit(self.position)

    def _append_vad(self, samples: np.ndarray) -> None:
        vad = self.options.vad
        assert vad is not None
        for happened in self.detector.feed(samples):
            if isinstance(happened, VoiceStarted):
                start = max(happened.at - vad.prefix_padding_ms * SAMPLE_RATE // 1000, self.audio.start)
                self.open = OpenTurn(self.new_turn_id(), start)
                self.emit(SpeechStarted(self.open.id, start))
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
            self.open = OpenTurn(self.new_turn_id(), cut)
            self.emit(SpeechStarted(self.open.id, cut))
        if self.open is None:
            keep = (vad.prefix_padding_ms * SAMPLE_RATE) // 1000 + SAMPLE_RATE // 10
            self.audio.drop_before(self.position - keep)

    def _stop_and_commit(self, end: int) -> None:
        assert self.open is not None
        self.emit(SpeechStopped(self.open.id, end))
        speech_end = self.detector.speech_end if self.open.start < self.detector.speech_end <= end else end
        self._commit(end, speech_end=speech_end)

    # -- the door's controls ------------------------------------------------------------------------------

    def commit(self) -> str:
        """Commit the audio held as a turn (a client's commit, the end of an utterance); its id. BufferTooSmall
        when under 100 ms are held."""
        start = self.open.start if self.open is not None else self.audio.start
        if self.position - start < MIN_COMMIT_SAMPLES:
            raise BufferTooSmall((self.position - start) / SAMPLE_RATE * 1000)
        if self.open is None:
            self.open = OpenTurn(self.new_turn_id(), start)
        turn = self.open.id
        heard_until = self.detector.speech_end if self.detector.speech_end > start else self.position
        self._commit(self.position, speech_end=min(heard_until, self.position))
        if self.options.vad is not None:
            self.detector.reset()
        return turn

    def clear(self) -> None:
        """Forget the audio not yet committed."""
        self._drop_open_turn()
        self.audio.drop_before(self.position)
        if self.options.vad is not None:
            self.detector.reset()
        self.heard_speech = False

    async def close(self) -> None:
        """Stop: the open turn and any decode under way are dropped."""
        self._drop_open_turn()
        self._decoder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._decoder

    # -- turns --------------------------------------------------------------------------------------------

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
        reusable = not self.options.word_times
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
            turn.id, end, speech_end, turn.last_pass.covered if turn.last_pass else None,
            turn.partial_covers, "ready" if ready else "pending" if pending else "fresh decode",
        )  # fmt: skip
        samples = self.audio.slice(turn.start, end)
        self.audio.drop_before(end)
        self.emit(TurnCommitted(turn.id, self.previous_turn))
        self.previous_turn = turn.id
        committed = CommittedTurn(
            turn.id, samples, turn.start, end, tuple(turn.sent), ready, pending, time.monotonic()
        )
        self._turns.put_nowait(committed)

    def _decode_options(self, live_pass_s: float | None = None) -> TranscribeOptions:
        """Every decode of a turn, final or live, uses the same options, so that a live pass that heard the whole
        turn can be its final transcript; a live pass (`live_pass_s`: the audio it hears) also has no temperature
        fallback and a token budget: over a word cut off at its end Whisper may loop ("8, 8, 8, …" for 448 tokens,
        3.7 s on whisper-base), which would hold a worker the turn needs. Such a pass is not clean (`Pass.clean`)
        and stands for nothing. (A greedy pass is not cheaper here: Whisper's encoder always reads a 30 s window,
        and it costs most of a short decode.)"""
        engine = self.queue.engine
        options = self.options
        return TranscribeOptions(
            language=options.language,
            prompt=(options.prompt[-PROMPT_CHARS:] or None) if engine.supports_prompt else None,
            hotwords=options.hotwords if engine.supports_prompt else None,
            word_timestamps=engine.supports_word_timestamps and options.word_times,
            batched=False,
            fallback=live_pass_s is None,
            max_new_tokens=None if live_pass_s is None else pass_token_budget(live_pass_s),
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
            except Exception:  # a bug must not end the stream: the turn fails, the next one is decoded
                log.exception("live turn failed")
                self._failed(turn, "The server failed while transcribing this turn.", "internal_error")

    async def _decode(self, turn: CommittedTurn) -> None:
        final: list[str] = []  # the final transcript's words
        text = "".join(turn.sent).lstrip()
        words: list[Word] = []
        language = self.options.language

        def send(new: list[str], segment_words: tuple[Word, ...] = ()) -> None:
            nonlocal text
            piece = "".join(new)
            if not text:
                piece = piece.lstrip()
            if piece:
                text += piece
                self.emit(TextDelta(turn.id, piece, segment_words))

        def heard(segment_text: str, segment_words: tuple[Word, ...] = ()) -> None:
            final.extend(words_of(segment_text))
            if not turn.sent:  # nothing sent live: each segment's words go out as they are decoded
                send(words_of(segment_text), segment_words)

        ready = turn.ready
        if ready is None and turn.pending is not None:
            with contextlib.suppress(Exception):
                ready = await turn.pending
            if ready is not None and not ready.clean:
                ready = None  # it looped or was unsure: the final decodes afresh, with fallback
        if ready is not None:
            heard(ready.text)
            language = ready.language or language
        elif len(turn.samples) >= MIN_COMMIT_SAMPLES:
            decoded = await self._final_decode(turn, heard, words)
            if decoded is None:
                return
            language = decoded or language
        # deltas are append-only: the last goes on from where the words sent live end in the final
        if turn.sent:
            send(final[aligned_prefix(turn.sent, final) :])
        # Unless the words sent bind it, the transcript is the final decode's, whatever was sent live: a partial
        # word the final heard otherwise costs nothing (the joined deltas then differ from it, as interim results do).
        transcript = text if self.options.partials_bind else "".join(final).lstrip()
        self.stats.turns += 1
        seconds = (turn.end - turn.start) / SAMPLE_RATE
        latency = time.monotonic() - turn.ended_at
        word_times = tuple(words)
        self.emit(
            TurnTranscribed(turn.id, transcript, language, seconds, turn.start, turn.end, word_times, latency)
        )

    async def _final_decode(self, turn: CommittedTurn, heard: Callable, words: list[Word]) -> str | None:
        """Decode a committed turn, its segments to `heard` as they come; the language, "" when none was found,
        or None when the turn failed (and TurnFailed was sent)."""
        audio = Audio(turn.samples, len(turn.samples) / SAMPLE_RATE)
        try:
            transcription = await Transcription.start(
                self.queue, audio, self._decode_options(), priority=Priority.TURN
            )
            async for segment in transcription.segments():  # the job stops if this ends early
                segment_words = tuple(segment.words or ())
                heard(segment.text, segment_words)
                words.extend(segment_words)
            return transcription.job.language or ""
        except QueueFull as exc:
            self._failed(turn, str(exc), "queue_full", "rate_limit_error")
        except ModelUnavailable as exc:
            self._failed(turn, str(exc), exc.code)
        except (EngineFailure, JobCancelled) as exc:
            self._failed(turn, str(exc) or "The model failed to decode this turn.", "transcription_failed")
        return None

    def _failed(self, turn: CommittedTurn, message: str, code: str, kind: str = "server_error") -> None:
        self.stats.failed += 1
        self.emit(TurnFailed(turn.id, message, code, kind))

    # -- live passes --------------------------------------------------------------------------------------

    def _anticipate(self) -> None:
        """When silence begins inside a turn, decode what was said at once: if the silence lasts until the turn
        ends, that pass is the final transcript and it follows the end of speech with no wait."""
        turn, silence = self.open, self.detector.silence_start
        if turn is None or silence is None or turn.partial_covers >= silence:
            return
        vad = self.options.vad or VadSettings()
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
        self._start_pass(turn)

    def _maybe_partial(self) -> None:
        turn = self.open
        if turn is None or not self.options.partials or turn.partial is not None:
            return
        if self.options.vad is None and not self.heard_speech:
            return  # no speech yet: a decode of silence would only invent words
        interval = pass_interval(self.options.partial_interval_s, self.pass_took_s)
        if self.position - max(turn.partial_covers, turn.start) < interval * SAMPLE_RATE:
            return
        if self.options.vad is not None and self.position - self.detector.speech_start < FIRST_PASS_SPEECH:
            return  # too little speech yet for a pass to hold a word worth agreeing on
        if self.position - turn.start > MAX_TURN_SAMPLES:
            return  # a long manual buffer: its words come with the final decode
        self._start_pass(turn)

    def _start_pass(self, turn: OpenTurn) -> None:
        turn.partial_covers = self.position
        samples = self.audio.slice(turn.start, self.position)
        turn.partial = asyncio.create_task(self._partial(turn, samples, self.position))

    async def _partial(self, turn: OpenTurn, samples: np.ndarray, end: int) -> Pass | None:
        """Decode the open turn so far (spare capacity only), send the words this pass and the one before agree
        on, and keep the result: when it heard the whole turn it is the final transcript."""
        audio = Audio(samples, len(samples) / SAMPLE_RATE)
        started = time.monotonic()
        try:
            transcription = await Transcription.start(
                self.queue,
                audio,
                self._decode_options(len(samples) / SAMPLE_RATE),
                priority=Priority.SPECULATIVE,
            )
        except (QueueFull, ModelUnavailable):
            turn.partial = None
            return None
        turn.partial_job = transcription.job
        try:
            transcript = await transcription.transcript()  # cancelled with this task, the job stops too
        except (EngineFailure, JobCancelled, QueueFull, ModelUnavailable):
            turn.partial = None
            return None
        self.pass_took_s = time.monotonic() - started
        result = Pass.heard(end, transcript, transcription.job.language)
        log.debug("turn %s: pass over %.2f s heard %r", turn.id, len(samples) / SAMPLE_RATE, result.text)
        if self.open is turn:
            turn.partial = turn.partial_job = None
            if result.clean:
                turn.last_pass = result
                if self.options.partials:
                    self._agree(turn, result)
            if not self.pace.bursting:
                self._anticipate()
                self._maybe_partial()
        return result

    def _agree(self, turn: OpenTurn, result: Pass) -> None:
        """Send the words of this pass that are settled (`settle_rule`), past those already sent."""
        turn.passes.append(result)
        latest = words_of(result.text)
        rule = settle_rule(self.options.partials_bind)
        new = to_send(settled_count(turn.passes, turn.start, turn.sent, rule), latest, turn.sent)
        compared = [p for p in turn.passes if p.covered <= result.covered - rule.apart_s * SAMPLE_RATE]
        if compared:
            del turn.passes[: len(compared) - 1]  # older ones are never compared again
        if new:
            piece = "".join(new)
            if not turn.sent:
                piece = piece.lstrip()
            turn.sent.extend(new)
            self.emit(TextDelta(turn.id, piece))
