"""Command-line flags and environment variables → Settings → a running server."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from open_stt_server.settings import DEFAULT_MODEL, Settings

TRUE_WORDS = {"true", "1", "yes", "on", "y", "t"}
FALSE_WORDS = {"false", "0", "no", "off", "n", "f", ""}
LOG_LEVELS = {
    "trace": "debug",
    "debug": "debug",
    "info": "info",
    "warn": "warning",
    "warning": "warning",
    "error": "error",
    "critical": "critical",
    "off": "critical",
}


def parse_bool(value: str) -> bool:
    word = str(value).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise argparse.ArgumentTypeError(f"expected true/false/1/0/yes/no, got '{value}'")


def parse_log_level(value: str) -> str:
    """Accepts plain levels and RUST_LOG-style directives ("info", "open_stt=debug,hyper=warn")."""
    chosen = None
    for directive in str(value).split(","):
        level = directive.split("=")[-1].strip().lower()
        if level in LOG_LEVELS:
            chosen = LOG_LEVELS[level]
            if "=" not in directive:
                break
    if chosen is None:
        raise argparse.ArgumentTypeError(f"unknown log level '{value}' (use debug, info, warn, error)")
    return chosen


def split_models(values: Sequence[str]) -> tuple[str, ...]:
    names = [part.strip() for value in values for part in value.split(",")]
    return tuple(dict.fromkeys(n for n in names if n))


def _env(name: str, *fallbacks: str) -> str | None:
    for key in (name, *fallbacks):
        if os.environ.get(key) is not None:
            return os.environ[key]
    return None


HELP_EPILOG = """\
Every flag can also be set by its environment variable; a flag given on the command line wins.
Booleans accept true/false/1/0/yes/no. Models are catalog names (whisper-tiny ... whisper-large-v3-turbo,
the .en variants, whisper-distil-*, voxtral-mini, voxtral-small), aliases (base, turbo, ...), Hugging Face
repo ids of CTranslate2 Whisper conversions, or local directories. Weights live in the Hugging Face cache
(HF_HOME, HF_HUB_CACHE, HF_TOKEN and HF_HUB_OFFLINE are respected).

Cluster mode on Ray Serve takes the same flags plus its own: open-stt-server ray --help
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="open-stt-server",
        description="Self-hosted speech-to-text server speaking OpenAI's audio API.",
        epilog=HELP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    boolean = {"nargs": "?", "const": True, "type": parse_bool, "metavar": "BOOL"}
    p.add_argument("--host", help="address to bind [OPEN_STT_HOST] (default 0.0.0.0)")
    p.add_argument("--port", type=int, help="port to listen on [OPEN_STT_PORT] (default 8080)")
    p.add_argument(
        "--model",
        action="append",
        metavar="NAME",
        help="model to load; repeatable, commas allowed [OPEN_STT_MODELS] (default whisper-base)",
    )
    p.add_argument(
        "--default-model",
        help="model used when a request names none [OPEN_STT_DEFAULT_MODEL] (default: the first model)",
    )
    p.add_argument("--force-cpu", **boolean, help="never use CUDA [OPEN_STT_FORCE_CPU] (default false)")
    p.add_argument(
        "--download",
        **boolean,
        help="fetch missing weights from the hub at start-up [OPEN_STT_DOWNLOAD] (default false)",
    )
    p.add_argument(
        "--api-key", help="require 'Authorization: Bearer KEY' on /v1/* [OPEN_STT_API_KEY] (empty = no key)"
    )
    p.add_argument(
        "--compute-type",
        help="CTranslate2 compute type [OPEN_STT_COMPUTE_TYPE] (default int8 on CPU, float16 on CUDA)",
    )
    p.add_argument(
        "--log-level",
        type=parse_log_level,
        help="debug, info, warn, error [RUST_LOG or OPEN_STT_LOG_LEVEL] (default info)",
    )
    p.add_argument(
        "--log-format",
        choices=["text", "json"],
        help="access/app log format [OPEN_STT_LOG_FORMAT] (default text)",
    )
    p.add_argument(
        "--max-upload-mb", type=float, help="largest upload accepted [OPEN_STT_MAX_UPLOAD_MB] (default 25)"
    )
    p.add_argument(
        "--max-audio-seconds",
        type=float,
        help="longest decoded audio accepted [OPEN_STT_MAX_AUDIO_SECONDS] (default 10800)",
    )
    p.add_argument("--workers", type=int, help="concurrent decodes per model [OPEN_STT_WORKERS] (default 2)")
    p.add_argument(
        "--cpu-threads",
        type=int,
        help="CPU threads per decode, 0 = cores / workers [OPEN_STT_CPU_THREADS] (default 0)",
    )
    p.add_argument(
        "--max-queue",
        type=int,
        help="requests admitted per model before 429 [OPEN_STT_MAX_QUEUE] (default 64)",
    )
    p.add_argument(
        "--request-timeout",
        type=float,
        help="seconds before a request is answered 504, 0 = none [OPEN_STT_REQUEST_TIMEOUT] (default 0)",
    )
    p.add_argument(
        "--vad-filter",
        **boolean,
        help="server default for voice-activity detection [OPEN_STT_VAD_FILTER] (default false)",
    )
    p.add_argument(
        "--batched-long-audio",
        **boolean,
        help="transcribe long files with the batched "
        "pipeline over VAD chunks [OPEN_STT_BATCHED_LONG_AUDIO] (default true)",
    )
    p.add_argument(
        "--cors-origins",
        help="comma-separated origins allowed by CORS, '*' for any [OPEN_STT_CORS_ORIGINS] (default none)",
    )
    p.add_argument(
        "--playground",
        **boolean,
        help="serve the browser playground at / [OPEN_STT_PLAYGROUND] (default true)",
    )
    p.add_argument(
        "--diarizer",
        choices=["auto", "ge2e", "pyannote", "off"],
        help="speaker labels for response_format=diarized_json: auto uses the GE2E voice encoder when its "
        "weights are installed, ge2e requires them, pyannote runs pyannote.audio's pipeline from the Hugging "
        "Face cache [OPEN_STT_DIARIZER] (default auto)",
    )
    p.add_argument(
        "--diarizer-weights",
        metavar="FILE",
        help="a GE2E voice-encoder checkpoint instead of the one in Resemblyzer's wheel; with --diarizer "
        "pyannote, the pipeline's repo id or directory (default pyannote/speaker-diarization-3.1) "
        "[OPEN_STT_DIARIZER_WEIGHTS]",
    )
    p.add_argument(
        "--diarize-model",
        metavar="NAME",
        help="loaded model that serves requests for gpt-4o-transcribe-diarize [OPEN_STT_DIARIZE_MODEL] "
        "(default: the default model)",
    )
    p.add_argument(
        "--realtime-model",
        metavar="NAME",
        help="loaded model that serves OpenAI's transcription names (gpt-4o-transcribe, gpt-realtime-whisper, ...) "
        "[OPEN_STT_REALTIME_MODEL] (default: the default model)",
    )
    p.add_argument(
        "--realtime-partials",
        **boolean,
        help="live partial words in every realtime session [OPEN_STT_REALTIME_PARTIALS] (default false)",
    )
    p.add_argument(
        "--realtime-max-sessions",
        type=int,
        help="concurrent realtime sessions per model, beyond → 429 [OPEN_STT_REALTIME_MAX_SESSIONS] (default 16)",
    )
    p.add_argument(
        "--realtime-max-session-seconds",
        type=float,
        help="longest realtime session [OPEN_STT_REALTIME_MAX_SESSION_SECONDS] (default 3600)",
    )
    p.add_argument(
        "--realtime-idle-timeout",
        type=float,
        help="seconds without a client event before a session is closed [OPEN_STT_REALTIME_IDLE_TIMEOUT] "
        "(default 300)",
    )
    p.add_argument(
        "--realtime-max-buffer-seconds",
        type=float,
        help="uncommitted audio a session holds before it is committed [OPEN_STT_REALTIME_MAX_BUFFER_SECONDS] "
        "(default 600)",
    )
    p.add_argument(
        "--realtime-max-message-mb",
        type=float,
        help="largest WebSocket message [OPEN_STT_REALTIME_MAX_MESSAGE_MB] (default 21)",
    )
    p.add_argument(
        "--wyoming-port",
        type=int,
        help="also serve Home Assistant's Wyoming protocol on this TCP port (custom: 10300); 0 = off "
        "[OPEN_STT_WYOMING_PORT] (default 0)",
    )
    p.add_argument(
        "--wyoming-host",
        help="address the Wyoming port binds; it has no authentication [OPEN_STT_WYOMING_HOST] (default: --host)",
    )
    p.add_argument(
        "--wyoming-endpointing",
        **boolean,
        help="the server ends a Wyoming utterance when the speaker stops (requires_external_vad false) "
        "[OPEN_STT_WYOMING_ENDPOINTING] (default false)",
    )
    p.add_argument(
        "--wyoming-partials",
        **boolean,
        help="stream words (transcript-chunk) while a Wyoming speaker talks [OPEN_STT_WYOMING_PARTIALS] "
        "(default true)",
    )
    p.add_argument(
        "--wyoming-idle-timeout",
        type=float,
        help="seconds without an event before a Wyoming connection is closed [OPEN_STT_WYOMING_IDLE_TIMEOUT] "
        "(default 60)",
    )
    p.add_argument(
        "--ssl-certfile", help="serve HTTPS/WSS with this certificate (PEM) [OPEN_STT_SSL_CERTFILE]"
    )
    p.add_argument("--ssl-keyfile", help="the certificate's private key (PEM) [OPEN_STT_SSL_KEYFILE]")
    return p


class ConfigError(ValueError):
    pass


def settings_from(argv: Sequence[str] | None = None) -> Settings:
    return settings_from_args(build_parser().parse_args(argv))


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from parsed flags, each missing one from its environment variable, then validated."""
    values: dict[str, object] = {}

    def pick(flag_value, env_names: tuple[str, ...], convert, key: str) -> None:
        if flag_value is not None:
            values[key] = flag_value
            return
        raw = _env(*env_names)
        if raw is None:
            return
        try:
            values[key] = convert(raw)
        except (ValueError, argparse.ArgumentTypeError) as exc:
            raise ConfigError(f"{env_names[0]}: {exc}") from None

    pick(args.host, ("OPEN_STT_HOST",), str, "host")
    pick(args.port, ("OPEN_STT_PORT",), int, "port")
    models = split_models(args.model) if args.model else split_models([_env("OPEN_STT_MODELS") or ""])
    values["models"] = models or (DEFAULT_MODEL,)
    pick(args.default_model, ("OPEN_STT_DEFAULT_MODEL",), str, "default_model")
    pick(args.force_cpu, ("OPEN_STT_FORCE_CPU",), parse_bool, "force_cpu")
    pick(args.download, ("OPEN_STT_DOWNLOAD",), parse_bool, "download")
    pick(args.api_key, ("OPEN_STT_API_KEY",), str, "api_key")
    pick(args.compute_type, ("OPEN_STT_COMPUTE_TYPE",), str, "compute_type")
    pick(args.log_level, ("RUST_LOG", "OPEN_STT_LOG_LEVEL"), parse_log_level, "log_level")
    pick(args.log_format, ("OPEN_STT_LOG_FORMAT",), str, "log_format")
    pick(args.max_upload_mb, ("OPEN_STT_MAX_UPLOAD_MB",), float, "max_upload_mb")
    pick(args.max_audio_seconds, ("OPEN_STT_MAX_AUDIO_SECONDS",), float, "max_audio_seconds")
    pick(args.workers, ("OPEN_STT_WORKERS",), int, "workers")
    pick(args.cpu_threads, ("OPEN_STT_CPU_THREADS",), int, "cpu_threads")
    pick(args.max_queue, ("OPEN_STT_MAX_QUEUE",), int, "max_queue")
    pick(args.request_timeout, ("OPEN_STT_REQUEST_TIMEOUT",), float, "request_timeout_s")
    pick(args.vad_filter, ("OPEN_STT_VAD_FILTER",), parse_bool, "vad_filter")
    pick(args.batched_long_audio, ("OPEN_STT_BATCHED_LONG_AUDIO",), parse_bool, "batched_long_audio")
    pick(
        args.cors_origins,
        ("OPEN_STT_CORS_ORIGINS",),
        lambda s: tuple(o.strip() for o in s.split(",") if o.strip()),
        "cors_origins",
    )
    pick(args.playground, ("OPEN_STT_PLAYGROUND",), parse_bool, "playground")
    pick(args.diarizer, ("OPEN_STT_DIARIZER",), str, "diarizer")
    pick(args.diarizer_weights, ("OPEN_STT_DIARIZER_WEIGHTS",), str, "diarizer_weights")
    pick(args.diarize_model, ("OPEN_STT_DIARIZE_MODEL",), str, "diarize_model")
    pick(args.realtime_model, ("OPEN_STT_REALTIME_MODEL",), str, "realtime_model")
    pick(args.realtime_partials, ("OPEN_STT_REALTIME_PARTIALS",), parse_bool, "realtime_partials")
    pick(args.realtime_max_sessions, ("OPEN_STT_REALTIME_MAX_SESSIONS",), int, "realtime_max_sessions")
    pick(args.realtime_max_session_seconds, ("OPEN_STT_REALTIME_MAX_SESSION_SECONDS",), float,
         "realtime_max_session_s")  # fmt: skip
    pick(args.realtime_idle_timeout, ("OPEN_STT_REALTIME_IDLE_TIMEOUT",), float, "realtime_idle_timeout_s")
    pick(args.realtime_max_buffer_seconds, ("OPEN_STT_REALTIME_MAX_BUFFER_SECONDS",), float,
         "realtime_max_buffer_s")  # fmt: skip
    pick(
        args.realtime_max_message_mb, ("OPEN_STT_REALTIME_MAX_MESSAGE_MB",), float, "realtime_max_message_mb"
    )
    pick(args.wyoming_port, ("OPEN_STT_WYOMING_PORT",), int, "wyoming_port")
    pick(args.wyoming_host, ("OPEN_STT_WYOMING_HOST",), str, "wyoming_host")
    pick(args.wyoming_endpointing, ("OPEN_STT_WYOMING_ENDPOINTING",), parse_bool, "wyoming_endpointing")
    pick(args.wyoming_partials, ("OPEN_STT_WYOMING_PARTIALS",), parse_bool, "wyoming_partials")
    pick(args.wyoming_idle_timeout, ("OPEN_STT_WYOMING_IDLE_TIMEOUT",), float, "wyoming_idle_timeout_s")
    pick(args.ssl_certfile, ("OPEN_STT_SSL_CERTFILE",), str, "ssl_certfile")
    pick(args.ssl_keyfile, ("OPEN_STT_SSL_KEYFILE",), str, "ssl_keyfile")
    if isinstance(values.get("cors_origins"), str):
        values["cors_origins"] = tuple(o.strip() for o in str(values["cors_origins"]).split(",") if o.strip())
    if values.get("api_key") == "":
        values["api_key"] = None
    for optional in ("compute_type", "diarizer_weights", "diarize_model", "realtime_model", "ssl_certfile",
                     "ssl_keyfile", "wyoming_host"):  # fmt: skip
        if values.get(optional) == "":
            values[optional] = None
    settings = Settings(**values)  # type: ignore[arg-type]
    _validate(settings)
    return settings


def _validate(s: Settings) -> None:
    if not 0 < s.port < 65536:
        raise ConfigError(f"--port must be between 1 and 65535, got {s.port}")
    for name, value in (
        ("--max-upload-mb", s.max_upload_mb),
        ("--max-audio-seconds", s.max_audio_seconds),
        ("--workers", s.workers),
        ("--max-queue", s.max_queue),
        ("--realtime-max-sessions", s.realtime_max_sessions),
        ("--realtime-max-session-seconds", s.realtime_max_session_s),
        ("--realtime-idle-timeout", s.realtime_idle_timeout_s),
        ("--realtime-max-buffer-seconds", s.realtime_max_buffer_s),
        ("--realtime-max-message-mb", s.realtime_max_message_mb),
        ("--wyoming-idle-timeout", s.wyoming_idle_timeout_s),
    ):
        if value <= 0:
            raise ConfigError(f"{name} must be positive, got {value}")
    from open_stt_server.diarization import DIARIZERS

    if s.diarizer not in DIARIZERS:
        raise ConfigError(f"--diarizer must be one of {', '.join(DIARIZERS)}, got '{s.diarizer}'")
    if bool(s.ssl_certfile) != bool(s.ssl_keyfile):
        raise ConfigError("--ssl-certfile and --ssl-keyfile go together: give both or neither")
    if not 0 <= s.wyoming_port < 65536:
        raise ConfigError(f"--wyoming-port must be between 0 (off) and 65535, got {s.wyoming_port}")
    if s.cpu_threads < 0 or s.request_timeout_s < 0:
        raise ConfigError("--cpu-threads and --request-timeout must not be negative")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["ray"]:
        from open_stt_server.cluster.command import main as cluster_main

        return cluster_main(argv[1:])
    try:
        settings = settings_from(argv)
    except ConfigError as exc:
        print(f"open-stt-server: configuration error: {exc}", file=sys.stderr)
        return 2
    from open_stt_server.api.app import StartupError, serve
    from open_stt_server.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    try:
        serve(settings)
    except StartupError as exc:
        logging.getLogger("open_stt_server").error("%s", exc)
        print(f"open-stt-server: {exc}", file=sys.stderr)
        return 1
    return 0
