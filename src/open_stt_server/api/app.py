"""The app factory: settings in, a FastAPI app out; models load in the lifespan (or are handed in)."""

from __future__ import annotations

import logging
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from open_stt_server import __version__, catalog, hub
from open_stt_server.api import audio_routes, model_routes, ops_routes, realtime_routes
from open_stt_server.api.errors import install_error_handlers
from open_stt_server.api.middleware import RequestLog, UploadLimit
from open_stt_server.diarization import DiarizerUnavailable, load_diarizer
from open_stt_server.diarization.checkpoint import CheckpointError
from open_stt_server.diarization.service import DiarizationService
from open_stt_server.engines import Engine, EngineUnavailable, load_engine, require_engine
from open_stt_server.metrics import Metrics
from open_stt_server.scheduler import ModelQueue, ServedModels, TranscriptionQueue
from open_stt_server.settings import Settings
from open_stt_server.wyoming.door import WyomingDoor
from open_stt_server.wyoming.server import AnnouncementFailed, WyomingListener

log = logging.getLogger("open_stt_server")


class StartupError(RuntimeError):
    """The server cannot start as configured; the message says why and what to change."""


def model_specs(settings: Settings) -> list[catalog.ModelSpec]:
    try:
        return [catalog.lookup(name) for name in settings.models]
    except catalog.UnknownModel as exc:
        raise StartupError(str(exc)) from None


def model_roles(settings: Settings, specs: list[catalog.ModelSpec]) -> tuple[str, dict[str, str]]:
    """The default model, and the OpenAI names (whisper-1 aside) mapped to the loaded model serving each."""
    names = [s.name for s in specs]

    by_name = {s.name: s for s in specs}

    def loaded(flag: str, wanted: str) -> str:
        match = catalog.loaded_name(wanted, by_name)
        if match is None:
            raise StartupError(
                f"{flag} '{wanted}' is not one of the loaded models ({', '.join(names)}); "
                "add it with --model or pick one of those."
            )
        return match

    default = loaded("--default-model", settings.default_model) if settings.default_model else names[0]
    diarize_model = loaded("--diarize-model", settings.diarize_model) if settings.diarize_model else default
    realtime_model = (
        loaded("--realtime-model", settings.realtime_model) if settings.realtime_model else default
    )
    aliases = {name: realtime_model for name in catalog.OPENAI_TRANSCRIBE_ALIASES}
    aliases[catalog.OPENAI_DIARIZE_ALIAS] = diarize_model
    return default, aliases


def load_model(spec: catalog.ModelSpec, settings: Settings) -> tuple[Engine, float]:
    """The model's engine with its weights (from the hub cache, or fetched with --download), and the seconds
    that took; a StartupError that says what to do when it cannot load."""
    started = time.perf_counter()
    try:
        require_engine(spec)
        weights = hub.resolve_weights(spec, settings.download)
        engine = load_engine(spec, weights, settings)
    except (hub.WeightsUnavailable, EngineUnavailable) as exc:
        raise StartupError(str(exc)) from None
    except (RuntimeError, ValueError, OSError) as exc:
        raise StartupError(f"Could not load model '{spec.name}' from {spec.source}: {exc}") from None
    took = time.perf_counter() - started
    log.info(
        "loaded %s from %s on %s (%s) in %.2fs", spec.name, weights, engine.device, engine.compute_type, took
    )
    return engine, took


def load_models(settings: Settings) -> ServedModels:
    specs = model_specs(settings)
    default, aliases = model_roles(settings, specs)
    queues: dict[str, TranscriptionQueue] = {}
    load_seconds: dict[str, float] = {}
    try:
        for spec in specs:
            engine, load_seconds[spec.name] = load_model(spec, settings)
            queues[spec.name] = ModelQueue(spec.name, engine, settings.workers, settings.max_queue)
    except BaseException:
        for queue in queues.values():
            queue.stop()
        raise
    return ServedModels(queues, default, int(time.time()), load_seconds, aliases)


def load_speaker_labels(settings: Settings) -> DiarizationService | None:
    """The diarizer the settings choose, or None (with the reason logged) when auto finds none installed."""
    try:
        diarizer = load_diarizer(settings.diarizer, settings.diarizer_weights)
    except (DiarizerUnavailable, CheckpointError, OSError) as exc:
        raise StartupError(f"--diarizer {settings.diarizer}: {exc}") from None
    if diarizer is None:
        if settings.diarizer == "auto":
            log.info("speaker labels (diarized_json) are off: the GE2E weights are not installed")
        return None
    log.info("speaker labels (diarized_json) by the %s diarizer", diarizer.name)
    return DiarizationService(diarizer)


async def open_wyoming(
    settings: Settings, served: ServedModels, live_streams: Counter[str], metrics: Metrics
) -> WyomingListener | None:
    """Home Assistant's Wyoming listener beside HTTP when --wyoming-port is set; None otherwise."""
    if not settings.wyoming_port:
        return None
    door = WyomingDoor(settings, served, live_streams, metrics)
    listener = WyomingListener(door, settings.wyoming_zeroconf)
    try:
        await listener.start()
    except AnnouncementFailed as exc:
        raise StartupError(
            f"--wyoming-zeroconf {settings.wyoming_zeroconf!r}: cannot announce the port ({exc})"
        ) from None
    except OSError as exc:
        raise StartupError(
            f"--wyoming-port {settings.wyoming_port}: cannot listen on {door.host}:{door.port} ({exc.strerror})"
        ) from None
    return listener


def create_app(
    settings: Settings,
    models: ServedModels | None = None,
    speaker_labels: DiarizationService | bool | None = True,
    echo_request_id: bool = True,
) -> FastAPI:
    """`speaker_labels`: the diarization service, None for none, True to load what the settings choose;
    `echo_request_id`: False behind a proxy that already returns X-Request-ID (Ray Serve's)."""
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        diarization = load_speaker_labels(settings) if speaker_labels is True else speaker_labels
        app.state.diarization = diarization
        served = models or load_models(settings)
        app.state.models = served
        for name, seconds in served.load_seconds.items():
            metrics.model_load_seconds.labels(name).set(seconds)
        metrics.watch_queues(served.depths)
        for name, queue in served.queues.items():
            queue.on_finished = audio_routes.finished_job_recorder(metrics, name)
        wyoming = await open_wyoming(settings, served, app.state.realtime.open, metrics)
        try:
            yield
        finally:
            if wyoming is not None:
                await wyoming.stop()
            served.stop()
            if diarization is not None:
                diarization.close()

    app = FastAPI(
        title="open-stt-server",
        version=__version__,
        summary="Speech-to-text with OpenAI's audio API: Whisper models resident in memory.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    install_error_handlers(app)
    app.include_router(audio_routes.router)
    app.include_router(model_routes.router)
    app.include_router(ops_routes.router)
    app.include_router(realtime_routes.router)
    app.state.realtime = realtime_routes.RealtimeSessions()
    if settings.playground:
        from open_stt_server.api import playground_routes

        app.include_router(playground_routes.router)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    app.add_middleware(UploadLimit, max_bytes=settings.max_upload_bytes)
    app.add_middleware(RequestLog, metrics=metrics, echo_request_id=echo_request_id)
    return app


def serve(settings: Settings) -> None:
    """Load the models (failing fast with a clear message), then run uvicorn until SIGINT/SIGTERM."""
    import uvicorn

    diarization = load_speaker_labels(settings)
    served = load_models(settings)
    app = create_app(settings, served, diarization)
    log.info(
        "open-stt-server %s listening on %s://%s:%d (models: %s; default %s)",
        __version__,
        "https" if settings.ssl_certfile else "http",
        settings.host,
        settings.port,
        ", ".join(served.names()),
        served.default,
    )
    # uvicorn drains in-flight requests on SIGTERM, then re-raises the signal to the handler that was installed
    # before it started. A no-op handler there turns a graceful drain into exit status 0 instead of death by signal.
    signal.signal(signal.SIGTERM, lambda *_: None)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s),
        ws_max_size=int(settings.realtime_max_message_mb * 1024 * 1024),
        ssl_certfile=settings.ssl_certfile,
        ssl_keyfile=settings.ssl_keyfile,
    )
