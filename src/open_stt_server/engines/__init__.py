"""Engines: which runtime runs a catalog entry, checking its packages and loading it (`engine` holds the protocol
every runtime implements)."""

from __future__ import annotations

import concurrent.futures
import importlib.util
from pathlib import Path

from open_stt_server.catalog import ModelSpec
from open_stt_server.engines.engine import (
    DECODE_NICENESS,
    MOONSHINE_LANGUAGES,
    VOXTRAL_LANGUAGES,
    Capabilities,
    Decoding,
    Engine,
    EngineUnavailable,
    capabilities,
    capabilities_of,
    lower_current_thread_priority,
)
from open_stt_server.settings import Settings

__all__ = [
    "DECODE_NICENESS",
    "MOONSHINE_LANGUAGES",
    "VOXTRAL_LANGUAGES",
    "Capabilities",
    "Decoding",
    "Engine",
    "EngineUnavailable",
    "capabilities",
    "capabilities_of",
    "load_engine",
    "lower_current_thread_priority",
    "require_engine",
]


# The packages each engine imports beyond the base install, and the extra that installs them.
ENGINE_PACKAGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "whisper": ("", ("faster_whisper", "ctranslate2")),
    "voxtral": ("voxtral", ("torch", "transformers", "mistral_common", "soundfile")),
    "moonshine": ("", ("onnxruntime", "onnx", "tokenizers")),
}


def require_engine(spec: ModelSpec) -> None:
    """Fail before any download when the packages of the model's engine are missing."""
    extra, modules = ENGINE_PACKAGES[spec.engine]
    missing = [m for m in modules if not _importable(m)]
    if missing:
        install = f"pip install 'open-stt-server[{extra}]'" if extra else "pip install open-stt-server"
        raise EngineUnavailable(
            f"Model '{spec.name}' runs on the {spec.engine.capitalize()} engine, whose packages are not "
            f"installed (missing: {', '.join(missing)}). Install them with: {install}"
        )


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken or half-removed install
        return False


def load_engine(spec: ModelSpec, weights: Path, settings: Settings) -> Engine:
    """Build the engine in a lower-priority thread: the runtime's own thread pools inherit that priority.

    The caller has run `require_engine` before fetching weights; an engine that still fails to import is
    reported the same way."""
    try:
        if spec.engine == "voxtral":
            from open_stt_server.engines.voxtral import VoxtralEngine as engine_class
        elif spec.engine == "moonshine":
            from open_stt_server.engines.moonshine import MoonshineEngine as engine_class
        else:
            from open_stt_server.engines.whisper_ct2 import WhisperEngine as engine_class
    except ImportError as exc:
        extra = ENGINE_PACKAGES[spec.engine][0]
        raise EngineUnavailable(
            f"Model '{spec.name}' cannot run: its engine failed to import ({exc}). "
            f"Reinstall it with: pip install 'open-stt-server[{extra}]'"
        ) from None

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(_build, engine_class, spec, weights, settings).result()


def _build(engine_class, spec: ModelSpec, weights: Path, settings: Settings) -> Engine:
    lower_current_thread_priority()
    return engine_class(spec, weights, settings)
