"""The multipart form of POST /v1/audio/*: every field once (`FORM_FIELDS`: name, JSON schema, description) —
the OpenAPI description of the form is generated from it and the readers take their bounds and values from it —
and the readers of text, list, boolean and number fields, whose errors name the field."""

from __future__ import annotations

import json
from dataclasses import dataclass

from starlette.datastructures import FormData

from open_stt_server import formats
from open_stt_server.api.errors import bad_request

TRUE_WORDS = {"true", "1", "yes", "on"}
FALSE_WORDS = {"false", "0", "no", "off", ""}
MAX_SPEAKERS = 32


@dataclass(frozen=True)
class FormField:
    name: str
    schema: dict
    description: str = ""
    array: bool = False  # sent as `name[]` (the SDKs) or `name`

    @property
    def key(self) -> str:
        return self.name + "[]" if self.array else self.name


def _enum(values, kind: str = "string") -> dict:
    return {"type": kind, "enum": list(values)}


BOOLEAN = {"type": "boolean"}
COUNT = {"type": "integer", "minimum": 1, "maximum": MAX_SPEAKERS}
FORM_FIELDS: tuple[FormField, ...] = (
    FormField(
        "file", {"type": "string", "format": "binary"}, "The audio file (any container/codec FFmpeg reads)."
    ),
    FormField(
        "model", {"type": "string"}, "A loaded model, an alias, or one of OpenAI's names (whisper-1, ...)."
    ),
    FormField("language", {"type": "string"}, "ISO 639-1 code or name (transcriptions); omitted = detected."),
    FormField("prompt", {"type": "string"}, "Earlier text or spellings to follow."),
    FormField("response_format", _enum(formats.RESPONSE_FORMATS)),
    FormField(
        "temperature", {"type": "number", "minimum": 0, "maximum": 1}, "0 = OpenAI's fallback schedule."
    ),
    FormField("timestamp_granularities", {"type": "array", "items": _enum(("segment", "word"))}, array=True),
    FormField("include", {"type": "array", "items": _enum(("logprobs",))}, array=True),
    FormField("stream", BOOLEAN, "Server-Sent Events: transcript.text.delta, then transcript.text.done."),
    FormField("chunking_strategy", {"type": "string"}, '"auto" or a server_vad object (JSON).'),
    FormField(
        "known_speaker_names", {"type": "array", "items": {"type": "string"}}, "diarized_json.", array=True
    ),
    FormField(
        "known_speaker_references",
        {"type": "array", "items": {"type": "string"}},
        "diarized_json: data URLs of 2–10 s of each known speaker.",
        array=True,
    ),
    FormField("num_speakers", COUNT, "Extension (diarized_json): the exact number of speakers."),
    FormField("min_speakers", COUNT, "Extension (diarized_json)."),
    FormField("max_speakers", COUNT, "Extension (diarized_json)."),
    FormField("vad_filter", BOOLEAN, "Extension: Silero VAD on/off."),
    FormField("batched", BOOLEAN, "Extension: the batched path for long audio on/off."),
)
FIELD = {f.name: f for f in FORM_FIELDS}


def form_schema() -> dict:
    """The OpenAPI requestBody of the audio routes, from FORM_FIELDS."""
    properties = {}
    for f in FORM_FIELDS:
        properties[f.key] = {**f.schema, **({"description": f.description} if f.description else {})}
    schema = {"type": "object", "required": ["file"], "properties": properties}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


# -- reading fields ------------------------------------------------------------------------------------------


def fields(form: FormData, name: str, split: bool = True) -> list[str]:
    """Values sent as `name`, `name[]` or `name[0]`... (the SDK sends arrays in the bracketed form); with
    `split`, a value may also hold several separated by commas."""
    values: list[str] = []
    for key, value in form.multi_items():
        if (
            key == name
            or key == f"{name}[]"
            or (key.startswith(f"{name}[") and key[len(name) + 1 : -1].isdigit())
        ):
            if not isinstance(value, str):
                raise bad_request(f"'{name}' must be a text field, not a file.", name)
            parts = value.split(",") if split else [value]
            values.extend(v.strip() for v in parts if v.strip())
    return values


def text(form: FormData, name: str) -> str | None:
    value = form.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_request(f"'{name}' must be a text field, not a file.", name)
    return value.strip()


def boolean(form: FormData, name: str) -> bool | None:
    value = text(form, name)
    if value is None:
        return None
    if value.lower() in TRUE_WORDS:
        return True
    if value.lower() in FALSE_WORDS:
        return False
    raise bad_request(f"'{name}' must be true or false, got '{value}'.", name)


def number(form: FormData, name: str) -> float | None:
    low, high = FIELD[name].schema["minimum"], FIELD[name].schema["maximum"]
    value = text(form, name)
    if value is None or value == "":
        return None
    try:
        parsed = float(value)
    except ValueError:
        raise bad_request(
            f"'{name}' must be a number between {low:g} and {high:g}, got '{value}'.", name
        ) from None
    if not low <= parsed <= high:  # also false for NaN
        raise bad_request(f"'{name}' must be between {low:g} and {high:g}, got {value}.", name)
    return parsed


def chunking(form: FormData) -> dict | None:
    """OpenAI's chunking_strategy: "auto", or a server_vad object (JSON text or bracketed fields)."""
    raw = text(form, "chunking_strategy")
    nested = {
        k[len("chunking_strategy[") : -1]: v
        for k, v in form.multi_items()
        if k.startswith("chunking_strategy[") and k.endswith("]") and isinstance(v, str)
    }
    if raw is None and not nested:
        return None
    if raw is not None and raw.lower() == "auto":
        return {}
    strategy: object = nested
    if raw is not None:
        try:
            strategy = json.loads(raw)
        except json.JSONDecodeError:
            raise bad_request(
                '\'chunking_strategy\' must be "auto" or an object like {"type": "server_vad"}.',
                "chunking_strategy",
            ) from None
    if not isinstance(strategy, dict) or strategy.get("type") != "server_vad":
        raise bad_request(
            '\'chunking_strategy\' must be "auto" or {"type": "server_vad", ...}.', "chunking_strategy"
        )
    vad: dict = {}
    limits = {"threshold": (0.0, 1.0), "silence_duration_ms": (0, 60_000), "prefix_padding_ms": (0, 10_000)}
    for key, (low, high) in limits.items():
        if key in strategy:
            try:
                value = float(strategy[key])
            except (TypeError, ValueError):
                value = float("nan")
            if not low <= value <= high:
                raise bad_request(
                    f"'chunking_strategy.{key}' must be between {low} and {high}.", "chunking_strategy"
                )
            vad[key] = value
    unknown = set(strategy) - set(limits) - {"type"}
    if unknown:
        raise bad_request(
            f"Unknown chunking_strategy field(s): {', '.join(sorted(unknown))}.", "chunking_strategy"
        )
    return vad
