"""Prometheus metrics, on a registry owned by one app (no module-level state)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily

LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800)
RTF_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 5)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "open_stt_requests",
            "HTTP requests to the audio API",
            ["model", "endpoint", "format", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "open_stt_request_duration_seconds",
            "Time from request to full response",
            ["endpoint"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.audio_seconds = Counter(
            "open_stt_audio_seconds", "Seconds of audio transcribed", ["model"], registry=r
        )
        self.real_time_factor = Histogram(
            "open_stt_real_time_factor",
            "Processing time ÷ audio duration per request",
            ["model"],
            buckets=RTF_BUCKETS,
            registry=r,
        )
        self.realtime_sessions = Gauge(
            "open_stt_realtime_sessions", "Realtime sessions open", ["model"], registry=r
        )
        self.realtime_turns = Counter(
            "open_stt_realtime_turns", "Realtime turns transcribed", ["model"], registry=r
        )
        self.realtime_turn_latency = Histogram(
            "open_stt_realtime_turn_latency_seconds",
            "End of speech (or commit) → completed transcript, per realtime turn",
            ["model"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.realtime_audio_seconds = Counter(
            "open_stt_realtime_audio_seconds",
            "Seconds of audio received by realtime sessions",
            ["model"],
            registry=r,
        )
        self.wyoming_connections = Gauge(
            "open_stt_wyoming_connections", "Wyoming (Home Assistant) connections open", registry=r
        )
        self.wyoming_utterances = Counter(
            "open_stt_wyoming_utterances",
            "Wyoming utterances answered, by outcome (transcribed, failed)",
            ["model", "outcome"],
            registry=r,
        )
        self.wyoming_audio_seconds = Counter(
            "open_stt_wyoming_audio_seconds", "Seconds of audio received over Wyoming", ["model"], registry=r
        )
        self.wyoming_latency = Histogram(
            "open_stt_wyoming_latency_seconds",
            "End of the utterance (audio-stop, or the speaker stopping with endpointing) → transcript",
            ["model"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.model_load_seconds = Gauge(
            "open_stt_model_load_seconds", "Time to load each model", ["model"], registry=r
        )

    def watch_queues(self, depths: Callable[[], dict[str, tuple[int, int]]]) -> None:
        """Expose each model's queue (admitted, running) as read at scrape time."""

        class QueueCollector:
            def collect(self):
                admitted = GaugeMetricFamily(
                    "open_stt_queue_depth",
                    "Requests admitted per model (running + waiting)",
                    labels=["model"],
                )
                running = GaugeMetricFamily(
                    "open_stt_running", "Requests being decoded per model", labels=["model"]
                )
                for model, (depth, busy) in depths().items():
                    admitted.add_metric([model], depth)
                    running.add_metric([model], busy)
                yield admitted
                yield running

        self.registry.register(QueueCollector())
