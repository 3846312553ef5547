"""One frozen Settings object, validated once at start-up."""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_MODEL = "whisper-base"


@dataclass(frozen=True)
class Settings:
    models: tuple[str, ...] = (DEFAULT_MODEL,)
    default_model: str | None = None  # None = the first of `models`
    host: str = "0.0.0.0"
    port: int = 8080
    force_cpu: bool = False
    download: bool = False
    api_key: str | None = None
    compute_type: str | None = None  # None = int8 on CPU, float16 on CUDA
    log_level: str = "info"
    log_format: str = "text"  # text | json
    max_upload_mb: float = 25.0
    max_audio_seconds: float = 3 * 3600.0
    workers: int = 2  # concurrent decodes per model
    cpu_threads: int = 0  # threads per decode; 0 = every core
    max_queue: int = 64  # requests admitted per model (running + waiting) before 429
    request_timeout_s: float = 0.0  # 0 = no limit
    vad_filter: bool = False  # server default for requests that do not say
    batched_long_audio: bool = True  # long files take faster-whisper's batched pipeline over VAD chunks
    batched_min_seconds: float = 60.0
    batch_size: int = 8
    # Whisper on CPU: a second copy of the weights as this many one-thread decoders, for beam searches and the
    # parts of long files' batches; None = one per core, 0 = none (every decode on cpu_threads)
    cpu_decoders: int | None = None
    cors_origins: tuple[str, ...] = ()
    playground: bool = True
    shutdown_grace_s: float = 30.0
    diarizer: str = "auto"  # auto (when installed) | ge2e | off
    diarizer_weights: str | None = None  # a GE2E pretrained.pt; None = the one in the Resemblyzer wheel
    diarize_model: str | None = None  # the model behind gpt-4o-transcribe-diarize; None = the default model
    realtime_model: str | None = (
        None  # the model behind OpenAI's transcription names; None = the default model
    )
    realtime_partials: bool = False  # live partial words in every realtime session
    realtime_max_sessions: int = 16  # concurrent realtime sessions per model
    realtime_max_session_s: float = 3600.0
    realtime_idle_timeout_s: float = 300.0
    realtime_max_buffer_s: float = 600.0  # uncommitted audio when the client commits
    realtime_max_message_mb: float = 21.0  # one WebSocket message (OpenAI: 15 MiB of audio, base64)
    wyoming_port: int = 0  # Home Assistant's Wyoming protocol; 0 = off
    wyoming_host: str | None = None  # None = `host`
    wyoming_endpointing: bool = False  # the server ends an utterance when the speaker stops
    wyoming_partials: bool = True  # transcript-chunks while the speaker talks
    wyoming_idle_timeout_s: float = 60.0
    wyoming_zeroconf: str | None = None  # announce the port by mDNS under this name; None = off
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    def threads_per_worker(self) -> int:
        if self.cpu_threads > 0:
            return self.cpu_threads
        return os.cpu_count() or 1

    def decoders(self) -> int:
        """How many one-thread Whisper decoders to keep beside the model on CPU (0 = none)."""
        return (os.cpu_count() or 1) if self.cpu_decoders is None else self.cpu_decoders
