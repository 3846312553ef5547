"""The Serve application: an ingress replica runs our own `create_app` (routes, auth, envelopes, SSE, realtime,
/v1/models, /metrics) and reaches each model through a `RemoteModelQueue`; each model is a deployment whose
replicas hold a `ModelQueue` + engine and decode the uploads themselves.

`build(args)` is the application builder for `serve run open_stt_server.cluster.app:build model=... replicas=2`
and for a Serve config file; `open-stt-server ray` calls it too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace

import ray
from ray import serve
from ray.serve.handle import DeploymentHandle

from open_stt_server import catalog
from open_stt_server.api.app import StartupError, create_app, load_model, model_roles, model_specs
from open_stt_server.audio import Audio
from open_stt_server.cluster.options import ClusterOptions, Deployment, argv_of, parse
from open_stt_server.cluster.remote import Failed, Finished, RemoteModelQueue, Started, failure
from open_stt_server.engines import Capabilities, capabilities, capabilities_of
from open_stt_server.logs import configure_logging
from open_stt_server.scheduler import ModelQueue, Priority, ServedModels
from open_stt_server.settings import Settings
from open_stt_server.transcript import Segment, TranscribeOptions

log = logging.getLogger("open_stt_server")

# A replica takes a few requests beyond its workers, so its own scheduler can let a short clip pass a long file.
ONGOING_PER_WORKER = 2


class ModelServer:
    """One replica of one model: the engine, its queue and workers; uploads are decoded here."""

    def __init__(self, model: str, settings: Settings) -> None:
        configure_logging(settings.log_level, settings.log_format)
        context = ray.get_runtime_context()
        gpus = context.get_accelerator_ids().get("GPU") or []
        cpus = context.get_assigned_resources().get("CPU", 1.0)
        # Threads follow the CPUs Ray gave this replica; a replica given no GPU stays on the CPU even on a GPU
        # node (Ray leaves CUDA_VISIBLE_DEVICES alone when num_gpus is 0).
        threads = settings.cpu_threads or max(1, int(cpus // settings.workers))
        decoders = max(1, int(cpus)) if settings.cpu_decoders is None else settings.cpu_decoders
        self.settings = replace(
            settings, cpu_threads=threads, cpu_decoders=decoders, force_cpu=settings.force_cpu or not gpus
        )
        spec = catalog.lookup(model)
        try:
            engine, self.load_s = load_model(spec, self.settings)
        except StartupError as exc:
            log.error("%s", exc)
            raise
        # Serve bounds what reaches a replica (max_ongoing_requests): the local queue never says "full".
        self.queue = ModelQueue(spec.name, engine, self.settings.workers, max_queue=1_000_000)
        replica = serve.get_replica_context().replica_id.unique_id
        self.served_by = f"{replica}@{context.get_node_id()[:12]}"
        log.info("replica %s of %s ready (%d worker(s) x %d thread(s))", self.served_by, spec.name,
                 self.settings.workers, threads)  # fmt: skip

    async def transcribe(
        self, audio: bytes | Audio, options: TranscribeOptions, priority: int, max_audio_s: float
    ) -> AsyncIterator[Started | Segment | Finished | Failed]:
        try:
            job = await self.queue.admit(audio, options, Priority(priority), max_audio_s)
        except Exception as exc:
            failed = failure(exc)
            if failed is None:
                raise
            yield failed
            return
        try:
            yield Started(job.duration_s, self.served_by)
            async for segment in job.stream():
                yield segment
            decode_s = time.monotonic() - (job.started_at or time.monotonic())
            yield Finished(job.language, decode_s)
        except Exception as exc:
            failed = failure(exc)
            if failed is None:
                raise
            yield failed
        finally:
            job.cancel()  # a no-op when finished; when the caller went away (Serve cancels us), stops the work

    def describe(self) -> Capabilities:
        return capabilities_of(self.queue.engine)

    def ongoing(self) -> tuple[int, int]:
        """(admitted, running) on this replica: what tests and operators read to see work stop."""
        return self.queue.depth, self.queue.running

    def check_health(self) -> None:
        dead = [t.name for t in self.queue._threads if not t.is_alive()]
        if dead:
            raise RuntimeError(f"worker thread(s) stopped: {', '.join(dead)}")

    def __del__(self) -> None:
        queue = getattr(self, "queue", None)
        if queue is not None:
            queue.stop(timeout_s=1.0)
            queue.engine.close()


@serve.ingress()
class Ingress:
    """The HTTP side: our FastAPI app, built inside the replica once the model handles exist."""

    def __init__(
        self,
        settings: Settings,
        models: dict[str, DeploymentHandle],
        slots: dict[str, int],
        static: dict[str, Capabilities | None],
    ) -> None:
        configure_logging(settings.log_level, settings.log_format)
        self.settings = settings
        self.models = models
        self.slots = slots
        self.static = static

    async def __serve_build_asgi_app__(self):
        specs = model_specs(self.settings)
        default, aliases = model_roles(self.settings, specs)
        queues = {}
        for spec in specs:
            handle = self.models[spec.name]
            known = self.static[spec.name]
            if known is None:  # a local directory: only its engine knows, e.g., whether it is English-only
                known = await handle.describe.remote()
            queues[spec.name] = RemoteModelQueue(
                spec.name,
                known,
                handle.options(stream=True, method_name="transcribe"),
                self.slots[spec.name],
            )
        served = ServedModels(queues, default, int(time.time()), {}, aliases)
        # Serve's proxy returns X-Request-ID itself (the client's, or one it made and handed to us). Cluster mode
        # serves no Wyoming: Serve's proxy speaks HTTP only, and every ingress replica would bind the same port.
        return create_app(replace(self.settings, wyoming_port=0), served, echo_request_id=False)


def _serve_options(name: str, d: Deployment, settings: Settings, options: ClusterOptions) -> dict:
    ongoing = ONGOING_PER_WORKER * settings.workers
    slots = d.slots(settings.workers)
    opts: dict = {
        "name": f"Model:{name}",
        "ray_actor_options": {"num_cpus": d.num_cpus, "num_gpus": d.num_gpus},
        "max_ongoing_requests": ongoing,
        # --max-queue requests may wait per ingress beyond what the replicas run. Serve counts requests that are
        # still being assigned as waiting, so a bound of exactly --max-queue would refuse a burst that fits.
        "max_queued_requests": settings.max_queue + slots * ONGOING_PER_WORKER,
        "graceful_shutdown_timeout_s": options.drain_s,
        "graceful_shutdown_wait_loop_s": 1.0,
        "health_check_period_s": 10.0,
        # Missing weights or a wrong flag: fail the deploy with our message now, not after 20 attempts.
        "max_constructor_retry_count": 1,
    }
    if d.max_replicas_per_node:
        opts["max_replicas_per_node"] = d.max_replicas_per_node
    if d.autoscale:
        low, high = d.autoscale
        opts["autoscaling_config"] = {
            "min_replicas": low,
            "initial_replicas": max(low, 1),
            "max_replicas": high,
            "target_ongoing_requests": d.target_ongoing or settings.workers,
            "upscale_delay_s": d.upscale_delay_s,
            "downscale_delay_s": d.downscale_delay_s,
        }
    else:
        opts["num_replicas"] = d.replicas
    return opts


def application(settings: Settings, options: ClusterOptions) -> serve.Application:
    specs = model_specs(settings)
    model_roles(settings, specs)  # a --default-model etc. that is not served fails here, before any replica
    handles = {}
    slots = {}
    static: dict[str, Capabilities | None] = {}
    for spec in specs:
        d = options.deployment(spec.name)
        model = serve.deployment(ModelServer).options(**_serve_options(spec.name, d, settings, options))
        handles[spec.name] = model.bind(spec.name, settings)
        slots[spec.name] = d.slots(settings.workers)
        static[spec.name] = None if spec.is_local else capabilities(spec)
    ingress = serve.deployment(Ingress).options(
        name="Ingress",
        num_replicas=options.ingress_replicas,
        ray_actor_options={"num_cpus": options.ingress_cpus},
        # The ingress holds every request and stream: it never refuses; the model deployments bound the work.
        max_ongoing_requests=100_000,
        graceful_shutdown_timeout_s=options.drain_s,
        graceful_shutdown_wait_loop_s=1.0,
    )
    return ingress.bind(settings, handles, slots, static)


def build(args: Mapping[str, object] | None = None) -> serve.Application:
    """The application builder for `serve run` / `serve deploy`: `args` are our flags by name
    (`{"model": ["whisper-base"], "replicas": 2, "num_cpus": 2}`); unset ones come from OPEN_STT_* variables."""
    settings, options, _ = parse(argv_of(args or {}))
    return application(settings, options)
