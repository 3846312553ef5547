"""Model names the server knows, their aliases, where their weights live and which engine runs them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

EngineKind = Literal["whisper", "voxtral", "moonshine"]

# The name OpenAI clients hard-code; it is served by whichever loaded model `ModelSet.resolve` picks.
OPENAI_WHISPER_ALIAS = "whisper-1"
# OpenAI's diarizing model; served by the model `--diarize-model` names (the default model unless set).
OPENAI_DIARIZE_ALIAS = "gpt-4o-transcribe-diarize"
# OpenAI's other transcription models (files and realtime); served by `--realtime-model` (default: the default model).
OPENAI_TRANSCRIBE_ALIASES = (
    "gpt-4o-transcribe",
    "gpt-4o-mini-transcribe",
    "gpt-4o-transcribe-latest",
    "gpt-4o-mini-transcribe-2025-12-15",
    "gpt-realtime-whisper",
    "gpt-live-transcribe",
    "gpt-transcribe",
)


@dataclass(frozen=True)
class ModelSpec:
    name: str  # the id clients use and /v1/models lists
    source: str  # Hugging Face repo id, or a local directory
    engine: EngineKind
    english_only: bool = False
    # Where in `source` the model's files lie, when one repository holds several models (Moonshine's ONNX).
    subfolder: str = ""
    # A second repository holding the tokenizer, when `source` has none (Moonshine's ONNX repository).
    tokenizer_source: str = ""

    @property
    def is_local(self) -> bool:
        return Path(self.source).expanduser().is_dir()


CATALOG: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("whisper-tiny", "Systran/faster-whisper-tiny", "whisper"),
        ModelSpec("whisper-tiny.en", "Systran/faster-whisper-tiny.en", "whisper", english_only=True),
        ModelSpec("whisper-base", "Systran/faster-whisper-base", "whisper"),
        ModelSpec("whisper-base.en", "Systran/faster-whisper-base.en", "whisper", english_only=True),
        ModelSpec("whisper-small", "Systran/faster-whisper-small", "whisper"),
        ModelSpec("whisper-small.en", "Systran/faster-whisper-small.en", "whisper", english_only=True),
        ModelSpec("whisper-medium", "Systran/faster-whisper-medium", "whisper"),
        ModelSpec("whisper-medium.en", "Systran/faster-whisper-medium.en", "whisper", english_only=True),
        # The original server's "large" is OpenAI's first large checkpoint.
        ModelSpec("whisper-large", "Systran/faster-whisper-large-v1", "whisper"),
        ModelSpec("whisper-large-v2", "Systran/faster-whisper-large-v2", "whisper"),
        ModelSpec("whisper-large-v3", "Systran/faster-whisper-large-v3", "whisper"),
        ModelSpec("whisper-large-v3-turbo", "mobiuslabsgmbh/faster-whisper-large-v3-turbo", "whisper"),
        ModelSpec(
            "whisper-distil-medium.en",
            "Systran/faster-distil-whisper-medium.en",
            "whisper",
            english_only=True,
        ),
        ModelSpec("whisper-distil-large-v2", "Systran/faster-distil-whisper-large-v2", "whisper"),
        ModelSpec("whisper-distil-large-v3", "Systran/faster-distil-whisper-large-v3", "whisper"),
        # Useful Sensors' Moonshine (English): the ONNX exports of one repository, int8 weights.
        ModelSpec(
            "moonshine-tiny",
            "UsefulSensors/moonshine",
            "moonshine",
            english_only=True,
            subfolder="onnx/merged/tiny/quantized",
            tokenizer_source="UsefulSensors/moonshine-tiny",
        ),
        ModelSpec(
            "moonshine-base",
            "UsefulSensors/moonshine",
            "moonshine",
            english_only=True,
            subfolder="onnx/merged/base/quantized",
            tokenizer_source="UsefulSensors/moonshine-base",
        ),
        ModelSpec("voxtral-mini", "mistralai/Voxtral-Mini-3B-2507", "voxtral"),
        ModelSpec("voxtral-small", "mistralai/Voxtral-Small-24B-2507", "voxtral"),
    )
}


def _aliases() -> dict[str, str]:
    aliases: dict[str, str] = {}
    for name, spec in CATALOG.items():
        short = name.removeprefix("whisper-")
        aliases[short] = name  # "base", "large-v3", "distil-large-v3"
        if spec.subfolder:  # one repository, several models: named by the model's own repository
            aliases[spec.tokenizer_source.lower()] = name  # "usefulsensors/moonshine-tiny"
            aliases[spec.name.replace("-", "/", 1)] = name  # "moonshine/tiny", as Useful Sensors write it
        else:
            aliases[spec.source.lower()] = name  # the Hugging Face repo id
    aliases["turbo"] = aliases["large-v3-turbo"] = "whisper-large-v3-turbo"
    aliases["whisper-turbo"] = "whisper-large-v3-turbo"
    aliases["large-v1"] = aliases["whisper-large-v1"] = "whisper-large"
    aliases["mini"] = "voxtral-mini"
    return aliases


ALIASES = _aliases()


class UnknownModel(ValueError):
    pass


def lookup(value: str) -> ModelSpec:
    """A catalog name, an alias, a Hugging Face repo id (owner/name) or a local directory → ModelSpec."""
    key = value.strip()
    if key in CATALOG:
        return CATALOG[key]
    if key.lower() in ALIASES:
        return CATALOG[ALIASES[key.lower()]]
    path = Path(key).expanduser()
    if path.is_dir():
        engine_kind = _engine_of_directory(path)
        return ModelSpec(
            path.resolve().name, str(path.resolve()), engine_kind, english_only=engine_kind == "moonshine"
        )
    if _looks_like_repo_id(key):
        engine: EngineKind = "voxtral" if "voxtral" in key.lower() else "whisper"
        if "moonshine" in key.lower():
            raise UnknownModel(
                f"Unknown model '{value}': Moonshine is served as moonshine-tiny or moonshine-base (the ONNX "
                "exports of UsefulSensors/moonshine), or from a local directory holding encoder_model and "
                "decoder_model_merged (.onnx or .ort) with tokenizer.json."
            )
        return ModelSpec(key, key, engine, english_only=key.lower().endswith(".en"))
    known = ", ".join(sorted(CATALOG))
    raise UnknownModel(
        f"Unknown model '{value}'. Use a catalog name ({known}), a Hugging Face repo id (owner/name) of a "
        "CTranslate2 Whisper conversion or of a transformers Voxtral, or a local model directory."
    )


def loaded_name(
    requested: str | None,
    loaded: Mapping[str, ModelSpec],
    default: str | None = None,
    roles: Mapping[str, str] | None = None,
) -> str | None:
    """Which loaded model answers to a name a client (or a flag) sends: none → the `default`; `whisper-1` →
    whisper-tiny when loaded, else the default; OpenAI's other names by their `roles` (name → loaded model); a
    loaded name, an alias of one, or the repo id or directory it was loaded from. None: no loaded model does."""
    if not requested:
        return default
    name = requested.strip()
    if name == OPENAI_WHISPER_ALIAS:
        return "whisper-tiny" if "whisper-tiny" in loaded else default
    if roles and name in roles:
        return roles[name]
    if name in loaded:
        return name
    canonical = ALIASES.get(name.lower())
    if canonical in loaded:
        return canonical
    return next((loaded_as for loaded_as, spec in loaded.items() if name == spec.source), None)


def _looks_like_repo_id(value: str) -> bool:
    parts = value.split("/")
    return len(parts) == 2 and all(p and not p.startswith(".") and " " not in p for p in parts)


def _engine_of_directory(path: Path) -> EngineKind:
    if (path / "model.bin").exists():
        return "whisper"
    if any(path.glob("encoder_model.*")) and any(path.glob("decoder_model_merged.*")):
        return "moonshine"
    config = path / "config.json"
    if config.exists() and "voxtral" in config.read_text(errors="ignore").lower():
        return "voxtral"
    return "whisper"
