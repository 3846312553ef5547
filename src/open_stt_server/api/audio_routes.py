"""POST /v1/audio/transcriptions and /v1/audio/translations."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import anyio
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import StreamingResponse
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException

from open_stt_server import formats
from open_stt_server.api.auth import require_api_key
from open_stt_server.api.errors import APIError, bad_request, envelope
from open_stt_server.audio import Audio, AudioError, AudioTooLong, decode_audio
from open_stt_server.diarization import (
    INSTALL_HINT,
    DiarizationRequest,
    KnownSpeaker,
    SpeakerCount,
)
from open_stt_server.diarization.service import DiarizationJob
from open_stt_server.diarization.speakers import SegmentLabeller
from open_stt_server.languages import UnsupportedLanguage, model_language
from open_stt_server.metrics import Metrics
from open_stt_server.scheduler import (
    EngineFailure,
    JobCancelled,
    ModelUnavailable,
    QueueFull,
    ServedModels,
    TranscriptionJob,
    TranscriptionQueue,
)
from open_stt_server.settings import Settings
from open_stt_server.transcript import Task, TranscribeOptions

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/audio", tags=["audio"], dependencies=[Depends(require_api_key)])

TRUE_WORDS = {"true", "1", "yes", "on"}
MAX_SPEAKERS = 32
MAX_KNOWN_SPEAKERS = 4  # as OpenAI
MAX_SPEAKER_NAME = 64
REFERENCE_SECONDS = (2.0, 10.0)  # OpenAI's bounds for a known speaker's sample
REFERENCE_SLACK_S = 0.05  # codec padding
FALSE_WORDS = {"false", "0", "no", "off", ""}
GRANULARITIES = {"segment", "word"}
DISCONNECT_POLL_S = 0.5


@dataclass(frozen=True)
class AudioRequest:
    """A validated transcription or translation request."""

    data: bytes
    filename: str
    queue: TranscriptionQueue
    model_id: str
    response_format: str
    options: TranscribeOptions
    words: bool
    stream: bool
    logprobs: bool
    speakers: SpeakerAsk | None = None  # set for response_format=diarized_json


@dataclass(frozen=True)
class SpeakerAsk:
    """What a diarized_json request asks of the diarizer, its references still encoded."""

    count: SpeakerCount
    names: tuple[str, ...]
    references: tuple[bytes, ...]


@dataclass
class Admitted:
    job: TranscriptionJob
    diarization: DiarizationJob | None = None
    known_names: tuple[str, ...] = ()

    def cancel(self) -> None:
        self.job.cancel()
        if self.diarization is not None:
            self.diarization.cancel()


# -- form parsing --------------------------------------------------------------------------------------------


def _fields(form: FormData, name: str, split: bool = True) -> list[str]:
    """Values sent as `name`, `name[]` or `name[0]`... (the SDK sends arrays in the bracketed form); with
    `split`, a value may also hold several separated by commas."""
    values: list[str] = []
    for key, value in form.multi_items():
        if (
            key == name
            or key == f"{name}[]"
            or (key.startswith(f"{name}[") and key[len(name) + 1 : -1].isdigit())
        ):
            if not isinstance(value, str):
                raise bad_request(f"'{name}' must be a text field, not a file.", name)
            parts = value.split(",") if split else [value]
            values.extend(v.strip() for v in parts if v.strip())
    return values


def _text(form: FormData, name: str) -> str | None:
    value = form.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_request(f"'{name}' must be a text field, not a file.", name)
    return value.strip()


def _bool(form: FormData, name: str) -> bool | None:
    value = _text(form, name)
    if value is None:
        return None
    if value.lower() in TRUE_WORDS:
        return True
    if value.lower() in FALSE_WORDS:
        return False
    raise bad_request(f"'{name}' must be true or false, got '{value}'.", name)


def _float(form: FormData, name: str, low: float, high: float) -> float | None:
    value = _text(form, name)
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        raise bad_request(
            f"'{name}' must be a number between {low:g} and {high:g}, got '{value}'.", name
        ) from None
    if not low <= number <= high:  # also false for NaN
        raise bad_request(f"'{name}' must be between {low:g} and {high:g}, got {value}.", name)
    return number


def _chunking(form: FormData, default_vad: bool) -> dict | None:
    """OpenAI's chunking_strategy: "auto", or a server_vad object (JSON text or bracketed fields)."""
    raw = _text(form, "chunking_strategy")
    nested = {
        k[len("chunking_strategy[") : -1]: v
        for k, v in form.multi_items()
        if k.startswith("chunking_strategy[") and k.endswith("]") and isinstance(v, str)
    }
    if raw is None and not nested:
        return None
    if raw is not None and raw.lower() == "auto":
        return {}
    strategy: object = nested
    if raw is not None:
        try:
            strategy = json.loads(raw)
        except json.JSONDecodeError:
            raise bad_request(
                '\'chunking_strategy\' must be "auto" or an object like {"type": "server_vad"}.',
                "chunking_strategy",
            ) from None
    if not isinstance(strategy, dict) or strategy.get("type") != "server_vad":
        raise bad_request(
            '\'chunking_strategy\' must be "auto" or {"type": "server_vad", ...}.', "chunking_strategy"
        )
    vad: dict = {}
    limits = {"threshold": (0.0, 1.0), "silence_duration_ms": (0, 60_000), "prefix_padding_ms": (0, 10_000)}
    for key, (low, high) in limits.items():
        if key in strategy:
            try:
                value = float(strategy[key])
            except (TypeError, ValueError):
                value = float("nan")
            if not low <= value <= high:
                raise bad_request(
                    f"'chunking_strategy.{key}' must be between {low} and {high}.", "chunking_strategy"
                )
            vad[key] = value
    unknown = set(strategy) - set(limits) - {"type"}
    if unknown:
        raise bad_request(
            f"Unknown chunking_strategy field(s): {', '.join(sorted(unknown))}.", "chunking_strategy"
        )
    return vad


async def parse_request(request: Request, task: Task) -> AudioRequest:
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise APIError(
            415, "Send the audio as multipart/form-data with a 'file' field.", code="unsupported_media_type"
        )
    try:
        # Parts may be as large as the upload limit: known-speaker references are data URLs in text fields.
        form = await request.form(
            max_files=4, max_fields=64, max_part_size=request.app.state.settings.max_upload_bytes
        )
    except (MultiPartException, ValueError, KeyError, AssertionError) as exc:
        raise bad_request(
            f"The multipart body could not be parsed: {exc}", None, "invalid_multipart"
        ) from None
    return await _validate(request, form, task)


async def _validate(request: Request, form: FormData, task: Task) -> AudioRequest:
    settings = request.app.state.settings
    served: ServedModels = request.app.state.models
    upload = form.get("file")
    if upload is None:
        raise bad_request("Missing the 'file' field with the audio to transcribe.", "file", "missing_file")
    if not isinstance(upload, UploadFile):
        raise bad_request("'file' must be an uploaded file, not a text field.", "file")

    model_id = _text(form, "model") or None
    queue = served.resolve(model_id)
    if queue is None:
        raise APIError(
            404,
            f"The model '{model_id}' does not exist or is not loaded on this server. "
            f"Loaded: {', '.join(served.names())}.",
            param="model",
            code="model_not_found",
        )
    request.state.model = queue.name
    engine = queue.engine

    response_format = (_text(form, "response_format") or "json").lower()
    if response_format not in formats.RESPONSE_FORMATS:
        raise bad_request(
            f"Unsupported response_format '{response_format}'; use one of "
            f"{', '.join(formats.RESPONSE_FORMATS)}.",
            "response_format",
        )
    request.state.format = response_format

    language = None
    raw_language = _text(form, "language") if task == "transcribe" else None
    if raw_language:
        try:
            language = model_language(raw_language, queue.name, engine.english_only, engine.languages)
        except UnsupportedLanguage as exc:
            raise bad_request(str(exc), "language", "unsupported_language") from None
    if task == "translate" and not engine.supports_translation:
        raise bad_request(
            f"Model '{queue.name}' cannot translate"
            + (" (it is English-only)" if engine.english_only else "")
            + "; use a multilingual Whisper model such as whisper-base.",
            "model",
            "translation_not_supported",
        )

    temperature = _float(form, "temperature", 0.0, 1.0) or 0.0
    granularities = _fields(form, "timestamp_granularities")
    for g in granularities:
        if g not in GRANULARITIES:
            raise bad_request(
                f"Unknown timestamp granularity '{g}'; use 'segment' and/or 'word'.",
                "timestamp_granularities",
            )
    words = "word" in granularities
    if granularities and response_format != "verbose_json":
        raise bad_request(
            "timestamp_granularities requires response_format=verbose_json.", "timestamp_granularities"
        )
    if words and not engine.supports_word_timestamps:
        raise bad_request(
            f"Model '{queue.name}' does not produce word timestamps; ask for segment timestamps only, "
            "or use a Whisper model.",
            "timestamp_granularities",
        )
    prompt = _text(form, "prompt") or None
    if prompt and not engine.supports_prompt:
        raise bad_request(
            f"Model '{queue.name}' takes no prompt in transcription mode; send the request without one.",
            "prompt",
            "unsupported_parameter",
        )

    include = _fields(form, "include")
    for item in include:
        if item != "logprobs":
            raise bad_request(f"Unknown include value '{item}'; only 'logprobs' is supported.", "include")
    logprobs = "logprobs" in include
    if logprobs and not engine.supports_word_timestamps:
        raise bad_request(
            f"Model '{queue.name}' does not report per-word log probabilities; send the request without "
            "include[]=logprobs, or use a Whisper model.",
            "include",
            "unsupported_parameter",
        )
    if logprobs and response_format != "json":
        raise bad_request("include[]=logprobs requires response_format=json.", "include")

    stream = bool(_bool(form, "stream"))
    if stream and response_format not in ("json", "text", "verbose_json", "diarized_json"):
        raise bad_request(
            "stream=true sends transcript events; use response_format json, text, verbose_json or "
            "diarized_json with it.",
            "stream",
        )
    speakers = _speaker_ask(request, form, task, response_format)

    vad_filter = _bool(form, "vad_filter")
    chunking = _chunking(form, settings.vad_filter)
    vad_options: dict = {}
    if chunking is not None:
        vad_filter = True if vad_filter is None else vad_filter
        vad_options = chunking
    if vad_filter is None:
        vad_filter = settings.vad_filter

    options = TranscribeOptions(
        task=task,
        language=language,
        prompt=prompt,
        temperature=temperature,
        # Word times also let subtitles and logprobs be cut per word.
        word_timestamps=words or logprobs or response_format in ("srt", "vtt", "diarized_json"),
        vad_filter=vad_filter,
        vad_threshold=vad_options.get("threshold", 0.5),
        vad_min_silence_ms=int(vad_options.get("silence_duration_ms", 2000)),
        vad_speech_pad_ms=int(vad_options.get("prefix_padding_ms", 400)),
        batched=_bool(form, "batched"),
    )
    data = await upload.read()
    if len(data) > settings.max_upload_bytes:
        raise APIError(
            413,
            f"The upload is larger than this server's limit of {settings.max_upload_mb:g} MB.",
            param="file",
            code="upload_too_large",
        )
    return AudioRequest(
        data,
        upload.filename or "",
        queue,
        queue.name,
        response_format,
        options,
        words,
        stream,
        logprobs,
        speakers,
    )


def _count(form: FormData, name: str) -> int | None:
    value = _text(form, name)
    if value is None or value == "":
        return None
    if not value.isdigit() or not 1 <= int(value) <= MAX_SPEAKERS:
        raise bad_request(f"'{name}' must be a whole number from 1 to {MAX_SPEAKERS}, got '{value}'.", name)
    return int(value)


def _speaker_ask(request: Request, form: FormData, task: Task, response_format: str) -> SpeakerAsk | None:
    names = _fields(form, "known_speaker_names", split=False)
    references = _fields(form, "known_speaker_references", split=False)
    exact, low, high = (_count(form, n) for n in ("num_speakers", "min_speakers", "max_speakers"))
    if response_format != "diarized_json":
        for field, given in (
            ("known_speaker_names", names),
            ("known_speaker_references", references),
            ("num_speakers", exact),
            ("min_speakers", low),
            ("max_speakers", high),
        ):
            if given:
                raise bad_request(f"'{field}' requires response_format=diarized_json.", field)
        return None
    if task != "transcribe":
        raise bad_request(
            "response_format=diarized_json is for transcriptions; translations have no speaker labels.",
            "response_format",
        )
    if request.app.state.diarization is None:
        raise bad_request(
            "Speaker labels (diarized_json) are not available on this server: "
            + _diarization_missing(request.app.state.settings),
            "response_format",
            "diarization_unavailable",
        )
    if low is not None and high is not None and low > high:
        raise bad_request(f"'min_speakers' ({low}) is larger than 'max_speakers' ({high}).", "min_speakers")
    if exact is not None and ((low is not None and exact < low) or (high is not None and exact > high)):
        raise bad_request("'num_speakers' lies outside min_speakers..max_speakers.", "num_speakers")
    if len(references) > MAX_KNOWN_SPEAKERS:
        raise bad_request(
            f"At most {MAX_KNOWN_SPEAKERS} known speakers are supported, got {len(references)}.",
            "known_speaker_references",
        )
    if len(names) != len(references):
        raise bad_request(
            f"known_speaker_names has {len(names)} entries but known_speaker_references has "
            f"{len(references)}; give one name per reference.",
            "known_speaker_names",
        )
    if len(set(names)) != len(names):
        raise bad_request("known_speaker_names must be different from each other.", "known_speaker_names")
    for name in names:
        if len(name) > MAX_SPEAKER_NAME:
            raise bad_request(
                f"A known speaker name is longer than {MAX_SPEAKER_NAME} characters.", "known_speaker_names"
            )
    decoded = tuple(_data_url(i, value) for i, value in enumerate(references))
    return SpeakerAsk(SpeakerCount(exact, low or 1, high), tuple(names), decoded)


def _diarization_missing(settings: Settings) -> str:
    if settings.diarizer == "off":
        return "it was turned off (--diarizer off)."
    return f"the diarizer's packages are not installed. Install them with: {INSTALL_HINT}"


def _data_url(index: int, value: str) -> bytes:
    """The bytes of a data URL (`data:audio/wav;base64,...`; plain percent-encoded data too)."""
    field = "known_speaker_references"
    head, comma, payload = value.partition(",")
    if not head.lower().startswith("data:") or not comma:
        raise bad_request(
            f"known_speaker_references[{index}] must be a data URL such as 'data:audio/wav;base64,...'.",
            field,
        )
    try:
        if head.lower().endswith(";base64"):
            return base64.b64decode(payload, validate=True)
        return urllib.parse.unquote_to_bytes(payload)
    except (binascii.Error, ValueError):
        raise bad_request(f"known_speaker_references[{index}] is not valid base64.", field) from None


# -- running ---------------------------------------------------------------------------------------------


async def _admit(request: Request, parsed: AudioRequest) -> Admitted:
    """Queue the request with its model. The upload is decoded where the model runs (in cluster mode, on its
    replica); a request for speaker labels decodes it here too, for the diarizer beside the app."""
    settings = request.app.state.settings
    audio: bytes | Audio = parsed.data
    try:
        if parsed.speakers is not None:
            audio = await anyio.to_thread.run_sync(decode_audio, parsed.data, settings.max_audio_seconds)
        known = await _known_speakers(parsed.speakers) if parsed.speakers else ()
        job = await parsed.queue.admit(audio, parsed.options, max_audio_s=settings.max_audio_seconds)
    except AudioTooLong as exc:
        raise APIError(413, str(exc), param="file", code="audio_too_long") from None
    except AudioError as exc:
        raise bad_request(str(exc), "file", "invalid_audio") from None
    except QueueFull as exc:
        raise APIError(
            429,
            str(exc),
            code="queue_full",
            type="rate_limit_error",
            headers={"Retry-After": str(exc.retry_after_s)},
        ) from None
    except ModelUnavailable as exc:
        raise _job_error(exc) from None
    request.state.audio_seconds = job.duration_s
    if parsed.speakers is None or not isinstance(audio, Audio):
        return Admitted(job)
    service = request.app.state.diarization
    diarization = service.submit(audio.samples, DiarizationRequest(parsed.speakers.count, known))
    return Admitted(job, diarization, parsed.speakers.names)


async def _known_speakers(ask: SpeakerAsk) -> tuple[KnownSpeaker, ...]:
    known = []
    for index, (name, data) in enumerate(zip(ask.names, ask.references, strict=True)):
        field = "known_speaker_references"
        try:
            audio = await anyio.to_thread.run_sync(decode_audio, data, REFERENCE_SECONDS[1] + 60)
        except AudioError as exc:
            raise bad_request(f"known_speaker_references[{index}] ({name}): {exc}", field) from None
        low, high = REFERENCE_SECONDS
        if not low - REFERENCE_SLACK_S <= audio.duration_s <= high + REFERENCE_SLACK_S:
            raise bad_request(
                f"known_speaker_references[{index}] ({name}) is {audio.duration_s:.1f} s long; a reference "
                f"must be {low:g} to {high:g} seconds of that speaker.",
                field,
            )
        known.append(KnownSpeaker(name, audio.samples))
    return tuple(known)


async def _speaker_turns(admitted: Admitted, timeout_s: float | None) -> SegmentLabeller:
    assert admitted.diarization is not None
    try:
        turns = await asyncio.wait_for(admitted.diarization.turns(), timeout_s)
    except TimeoutError:
        raise
    except Exception as exc:
        log.exception("diarization failed")
        raise APIError(
            500, f"Speaker diarization failed: {exc}", code="engine_error", type="server_error"
        ) from None
    return SegmentLabeller(turns, admitted.known_names)


def _job_error(exc: BaseException) -> APIError:
    if isinstance(exc, ModelUnavailable):
        return APIError(
            503, str(exc), code=exc.code, type="server_error", headers={"Retry-After": str(exc.retry_after_s)}
        )
    if isinstance(exc, JobCancelled):
        return APIError(
            503,
            "The request was cancelled because the server is shutting down.",
            code="cancelled",
            type="server_error",
            headers={"Retry-After": "5"},
        )
    if isinstance(exc, EngineFailure):
        return APIError(500, str(exc), code="engine_error", type="server_error")
    raise exc


def _timeout_error(seconds: float) -> APIError:
    return APIError(
        504,
        f"The transcription did not finish within this server's {seconds:g} s request timeout.",
        code="timeout",
        type="timeout_error",
    )


async def _wait_for_result(request: Request, job: TranscriptionJob, timeout_s: float):
    """The finished transcript; cancels the job if the client goes away or the timeout passes."""
    result = asyncio.ensure_future(job.result())

    async def client_gone() -> None:
        while not await request.is_disconnected():
            await asyncio.sleep(DISCONNECT_POLL_S)

    watcher = asyncio.ensure_future(client_gone())
    try:
        done, _ = await asyncio.wait(
            {result, watcher}, timeout=timeout_s or None, return_when=asyncio.FIRST_COMPLETED
        )
        if result in done:
            try:
                return result.result()
            except (JobCancelled, EngineFailure, ModelUnavailable) as exc:
                raise _job_error(exc) from None
        job.cancel()
        if watcher in done:
            raise APIError(499, "Client closed the request.", code="client_closed")
        raise _timeout_error(timeout_s)
    finally:
        watcher.cancel()
        if not result.done():
            job.cancel()
            result.cancel()


async def _respond(request: Request, task: Task) -> Response:
    parsed = await parse_request(request, task)
    admitted = await _admit(request, parsed)
    settings = request.app.state.settings
    served_by = {"X-Served-By": admitted.job.served_by} if admitted.job.served_by else {}
    if parsed.stream:
        return StreamingResponse(
            _events(admitted, parsed, settings.request_timeout_s),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **served_by},
        )
    started = time.monotonic()
    try:
        transcript = await _wait_for_result(request, admitted.job, settings.request_timeout_s)
        diarized = None
        if admitted.diarization is not None:
            left = (
                settings.request_timeout_s - (time.monotonic() - started)
                if settings.request_timeout_s
                else None
            )
            try:
                labeller = await _speaker_turns(admitted, max(left, 0.001) if left is not None else None)
            except TimeoutError:
                raise _timeout_error(settings.request_timeout_s) from None
            diarized = [piece for segment in transcript.segments for piece in labeller.label(segment)]
    finally:
        admitted.cancel()  # no-ops when finished; stops the diarization when the decode failed
    body, content_type = formats.render(
        transcript,
        parsed.response_format,
        words=parsed.words,
        logprobs=parsed.logprobs,
        usage=task == "transcribe",
        diarized=diarized,
    )
    return Response(body, media_type=content_type, headers=served_by)


async def _events(admitted: Admitted, parsed: AudioRequest, timeout_s: float) -> AsyncIterator[bytes]:
    deadline = time.monotonic() + timeout_s if timeout_s else None
    job = admitted.job
    first = True
    stream = job.stream()
    labeller: SegmentLabeller | None = None
    diarized: list = []
    try:
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            try:
                if remaining is not None and remaining <= 0:
                    raise TimeoutError
                segment = await asyncio.wait_for(anext(stream), remaining)
            except StopAsyncIteration:
                break
            if admitted.diarization is not None:
                if labeller is None:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    labeller = await _speaker_turns(admitted, remaining)
                for labelled in labeller.label(segment):
                    diarized.append(labelled)
                    for piece in _pieces(labelled.text, first):
                        first = False
                        yield formats.delta_event(piece, segment_id=labelled.id)
                    yield formats.sse(formats.diarized_segment_json(labelled))
                continue
            for piece in _pieces(segment.text, first):
                first = False
                yield formats.delta_event(piece)
            if parsed.response_format == "verbose_json":
                yield formats.sse({"type": "transcript.text.segment", **formats.segment_json(segment)})
        text = formats.diarized_text(diarized) if admitted.diarization is not None else None
        yield formats.done_event(job.transcript, logprobs=parsed.logprobs, text=text)
    except TimeoutError:
        yield formats.error_event(_timeout_error(timeout_s).envelope)
    except (JobCancelled, EngineFailure, ModelUnavailable) as exc:
        yield formats.error_event(_job_error(exc).envelope)
    except APIError as exc:
        yield formats.error_event(exc.envelope)
    except Exception:
        log.exception("stream failed")
        yield formats.error_event(
            envelope("The server failed while streaming.", "server_error", None, "internal_error")
        )
    finally:
        admitted.cancel()  # a no-op when finished; stops the work when the client went away


def _pieces(text: str, first: bool) -> list[str]:
    from open_stt_server.transcript import text_pieces

    return list(text_pieces([text], first=first))


def finished_job_recorder(metrics: Metrics, model: str) -> Callable[[TranscriptionJob], None]:
    def record(job: TranscriptionJob) -> None:
        if job.error is None and job.started_at is not None and job.duration_s > 0:
            metrics.audio_seconds.labels(model).inc(job.duration_s)
            metrics.real_time_factor.labels(model).observe(
                (time.monotonic() - job.started_at) / job.duration_s
            )

    return record


_FORM_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "The audio file."},
                        "model": {"type": "string", "description": "A loaded model, or whisper-1."},
                        "language": {"type": "string", "description": "ISO 639-1 code (transcriptions)."},
                        "prompt": {"type": "string"},
                        "response_format": {"type": "string", "enum": list(formats.RESPONSE_FORMATS)},
                        "temperature": {"type": "number", "minimum": 0, "maximum": 1},
                        "timestamp_granularities[]": {
                            "type": "array",
                            "items": {"type": "string", "enum": ["segment", "word"]},
                        },
                        "include[]": {"type": "array", "items": {"type": "string", "enum": ["logprobs"]}},
                        "stream": {"type": "boolean"},
                        "chunking_strategy": {
                            "type": "string",
                            "description": '"auto" or a server_vad object',
                        },
                        "vad_filter": {"type": "boolean", "description": "Extension: Silero VAD on/off."},
                        "batched": {
                            "type": "boolean",
                            "description": "Extension: batched path for long audio.",
                        },
                    },
                }
            }
        },
    }
}
_RESPONSES = {
    200: {"description": "The transcript in the requested format (JSON, text, SRT, VTT or an SSE stream)."},
    400: {"description": "Invalid request (OpenAI error envelope)."},
    401: {"description": "Missing or wrong API key."},
    404: {"description": "Unknown model."},
    413: {"description": "Upload or audio too large."},
    415: {"description": "Not multipart/form-data."},
    429: {"description": "Queue full; retry after Retry-After seconds."},
    504: {"description": "Request timeout."},
}


@router.post("/transcriptions", openapi_extra=_FORM_SCHEMA, responses=_RESPONSES)
async def create_transcription(request: Request) -> Response:
    """Speech → text in the spoken language (OpenAI `audio.transcriptions.create`)."""
    return await _respond(request, "transcribe")


@router.post("/translations", openapi_extra=_FORM_SCHEMA, responses=_RESPONSES)
async def create_translation(request: Request) -> Response:
    """Speech in any language → English text (OpenAI `audio.translations.create`)."""
    return await _respond(request, "translate")
