"""The typed request of POST /v1/audio/*: the multipart form (`api.form`) read and validated into one
`AudioRequest`. Error messages, statuses, params and codes are the wire contract (tests pin them)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException

from open_stt_server import formats
from open_stt_server.api.errors import APIError, bad_request
from open_stt_server.api.form import FIELD, boolean, chunking, fields, number, text
from open_stt_server.api.speakers import SpeakerAsk, speaker_ask
from open_stt_server.languages import UnsupportedLanguage, model_language
from open_stt_server.scheduler import ServedModels, TranscriptionQueue
from open_stt_server.settings import Settings
from open_stt_server.transcript import Task, TranscribeOptions


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


# -- the request ---------------------------------------------------------------------------------------------


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
    settings: Settings = request.app.state.settings
    upload = _upload(form)
    queue, model_id = _model(request, form)
    engine = queue.engine
    response_format = _response_format(request, form)
    language = _language(form, task, queue)
    temperature = number(form, "temperature") or 0.0
    words = _words(form, queue, response_format)
    prompt = text(form, "prompt") or None
    if prompt and not engine.supports_prompt:
        raise bad_request(
            f"Model '{queue.name}' takes no prompt; send the request without one.",
            "prompt",
            "unsupported_parameter",
        )
    logprobs = _logprobs(form, queue, response_format)
    stream = bool(boolean(form, "stream"))
    if stream and response_format not in ("json", "text", "verbose_json", "diarized_json"):
        raise bad_request(
            "stream=true sends transcript events; use response_format json, text, verbose_json or "
            "diarized_json with it.",
            "stream",
        )
    speakers = speaker_ask(request, form, task, response_format)
    vad_filter, vad_options = _vad(form, settings)
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
        batched=boolean(form, "batched"),
        early_text=stream,
        segment_times=words or logprobs or response_format not in ("json", "text"),
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
        data, upload.filename or "", queue, model_id or queue.name, response_format, options, words, stream,
        logprobs, speakers,
    )  # fmt: skip


def _upload(form: FormData) -> UploadFile:
    upload = form.get("file")
    if upload is None:
        raise bad_request("Missing the 'file' field with the audio to transcribe.", "file", "missing_file")
    if not isinstance(upload, UploadFile):
        raise bad_request("'file' must be an uploaded file, not a text field.", "file")
    return upload


def _model(request: Request, form: FormData) -> tuple[TranscriptionQueue, str | None]:
    served: ServedModels = request.app.state.models
    model_id = text(form, "model") or None
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
    return queue, model_id


def _response_format(request: Request, form: FormData) -> str:
    response_format = (text(form, "response_format") or "json").lower()
    if response_format not in FIELD["response_format"].schema["enum"]:
        raise bad_request(
            f"Unsupported response_format '{response_format}'; use one of "
            f"{', '.join(formats.RESPONSE_FORMATS)}.",
            "response_format",
        )
    request.state.format = response_format
    return response_format


def _language(form: FormData, task: Task, queue: TranscriptionQueue) -> str | None:
    engine = queue.engine
    language = None
    raw_language = text(form, "language") if task == "transcribe" else None
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
    return language


def _listed(form: FormData, name: str, unknown: str) -> list[str]:
    """A list field's values, each one of those its form-table entry allows (`unknown` names the one that is not)."""
    values = fields(form, name)
    for value in values:
        if value not in FIELD[name].schema["items"]["enum"]:
            raise bad_request(unknown.format(value), name)
    return values


def _words(form: FormData, queue: TranscriptionQueue, response_format: str) -> bool:
    """Whether word timestamps are asked for (timestamp_granularities)."""
    granularities = _listed(
        form, "timestamp_granularities", "Unknown timestamp granularity '{}'; use 'segment' and/or 'word'."
    )
    words = "word" in granularities
    if granularities and response_format != "verbose_json":
        raise bad_request(
            "timestamp_granularities requires response_format=verbose_json.", "timestamp_granularities"
        )
    if words and not queue.engine.supports_word_timestamps:
        raise bad_request(
            f"Model '{queue.name}' does not produce word timestamps; ask for segment timestamps only, "
            "or use a Whisper model.",
            "timestamp_granularities",
        )
    return words


def _logprobs(form: FormData, queue: TranscriptionQueue, response_format: str) -> bool:
    include = _listed(form, "include", "Unknown include value '{}'; only 'logprobs' is supported.")
    logprobs = "logprobs" in include
    if logprobs and not queue.engine.supports_word_timestamps:
        raise bad_request(
            f"Model '{queue.name}' does not report per-word log probabilities; send the request without "
            "include[]=logprobs, or use a Whisper model.",
            "include",
            "unsupported_parameter",
        )
    if logprobs and response_format != "json":
        raise bad_request("include[]=logprobs requires response_format=json.", "include")
    return logprobs


def _vad(form: FormData, settings: Settings) -> tuple[bool, dict]:
    """vad_filter (an extension) and OpenAI's chunking_strategy, which turns VAD on unless vad_filter says no."""
    vad_filter = boolean(form, "vad_filter")
    strategy = chunking(form)
    vad_options: dict = {}
    if strategy is not None:
        vad_filter = True if vad_filter is None else vad_filter
        vad_options = strategy
    if vad_filter is None:
        vad_filter = settings.vad_filter
    return vad_filter, vad_options
