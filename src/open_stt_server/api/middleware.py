"""Pure ASGI middleware: upload size limit, request ids, the access log and request metrics."""

from __future__ import annotations

import json
import logging
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from open_stt_server.api.errors import envelope
from open_stt_server.metrics import Metrics

access_log = logging.getLogger("open_stt_server.access")


async def _send_error(send: Send, status: int, body: dict, headers: list[tuple[bytes, bytes]] = ()) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class UploadLimit:
    """413 before the app reads a body larger than the limit, whether or not Content-Length is sent."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._too_large(send)
            return
        if length is not None:
            await self.app(scope, receive, send)
            return
        # No Content-Length (chunked): read up to the limit here, then replay it to the app.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._too_large(send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send) -> None:
        mb = self.max_bytes / (1024 * 1024)
        await _send_error(
            send,
            413,
            envelope(
                f"The upload is larger than this server's limit of {mb:g} MB.",
                param="file",
                code="upload_too_large",
            ),
            [(b"connection", b"close")],
        )


class RequestLog:
    """Request id in and out (X-Request-ID), one access-log line per request, request metrics."""

    def __init__(self, app: ASGIApp, metrics: Metrics, echo_request_id: bool = True) -> None:
        self.app = app
        self.metrics = metrics
        self.echo_request_id = echo_request_id  # off behind a proxy that echoes the same id (Ray Serve's)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        incoming = headers.get(b"x-request-id", b"").decode("latin-1").strip()
        request_id = incoming[:128] if incoming and incoming.isprintable() else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if self.echo_request_id:
                    message.setdefault("headers", [])
                    message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            state = scope.get("state", {})
            path = scope.get("path", "")
            if path.startswith("/v1/audio/"):
                endpoint = path.rsplit("/", 1)[-1]
                self.metrics.requests.labels(
                    state.get("model", ""), endpoint, state.get("format", ""), str(status)
                ).inc()
                self.metrics.latency.labels(endpoint).observe(elapsed)
            fields = {
                "request_id": request_id,
                "method": scope.get("method"),
                "path": path,
                "status": status,
                "duration_ms": round(elapsed * 1000, 1),
            }
            if state.get("model"):
                fields["model"] = state["model"]
            if state.get("audio_seconds") is not None:
                fields["audio_seconds"] = round(state["audio_seconds"], 2)
            access_log.info(
                "%s %s %s %.1fms id=%s",
                fields["method"],
                path,
                status,
                fields["duration_ms"],
                request_id,
                extra={"fields": fields},
            )
