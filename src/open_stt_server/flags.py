"""Every flag once — name, environment variables, type, default and help — and how flags and the environment
become one validated Settings. The single box (`cli`) and the cluster (`cluster.options`) both read this table."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

from open_stt_server.diarization import DIARIZERS
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


class ConfigError(ValueError):
    pass


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


def split_origins(value: str) -> tuple[str, ...]:
    return tuple(o.strip() for o in value.split(",") if o.strip())


@dataclass(frozen=True)
class Flag:
    name: str  # --name
    setting: str  # the Settings field it sets
    convert: Callable[[str], object]
    help: str
    env: tuple[str, ...] = ()  # environment variables, first found wins; default: OPEN_STT_<NAME>
    default: str | None = None  # as help shows it; None: the Settings field's default
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    blank_is_none: bool = False  # an empty value means "not set" (None)

    @property
    def env_names(self) -> tuple[str, ...]:
        return self.env or ("OPEN_STT_" + self.name[2:].upper().replace("-", "_"),)


def _f(name: str, setting: str, convert: Callable[[str], object], help: str, **more) -> Flag:
    return Flag(name, setting, convert, help, **more)


FLAGS: tuple[Flag, ...] = (
    _f("--host", "host", str, "address to bind"),
    _f("--port", "port", int, "port to listen on"),
    _f(
        "--model",
        "models",
        str,
        "model to load; repeatable, commas allowed",
        env=("OPEN_STT_MODELS",),
        default=DEFAULT_MODEL,
        metavar="NAME",
    ),
    _f(
        "--default-model",
        "default_model",
        str,
        "model used when a request names none",
        default="the first model",
    ),
    _f("--force-cpu", "force_cpu", parse_bool, "never use CUDA"),
    _f("--download", "download", parse_bool, "fetch missing weights from the hub at start-up"),
    _f(
        "--api-key",
        "api_key",
        str,
        "require 'Authorization: Bearer KEY' on /v1/*",
        default="no key",
        blank_is_none=True,
    ),
    _f(
        "--compute-type",
        "compute_type",
        str,
        "CTranslate2 compute type",
        default="int8 on CPU, float16 on CUDA",
        blank_is_none=True,
    ),
    _f(
        "--log-level",
        "log_level",
        parse_log_level,
        "debug, info, warn, error",
        env=("RUST_LOG", "OPEN_STT_LOG_LEVEL"),
    ),
    _f("--log-format", "log_format", str, "access/app log format", choices=("text", "json")),
    _f("--max-upload-mb", "max_upload_mb", float, "largest upload accepted"),
    _f("--max-audio-seconds", "max_audio_seconds", float, "longest decoded audio accepted"),
    _f("--workers", "workers", int, "concurrent decodes per model"),
    _f("--cpu-threads", "cpu_threads", int, "CPU threads per decode, 0 = every core"),
    _f(
        "--cpu-decoders",
        "cpu_decoders",
        int,
        "Whisper on CPU: one-thread decoders beside the model (a second copy of the weights) that run every beam "
        "search and split long files' batches; 0 = none",
        default="one per core",
    ),
    _f("--max-queue", "max_queue", int, "requests admitted per model before 429"),
    _f("--request-timeout", "request_timeout_s", float, "seconds before a request is answered 504, 0 = none"),
    _f("--vad-filter", "vad_filter", parse_bool, "server default for voice-activity detection"),
    _f(
        "--batched-long-audio",
        "batched_long_audio",
        parse_bool,
        "transcribe long files with the batched pipeline over VAD chunks",
    ),
    _f(
        "--cors-origins",
        "cors_origins",
        split_origins,
        "comma-separated origins allowed by CORS, '*' for any",
        default="none",
    ),
    _f("--playground", "playground", parse_bool, "serve the browser playground at /"),
    _f(
        "--diarizer",
        "diarizer",
        str,
        "speaker labels for response_format=diarized_json: auto uses the GE2E voice encoder when its weights are "
        "installed, ge2e requires them, pyannote runs pyannote.audio's pipeline from the Hugging Face cache",
        choices=("auto", "ge2e", "pyannote", "off"),
    ),
    _f(
        "--diarizer-weights",
        "diarizer_weights",
        str,
        "a GE2E voice-encoder checkpoint instead of the one in Resemblyzer's wheel; with --diarizer pyannote, the "
        "pipeline's repo id or directory",
        default="pyannote/speaker-diarization-3.1 for pyannote",
        metavar="FILE",
        blank_is_none=True,
    ),
    _f(
        "--diarize-model",
        "diarize_model",
        str,
        "loaded model that serves requests for gpt-4o-transcribe-diarize",
        default="the default model",
        metavar="NAME",
        blank_is_none=True,
    ),
    _f(
        "--realtime-model",
        "realtime_model",
        str,
        "loaded model that serves OpenAI's transcription names (gpt-4o-transcribe, gpt-realtime-whisper, ...)",
        default="the default model",
        metavar="NAME",
        blank_is_none=True,
    ),
    _f(
        "--realtime-partials", "realtime_partials", parse_bool, "live partial words in every realtime session"
    ),
    _f(
        "--realtime-max-sessions",
        "realtime_max_sessions",
        int,
        "concurrent live streams per model (realtime sessions and Wyoming utterances), beyond → 429 / error",
    ),
    _f("--realtime-max-session-seconds", "realtime_max_session_s", float, "longest realtime session"),
    _f(
        "--realtime-idle-timeout",
        "realtime_idle_timeout_s",
        float,
        "seconds without a client event before a session is closed",
    ),
    _f(
        "--realtime-max-buffer-seconds",
        "realtime_max_buffer_s",
        float,
        "uncommitted audio a session (or a Wyoming utterance) holds before it is committed (or refused)",
    ),
    _f("--realtime-max-message-mb", "realtime_max_message_mb", float, "largest WebSocket message"),
    _f(
        "--wyoming-port",
        "wyoming_port",
        int,
        "also serve Home Assistant's Wyoming protocol on this TCP port (custom: 10300); 0 = off",
    ),
    _f(
        "--wyoming-host",
        "wyoming_host",
        str,
        "address the Wyoming port binds; it has no authentication",
        default="--host",
        blank_is_none=True,
    ),
    _f(
        "--wyoming-endpointing",
        "wyoming_endpointing",
        parse_bool,
        "the server ends a Wyoming utterance when the speaker stops (requires_external_vad false)",
    ),
    _f(
        "--wyoming-partials",
        "wyoming_partials",
        parse_bool,
        "stream words (transcript-chunk) while a speaker talks",
    ),
    _f(
        "--wyoming-zeroconf",
        "wyoming_zeroconf",
        str,
        "announce the Wyoming port on the local network (mDNS _wyoming._tcp) under this name, for Home "
        "Assistant's discovery; empty = off",
        default="off",
        blank_is_none=True,
    ),
    _f(
        "--wyoming-idle-timeout",
        "wyoming_idle_timeout_s",
        float,
        "seconds without an event before a Wyoming connection is closed",
    ),
    _f(
        "--ssl-certfile",
        "ssl_certfile",
        str,
        "serve HTTPS/WSS with this certificate (PEM)",
        default="none",
        blank_is_none=True,
    ),
    _f(
        "--ssl-keyfile",
        "ssl_keyfile",
        str,
        "the certificate's private key (PEM)",
        default="none",
        blank_is_none=True,
    ),
)

_DEFAULTS = {f.name: f.default for f in fields(Settings)}

HELP_EPILOG = """\
Every flag can also be set by its environment variable; a flag given on the command line wins.
Booleans accept true/false/1/0/yes/no. Models are catalog names (whisper-tiny ... whisper-large-v3-turbo,
the .en variants, whisper-distil-*, voxtral-mini, voxtral-small), aliases (base, turbo, ...), Hugging Face
repo ids of CTranslate2 Whisper conversions, or local directories. Weights live in the Hugging Face cache
(HF_HOME, HF_HUB_CACHE, HF_TOKEN and HF_HUB_OFFLINE are respected).

Cluster mode on Ray Serve takes the same flags plus its own: open-stt-server ray --help
"""


def _help(flag: Flag) -> str:
    default = flag.default
    if default is None:
        value = _DEFAULTS[flag.setting]
        default = (
            str(value).lower()
            if isinstance(value, bool)
            else f"{value:g}"
            if isinstance(value, float)
            else str(value)
        )
    return f"{flag.help} [{' or '.join(flag.env_names)}] (default {default})".replace("%", "%%")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="open-stt-server",
        description="Self-hosted speech-to-text server speaking OpenAI's audio API.",
        epilog=HELP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for flag in FLAGS:
        options: dict = {"help": _help(flag), "dest": flag.setting}
        if flag.convert is parse_bool:
            options |= {"nargs": "?", "const": True, "type": parse_bool, "metavar": "BOOL"}
        elif flag.setting == "models":
            options |= {"action": "append"}
        elif flag.convert is not split_origins:
            options["type"] = flag.convert
        if flag.choices:
            options["choices"] = flag.choices
        if not flag.choices and flag.convert is not parse_bool:
            options["metavar"] = flag.metavar or flag.name[2:].upper().replace("-", "_")
        parser.add_argument(flag.name, **options)
    return parser


def settings_from(argv: Sequence[str] | None = None) -> Settings:
    return settings_from_args(build_parser().parse_args(argv))


def _env(names: tuple[str, ...]) -> str | None:
    return next((os.environ[name] for name in names if os.environ.get(name) is not None), None)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from parsed flags, each missing one from its environment variable, then validated."""
    values: dict[str, object] = {}
    for flag in FLAGS:
        given = getattr(args, flag.setting)
        if flag.setting == "models":
            given = split_models(given) if given else split_models([_env(flag.env_names) or ""])
            values["models"] = given or (DEFAULT_MODEL,)
            continue
        if given is None:
            raw = _env(flag.env_names)
            if raw is None:
                continue
            try:
                given = flag.convert(raw)
            except (ValueError, argparse.ArgumentTypeError) as exc:
                raise ConfigError(f"{flag.env_names[0]}: {exc}") from None
        elif flag.convert is split_origins:
            given = split_origins(given)
        if flag.blank_is_none and given == "":
            given = None
        values[flag.setting] = given
    settings = Settings(**values)  # type: ignore[arg-type]
    validate(settings)
    return settings


def validate(s: Settings) -> None:
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
    if s.diarizer not in DIARIZERS:
        raise ConfigError(f"--diarizer must be one of {', '.join(DIARIZERS)}, got '{s.diarizer}'")
    if bool(s.ssl_certfile) != bool(s.ssl_keyfile):
        raise ConfigError("--ssl-certfile and --ssl-keyfile go together: give both or neither")
    if not 0 <= s.wyoming_port < 65536:
        raise ConfigError(f"--wyoming-port must be between 0 (off) and 65535, got {s.wyoming_port}")
    if s.cpu_threads < 0 or s.request_timeout_s < 0 or (s.cpu_decoders or 0) < 0:
        raise ConfigError("--cpu-threads, --cpu-decoders and --request-timeout must not be negative")
