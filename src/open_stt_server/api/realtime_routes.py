"""WS /v1/realtime: OpenAI Realtime transcription sessions — auth and limits before the socket opens, then the
event pump between the client and its `RealtimeSession`."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
import uuid
from collections import Counter
from dataclasses import replace

from fastapi import APIRouter, WebSocket
from fastapi.responses import JSONResponse
from starlette.websockets import WebSocketState

from open_stt_server.api.errors import envelope
from open_stt_server.realtime.protocol import ProtocolError, SessionSettings, error_event
from open_stt_server.realtime.session import RealtimeSession, SessionLimits, session_language
from open_stt_server.scheduler import ServedModels, TranscriptionQueue

log = logging.getLogger(__name__)
router = APIRouter(tags=["realtime"])

IDLE_GRACE_S = 0.05  # how long a timed-out wait still looks for a frame already on its way
KEY_SUBPROTOCOL = "openai-insecure-api-key."
BETA_SUBPROTOCOL = "openai-beta.realtime-v1"


class RealtimeSessions:
    """Sessions open per model, for the per-model limit and /metrics."""

    def __init__(self) -> None:
        self.open: Counter[str] = Counter()


def _offered_key(websocket: WebSocket) -> str | None:
    header = websocket.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    for protocol in websocket.scope.get("subprotocols", []):
        if protocol.startswith(KEY_SUBPROTOCOL):
            return protocol[len(KEY_SUBPROTOCOL) :]
    return None


async def _deny(websocket: WebSocket, status: int, message: str, code: str, kind: str, headers=None) -> None:
    body = envelope(message, kind, None, code)
    await websocket.send_denial_response(JSONResponse(body, status_code=status, headers=headers))


@router.websocket("/v1/realtime")
async def realtime(websocket: WebSocket) -> None:
    app = websocket.app
    settings = app.state.settings
    sessions: RealtimeSessions = app.state.realtime
    if not await _authorized(websocket, settings.api_key):
        return
    queue, problems = _session_model(websocket, app.state.models, settings.realtime_model)
    if sessions.open[queue.name] >= settings.realtime_max_sessions:
        await _deny(
            websocket,
            429,
            f"This server already runs {settings.realtime_max_sessions} realtime sessions on '{queue.name}'; "
            "try again later.",
            "session_limit_reached",
            "rate_limit_error",
            {"Retry-After": "5"},
        )
        return
    offered = websocket.scope.get("subprotocols", [])
    await websocket.accept(subprotocol="realtime" if "realtime" in offered else None)
    outbox: asyncio.Queue[dict | None] = asyncio.Queue()
    sender = asyncio.create_task(_send_all(websocket, outbox))
    intent = websocket.query_params.get("intent", "transcription")
    if intent != "transcription":
        outbox.put_nowait(
            error_event(
                f"This server runs transcription sessions only: connect with ?intent=transcription, not '{intent}'.",
                code="unsupported_intent",
                param="intent",
            )
        )
        outbox.put_nowait(None)
        await sender
        await websocket.close(1008, "unsupported intent")
        return
    session = _open_session(websocket, queue, outbox, problems)
    await _run_session(websocket, session, outbox, sender)


async def _authorized(websocket: WebSocket, api_key: str | None) -> bool:
    """Checked before the socket opens: a missing or wrong key is a 401 denial."""
    if not api_key:
        return True
    key = _offered_key(websocket)
    if key is not None and hmac.compare_digest(key.encode(), api_key.encode()):
        return True
    message = (
        "Missing API key: send 'Authorization: Bearer <key>' (browsers: the subprotocol "
        "'openai-insecure-api-key.<key>')."
        if key is None
        else "Incorrect API key provided."
    )
    await _deny(
        websocket, 401, message, "invalid_api_key", "invalid_request_error", {"WWW-Authenticate": "Bearer"}
    )
    return False


def _session_model(
    websocket: WebSocket, served: ServedModels, realtime_model: str | None
) -> tuple[TranscriptionQueue, list[dict]]:
    """The model the URL names (else --realtime-model); an unknown one is reported and the default serves."""
    url_model = websocket.query_params.get("model")
    queue = served.resolve(url_model) if url_model else served.resolve(realtime_model)
    problems: list[dict] = []
    if queue is None:
        problems.append(
            error_event(
                f"The model '{url_model}' does not exist or is not loaded on this server; the session uses "
                f"'{served.default}'. Loaded: {', '.join(served.names())}.",
                code="model_not_found",
                param="model",
            )
        )
        queue = served.resolve(None)
    assert queue is not None
    return queue, problems


def _open_session(
    websocket: WebSocket, queue: TranscriptionQueue, outbox: asyncio.Queue, problems: list[dict]
) -> RealtimeSession:
    """The session with what the URL and headers say (model, language, dialect), created and announced."""
    app = websocket.app
    settings = app.state.settings
    metrics = app.state.metrics
    params = websocket.query_params
    session_settings = SessionSettings(model=params.get("model") or queue.name)
    language = params.get("language")
    if language:
        try:
            session_settings = replace(
                session_settings, language=session_language(language, queue, "language")
            )
        except ProtocolError as exc:
            problems.append(error_event(exc.message, code=exc.code, param=exc.param))
    offered = websocket.scope.get("subprotocols", [])
    beta = "realtime=v1" in websocket.headers.get("openai-beta", "") or BETA_SUBPROTOCOL in offered
    limits = SessionLimits(
        settings.realtime_max_session_s,
        settings.realtime_idle_timeout_s,
        settings.realtime_max_buffer_s,
        settings.realtime_partials,
    )

    def on_turn(model: str, latency: float) -> None:
        metrics.realtime_turns.labels(model).inc()
        metrics.realtime_turn_latency.labels(model).observe(latency)

    session = RealtimeSession(
        app.state.models,
        queue,
        session_settings,
        "beta" if beta else "ga",
        outbox.put_nowait,
        limits,
        on_turn,
    )
    session.created()
    for problem in problems:
        outbox.put_nowait(problem)
    return session


async def _run_session(
    websocket: WebSocket, session: RealtimeSession, outbox: asyncio.Queue, sender: asyncio.Task
) -> None:
    """Pump events until the session ends, then close it and account for it."""
    sessions: RealtimeSessions = websocket.app.state.realtime
    metrics = websocket.app.state.metrics
    request_id = websocket.headers.get("x-request-id") or uuid.uuid4().hex
    model_name = session.queue.name
    sessions.open[model_name] += 1
    metrics.realtime_sessions.labels(model_name).inc()
    ended = "client closed"
    try:
        ended = await _pump(websocket, session, session.limits, outbox)
    finally:
        await session.close()
        outbox.put_nowait(None)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(sender, 5)
        sender.cancel()
        sessions.open[model_name] -= 1
        metrics.realtime_sessions.labels(model_name).dec()
        metrics.realtime_audio_seconds.labels(session.queue.name).inc(session.stats.audio_seconds)
        if websocket.client_state == WebSocketState.CONNECTED:
            code = 1001 if ended == "idle timeout" else 1000
            with contextlib.suppress(Exception):
                await websocket.close(code, ended)
        log.info(
            "realtime session %s model=%s turns=%d failed=%d audio=%.1fs lasted=%.1fs ended=%s id=%s",
            session.id,
            session.queue.name,
            session.stats.turns,
            session.stats.failed,
            session.stats.audio_seconds,
            time.monotonic() - session.started,
            ended,
            request_id,
        )


async def _pump(websocket: WebSocket, session: RealtimeSession, limits: SessionLimits, outbox) -> str:
    deadline = session.started + limits.max_session_s
    receiving: asyncio.Future | None = None
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                outbox.put_nowait(
                    error_event("The session reached its maximum length.", code="session_expired")
                )
                return "session expired"
            if receiving is None:
                receiving = asyncio.ensure_future(websocket.receive())
            done, _ = await asyncio.wait({receiving}, timeout=min(left, limits.idle_timeout_s))
            if not done:
                # A frame the client sent in time may still be on its way through this loop (after a stall of
                # the process, the timer and the socket become ready together): idle means nothing arrived.
                await asyncio.sleep(IDLE_GRACE_S)
                if not receiving.done():
                    if time.monotonic() >= deadline:
                        continue
                    return "idle timeout"
            message, receiving = receiving.result(), None
            if message["type"] == "websocket.disconnect":
                return "client closed"
            text = message.get("text")
            if text is None:
                outbox.put_nowait(error_event("Send client events as JSON text frames.", code="invalid_json"))
                continue
            try:
                data = json.loads(text)
            except json.JSONDecodeError:
                data = None
            if not isinstance(data, dict):
                outbox.put_nowait(error_event("A client event must be a JSON object.", code="invalid_json"))
                continue
            await session.handle(data)
    finally:
        if receiving is not None and not receiving.done():
            receiving.cancel()


async def _send_all(websocket: WebSocket, outbox: asyncio.Queue) -> None:
    """One sender, so events leave in the order the session made them."""
    while True:
        message = await outbox.get()
        if message is None:
            return
        try:
            await websocket.send_text(json.dumps(message, ensure_ascii=False))
        except Exception:  # the client went away: drain and stop
            return
