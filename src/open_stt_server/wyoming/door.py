"""What every Wyoming connection shares: the loaded models, the door's settings, its open connections, the
live-stream slots (shared with realtime sessions, per model) and its metrics."""

from __future__ import annotations

import logging
from collections import Counter

from wyoming.server import AsyncEventHandler

from open_stt_server.metrics import Metrics
from open_stt_server.scheduler import ServedModels
from open_stt_server.settings import Settings

log = logging.getLogger(__name__)


class WyomingDoor:
    def __init__(
        self, settings: Settings, served: ServedModels, live_streams: Counter[str], metrics: Metrics
    ) -> None:
        self.served = served
        self.metrics = metrics
        self.host = settings.wyoming_host or settings.host
        self.port = settings.wyoming_port
        self.endpointing = settings.wyoming_endpointing
        self.partials = settings.wyoming_partials
        self.idle_timeout_s = settings.wyoming_idle_timeout_s
        self.max_buffer_s = settings.realtime_max_buffer_s
        self.max_streams = settings.realtime_max_sessions
        self.live_streams = live_streams  # per model, shared with realtime sessions
        self.connections: set[AsyncEventHandler] = set()
        if settings.api_key:
            log.warning(
                "--api-key does not protect the Wyoming port: the protocol has no authentication. Anyone who "
                "can reach %s:%d can transcribe; bind --wyoming-host to a trusted network (e.g. 127.0.0.1, or "
                "the address Home Assistant reaches).",
                self.host,
                self.port,
            )

    def opened(self, connection: AsyncEventHandler) -> None:
        self.connections.add(connection)
        self.metrics.wyoming_connections.set(len(self.connections))

    def closed(self, connection: AsyncEventHandler) -> None:
        self.connections.discard(connection)
        self.metrics.wyoming_connections.set(len(self.connections))

    def take_slot(self, model: str) -> bool:
        if self.live_streams[model] >= self.max_streams:
            return False
        self.live_streams[model] += 1
        return True

    def give_slot(self, model: str) -> None:
        self.live_streams[model] -= 1

    def answered(self, model: str, audio_seconds: float, latency_s: float | None, outcome: str) -> None:
        self.metrics.wyoming_utterances.labels(model, outcome).inc()
        self.metrics.wyoming_audio_seconds.labels(model).inc(audio_seconds)
        if latency_s is not None:
            self.metrics.wyoming_latency.labels(model).observe(latency_s)
