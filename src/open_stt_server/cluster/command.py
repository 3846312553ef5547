"""`open-stt-server ray [flags]`: deploy the server on a running Ray cluster and serve until stopped, or print
the equivalent Serve config file (`--print-config`) for `serve deploy`."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence

from open_stt_server import catalog
from open_stt_server.cluster import INSTALL_HINT, ray_installed
from open_stt_server.flags import ConfigError

log = logging.getLogger("open_stt_server")


def config_yaml(argv: Sequence[str], host: str, port: int, app_name: str, proxy_location: str) -> str:
    """A Serve config file that deploys the same application (`serve deploy FILE`); secrets stay out of it."""
    import json

    skipped = {"print_config", "address", "api_key", "proxy_location", "host", "port", "app_name"}
    args: dict[str, list[str]] = {}
    key: str | None = None
    tokens = [part for token in argv for part in (token.split("=", 1) if token.startswith("--") else [token])]
    for token in tokens:
        if token.startswith("--"):
            key = token[2:].replace("-", "_")
            if key in skipped:
                key = None  # said elsewhere in the file (http_options, the name), or a secret
            else:
                args.setdefault(key, [])
        elif key is not None:
            args[key].append(token)
    lines = [
        "# Deploy with: serve deploy serve.yaml   (set OPEN_STT_API_KEY in the environment of the cluster's",
        "# processes instead of writing the key here)",
        f"proxy_location: {proxy_location}",
        "http_options:",
        f"  host: {json.dumps(host)}",
        f"  port: {port}",
        "applications:",
        f"  - name: {json.dumps(app_name)}",
        "    route_prefix: /",
        "    import_path: open_stt_server.cluster.app:build",
        "    args:",
    ]
    for name, values in args.items():
        value = values if len(values) != 1 else values[0]
        lines.append(f"      {name}: {json.dumps(value if values else True)}")
    if not args:
        lines[-1] = "    args: {}"
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str]) -> int:
    from open_stt_server.cluster.options import parse

    try:
        settings, options, args = parse(argv)
    except ConfigError as exc:
        print(f"open-stt-server ray: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        sys.stdout.write(
            config_yaml(argv, settings.host, settings.port, options.app_name, options.proxy_location)
        )
        return 0
    if not ray_installed():
        print(
            f"open-stt-server ray: cluster mode needs Ray Serve, which is not installed. Install it with: "
            f"{INSTALL_HINT}",
            file=sys.stderr,
        )
        return 2
    from open_stt_server.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    return _run(settings, options)


def _run(settings, options) -> int:
    import ray
    from ray import serve

    from open_stt_server.api.app import StartupError
    from open_stt_server.cluster.app import application

    try:
        app = application(settings, options)
    except StartupError as exc:
        print(f"open-stt-server ray: {exc}", file=sys.stderr)
        return 1
    ray.init(address=options.address, logging_level=logging.WARNING, log_to_driver=False)
    http = {"host": settings.host, "port": settings.port}
    if settings.ssl_certfile:
        http |= {"ssl_certfile": settings.ssl_certfile, "ssl_keyfile": settings.ssl_keyfile}
    _warn_if_it_cannot_fit(settings, options, ray.cluster_resources())
    serve.start(http_options=http, proxy_location=options.proxy_location)
    started = time.monotonic()
    try:
        serve.run(app, name=options.app_name, route_prefix="/", blocking=False)
    except (
        Exception
    ) as exc:  # a replica that cannot start: our StartupError's text is in its deployment's status
        print(f"open-stt-server ray: the deployment failed: {_reason(_status_messages(options.app_name), exc)}",
              file=sys.stderr)  # fmt: skip
        _delete(options.app_name)
        return 1
    log.info(
        "open-stt-server on Ray Serve: application %s ready in %.1fs on %s://%s:%d (models: %s)",
        options.app_name,
        time.monotonic() - started,
        "https" if settings.ssl_certfile else "http",
        settings.host,
        settings.port,
        ", ".join(settings.models),
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    log.info("stopping: deleting application %s (replicas finish what they hold)", options.app_name)
    _delete(options.app_name)
    return 0


def needed_resources(settings, options) -> dict[str, float]:
    """CPUs and GPUs the application asks for at its smallest size."""
    need = {"CPU": options.ingress_cpus * options.ingress_replicas, "GPU": 0.0}
    for model in settings.models:
        d = options.deployment(catalog.lookup(model).name)
        count = max(1, d.autoscale[0]) if d.autoscale else d.replicas
        need["CPU"] += d.num_cpus * count
        need["GPU"] += d.num_gpus * count
    return need


def _warn_if_it_cannot_fit(settings, options, have: dict) -> None:
    """Serve waits for ever for resources that never come; say so up front."""
    for kind, amount in needed_resources(settings, options).items():
        if amount > have.get(kind, 0.0) + 1e-9:
            log.warning(
                "the application needs %.2f %s(s) but the cluster has %.2f: replicas will wait until nodes join "
                "(lower --num-cpus/--num-gpus or --replicas, or add nodes)",
                amount,
                kind,
                have.get(kind, 0.0),
            )


def _delete(name: str) -> None:
    from ray import serve

    try:
        serve.delete(name)
    except Exception:
        log.exception("could not delete application %s", name)


def _status_messages(name: str) -> str:
    from ray import serve

    try:
        deployments = serve.status().applications[name].deployments.values()
    except Exception:
        return ""
    return "\n".join(d.message for d in deployments if d.message)


def _reason(messages: str, exc: BaseException) -> str:
    """The line of our StartupError in a replica's traceback (it says what to do), else Serve's own words."""
    for line in f"{messages}\n{exc}".splitlines():
        if "StartupError:" in line:
            return line.split("StartupError:", 1)[1].strip()
    text = str(exc).strip()
    return text.splitlines()[-1] if text else type(exc).__name__
