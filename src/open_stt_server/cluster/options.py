"""Cluster-mode flags: the single box's flags plus where to run and how many replicas (no Ray import here)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from open_stt_server.flags import ConfigError, build_parser, settings_from_args
from open_stt_server.settings import Settings

DEFAULT_APP = "open-stt"
DRAIN_S = 900.0  # how long a replica that is scaled down or replaced may finish what it holds


@dataclass(frozen=True)
class Deployment:
    """How one model runs on the cluster."""

    replicas: int = 1
    autoscale: tuple[int, int] | None = None  # min, max replicas; None = a fixed count
    target_ongoing: float | None = None  # requests per replica the autoscaler aims at; None = --workers
    upscale_delay_s: float = 30.0
    downscale_delay_s: float = 600.0
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    max_replicas_per_node: int | None = None

    def slots(self, workers: int) -> int:
        """Decodes the deployment runs at once at its smallest size."""
        return (self.autoscale[0] if self.autoscale else self.replicas) * workers or workers


@dataclass(frozen=True)
class ClusterOptions:
    address: str = "auto"
    app_name: str = DEFAULT_APP
    proxy_location: str = "EveryNode"
    ingress_replicas: int = 1
    ingress_cpus: float = 0.1
    drain_s: float = DRAIN_S
    default: Deployment = field(default_factory=Deployment)
    per_model: Mapping[str, Deployment] = field(default_factory=dict)

    def deployment(self, model: str) -> Deployment:
        return self.per_model.get(model, self.default)


def cluster_parser() -> argparse.ArgumentParser:
    p = build_parser()
    p.prog = "open-stt-server ray"
    p.description = (
        "Run open-stt-server on a Ray cluster (Ray Serve): the same API and flags as the single box, an ingress "
        "deployment and one deployment per model."
    )
    g = p.add_argument_group("cluster")
    g.add_argument("--address", help="Ray cluster to join [RAY_ADDRESS] (default auto: the local cluster)")
    g.add_argument("--replicas", type=int, help="replicas per model [OPEN_STT_REPLICAS] (default 1)")
    g.add_argument(
        "--autoscale",
        metavar="MIN:MAX",
        help="autoscale each model between MIN and MAX replicas instead of a fixed count [OPEN_STT_AUTOSCALE]",
    )
    g.add_argument(
        "--target-ongoing",
        type=float,
        help="requests per replica the autoscaler aims at [OPEN_STT_TARGET_ONGOING] (default --workers)",
    )
    g.add_argument("--upscale-delay", type=float, help="seconds of load before adding a replica (default 30)")
    g.add_argument("--downscale-delay", type=float, help="seconds idle before removing one (default 600)")
    g.add_argument("--num-cpus", type=float, help="CPUs per model replica [OPEN_STT_NUM_CPUS] (default 1)")
    g.add_argument(
        "--num-gpus",
        type=float,
        help="GPUs per model replica, fractions allowed [OPEN_STT_NUM_GPUS] (default 0)",
    )
    g.add_argument("--max-replicas-per-node", type=int, help="spread a model's replicas over nodes")
    g.add_argument(
        "--deployment",
        action="append",
        metavar="MODEL:KEY=VALUE,...",
        help="settings for one model: replicas, autoscale (MIN-MAX), target_ongoing, upscale_delay, "
        "downscale_delay, num_cpus, num_gpus, max_replicas_per_node; repeatable",
    )
    g.add_argument("--ingress-replicas", type=int, help="replicas of the HTTP ingress (default 1)")
    g.add_argument("--ingress-cpus", type=float, help="CPUs reserved per ingress replica (default 0.1)")
    g.add_argument(
        "--drain-seconds",
        type=float,
        help=f"how long a replica being removed finishes its requests [OPEN_STT_DRAIN_SECONDS] (default {DRAIN_S:g})",
    )
    g.add_argument("--app-name", help=f"the Serve application's name (default {DEFAULT_APP})")
    g.add_argument(
        "--proxy-location",
        choices=["EveryNode", "HeadOnly"],
        help="where Serve runs HTTP proxies, when it starts Serve on the cluster (default EveryNode)",
    )
    g.add_argument(
        "--print-config", action="store_true", help="print the equivalent Serve config file (YAML) and exit"
    )
    return p


def _number(raw: str | None, convert, flag: str):
    if raw is None:
        return None
    try:
        return convert(raw)
    except ValueError:
        raise ConfigError(f"{flag}: expected a number, got '{raw}'") from None


def _range(raw: str, flag: str) -> tuple[int, int]:
    low, sep, high = raw.replace("-", ":").partition(":")
    try:
        pair = (int(low), int(high)) if sep else (int(low), int(low))
    except ValueError:
        raise ConfigError(f"{flag}: expected MIN:MAX replicas, got '{raw}'") from None
    if not 0 <= pair[0] <= pair[1] or pair[1] < 1:
        raise ConfigError(f"{flag}: need 0 <= MIN <= MAX and MAX >= 1, got '{raw}'")
    return pair


_DEPLOYMENT_KEYS = {
    "replicas": ("replicas", int),
    "autoscale": ("autoscale", None),
    "target_ongoing": ("target_ongoing", float),
    "upscale_delay": ("upscale_delay_s", float),
    "downscale_delay": ("downscale_delay_s", float),
    "num_cpus": ("num_cpus", float),
    "num_gpus": ("num_gpus", float),
    "max_replicas_per_node": ("max_replicas_per_node", int),
}


def _override(base: Deployment, text: str) -> tuple[str, Deployment]:
    model, sep, pairs = text.partition(":")
    if not sep or not model.strip():
        raise ConfigError(f"--deployment: expected MODEL:KEY=VALUE,..., got '{text}'")
    changes: dict[str, object] = {}
    for pair in filter(None, (p.strip() for p in pairs.split(","))):
        key, eq, value = pair.partition("=")
        if not eq or key not in _DEPLOYMENT_KEYS:
            raise ConfigError(
                f"--deployment {model}: unknown setting '{pair}' (use {', '.join(_DEPLOYMENT_KEYS)})"
            )
        name, convert = _DEPLOYMENT_KEYS[key]
        changes[name] = (
            _range(value, f"--deployment {model}") if convert is None else _number(value, convert, key)
        )
    return model.strip(), replace(base, **changes)


def options_from_args(args: argparse.Namespace, settings: Settings) -> ClusterOptions:
    env = os.environ.get
    replicas = (
        args.replicas if args.replicas is not None else _number(env("OPEN_STT_REPLICAS"), int, "replicas")
    )
    autoscale = args.autoscale or env("OPEN_STT_AUTOSCALE")
    target = args.target_ongoing
    if target is None:
        target = _number(env("OPEN_STT_TARGET_ONGOING"), float, "OPEN_STT_TARGET_ONGOING")
    num_cpus = (
        args.num_cpus if args.num_cpus is not None else _number(env("OPEN_STT_NUM_CPUS"), float, "num_cpus")
    )
    num_gpus = (
        args.num_gpus if args.num_gpus is not None else _number(env("OPEN_STT_NUM_GPUS"), float, "num_gpus")
    )
    drain = args.drain_seconds
    if drain is None:
        drain = _number(env("OPEN_STT_DRAIN_SECONDS"), float, "OPEN_STT_DRAIN_SECONDS")
    default = Deployment(
        replicas=replicas if replicas is not None else 1,
        autoscale=_range(autoscale, "--autoscale") if autoscale else None,
        target_ongoing=target,
        upscale_delay_s=args.upscale_delay if args.upscale_delay is not None else 30.0,
        downscale_delay_s=args.downscale_delay if args.downscale_delay is not None else 600.0,
        num_cpus=num_cpus if num_cpus is not None else 1.0,
        num_gpus=num_gpus if num_gpus is not None else 0.0,
        max_replicas_per_node=args.max_replicas_per_node,
    )
    per_model: dict[str, Deployment] = {}
    from open_stt_server import catalog

    for text in args.deployment or ():
        model, deployment = _override(default, text)
        try:
            name = catalog.lookup(model).name
        except catalog.UnknownModel as exc:
            raise ConfigError(f"--deployment: {exc}") from None
        if name not in {catalog.lookup(m).name for m in settings.models}:
            raise ConfigError(f"--deployment {model}: not one of the models served (add it with --model)")
        per_model[name] = deployment
    options = ClusterOptions(
        address=args.address or env("RAY_ADDRESS") or "auto",
        app_name=args.app_name or DEFAULT_APP,
        proxy_location=args.proxy_location or "EveryNode",
        ingress_replicas=args.ingress_replicas or 1,
        ingress_cpus=args.ingress_cpus if args.ingress_cpus is not None else 0.1,
        drain_s=drain if drain is not None else DRAIN_S,
        default=default,
        per_model=per_model,
    )
    for name, d in [("default", default), *per_model.items()]:
        if (
            d.replicas < 1
            or d.num_cpus < 0
            or d.num_gpus < 0
            or (d.target_ongoing is not None and d.target_ongoing <= 0)
        ):
            raise ConfigError(f"{name}: replicas must be >= 1, CPUs/GPUs >= 0 and target_ongoing > 0")
    if options.drain_s <= 0 or options.ingress_replicas < 1:
        raise ConfigError("--drain-seconds and --ingress-replicas must be positive")
    return options


def parse(argv: Sequence[str]) -> tuple[Settings, ClusterOptions, argparse.Namespace]:
    args = cluster_parser().parse_args(argv)
    settings = settings_from_args(args)
    return settings, options_from_args(args, settings), args


def argv_of(config: Mapping[str, object]) -> list[str]:
    """Flags from a Serve config's `args` (keys are flag names; lists repeat the flag; true → a bare flag)."""
    argv: list[str] = []
    for key, value in config.items():
        flag = "--" + str(key).replace("_", "-")
        for item in value if isinstance(value, list | tuple) else [value]:
            if isinstance(item, bool):
                argv.extend([flag, str(item).lower()])
            else:
                argv.extend([flag, str(item)])
    return argv
