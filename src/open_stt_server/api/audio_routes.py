"""POST /v1/audio/transcriptions and /v1/audio/translations: parse (`api.requests`), run (`transcribe`), render
(`formats`): as one body, or as Server-Sent Events while the segments come."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import anyio
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import StreamingResponse

from open_stt_server import formats
from open_stt_server.api.auth import require_api_key
from open_stt_server.api.errors import APIError, bad_request, envelope
from open_stt_server.api.form import form_schema
from open_stt_server.api.requests import AudioRequest, parse_request
from open_stt_server.api.speakers import SpeakerAsk
from open_stt_server.audio import Audio, AudioError, AudioTooLong, decode_audio
from open_stt_server.diarization import DiarizationRequest, KnownSpeaker
from open_stt_server.diarization.service import DiarizationJob
from open_stt_server.diarization.speakers import SegmentLabeller
from open_stt_server.metrics import Metrics
from open_stt_server.scheduler import (
    EngineFailure,
    JobCancelled,
    ModelUnavailable,
    QueueFull,
    TranscriptionJob,
)
from open_stt_server.transcribe import CallerGone, TimedOut, Transcription
from open_stt_server.transcript import Task, Transcript, text_pieces

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/audio", tags=["audio"], dependencies=[Depends(require_api_key)])

REFERENCE_SECONDS = (2.0, 10.0)  # OpenAI's bounds for a known speaker's sample
REFERENCE_SLACK_S = 0.05  # codec padding


@dataclass
class Admitted:
    transcription: Transcription
    diarization: DiarizationJob | None = None
    known_names: tuple[str, ...] = ()

    @property
    def job(self) -> TranscriptionJob:
        return self.transcription.job

    def cancel(self) -> None:
        self.transcription.cancel()
        if self.diarization is not None:
            self.diarization.cancel()


async def _admit(request: Request, parsed: AudioRequest) -> Admitted:
    """Queue the request with its model. The upload is decoded where the model runs (in cluster mode, on its
    replica); a request for speaker labels decodes it here too, for the diarizer beside the app."""
    settings = request.app.state.settings
    audio: bytes | Audio = parsed.data
    try:
        if parsed.speakers is not None:
            audio = await anyio.to_thread.run_sync(decode_audio, parsed.data, settings.max_audio_seconds)
        known = await _known_speakers(parsed.speakers) if parsed.speakers else ()
        transcription = await Transcription.start(
            parsed.queue,
            audio,
            parsed.options,
            max_audio_s=settings.max_audio_seconds,
            timeout_s=settings.request_timeout_s,
        )
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
    request.state.audio_seconds = transcription.job.duration_s
    if parsed.speakers is None or not isinstance(audio, Audio):
        return Admitted(transcription)
    service = request.app.state.diarization
    diarization = service.submit(audio.samples, DiarizationRequest(parsed.speakers.count, known))
    return Admitted(transcription, diarization, parsed.speakers.names)


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


async def _transcript(request: Request, admitted: Admitted) -> Transcript:
    """The finished transcript, or the HTTP error for why there is none (the work is stopped then)."""
    try:
        return await admitted.transcription.transcript(caller_gone=request.is_disconnected)
    except (JobCancelled, EngineFailure, ModelUnavailable) as exc:
        raise _job_error(exc) from None
    except CallerGone:
        raise APIError(499, "Client closed the request.", code="client_closed") from None
    except TimedOut as exc:
        raise _timeout_error(exc.seconds) from None


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
    try:
        transcript = await _transcript(request, admitted)
        diarized = None
        if admitted.diarization is not None:
            left = admitted.transcription.remaining_s()
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
    transcription = admitted.transcription
    first = True
    labeller: SegmentLabeller | None = None
    diarized: list = []
    try:
        async for segment in transcription.segments():
            if admitted.diarization is not None:
                if labeller is None:
                    labeller = await _speaker_turns(admitted, transcription.remaining_s())
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
        yield formats.done_event(transcription.job.transcript, logprobs=parsed.logprobs, text=text)
    except (TimedOut, asyncio.TimeoutError):
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
    return list(text_pieces([text], first=first))


def finished_job_recorder(metrics: Metrics, model: str) -> Callable[[TranscriptionJob], None]:
    def record(job: TranscriptionJob) -> None:
        if job.error is None and job.started_at is not None and job.duration_s > 0:
            metrics.audio_seconds.labels(model).inc(job.duration_s)
            metrics.real_time_factor.labels(model).observe(
                (time.monotonic() - job.started_at) / job.duration_s
            )

    return record


_FORM_SCHEMA = form_schema()
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
