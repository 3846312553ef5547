"""The Realtime transcription protocol in both dialects: session settings, their updates, and server events.

GA clients (openai ≥ 1.107, LiveKit ≥ 1.3.7, Pipecat) send `session.update` with `session.type: "transcription"` and
settings under `audio.input`; beta clients send `transcription_session.update` (or a flat `session.update`) with
`input_audio_format`, `input_audio_transcription`, `turn_detection`. Both update one `SessionSettings`; replies
are rendered in the dialect the client spoke. An update changes only the fields it carries, and every reply
carries the whole effective session. Settings this server cannot act on are kept and echoed, never refused.
"""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from open_stt_server.live.vad import VadSettings
from open_stt_server.realtime.audio import PCM_RATES, InputFormat

Dialect = Literal["ga", "beta"]
LOGPROBS = "item.input_audio_transcription.logprobs"
SERVER_VAD_DEFAULTS = {"threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 500}
# semantic_vad waits for the end of a thought; here it is server VAD with a silence that follows its eagerness.
SEMANTIC_SILENCE_MS = {"high": 300, "medium": 500, "auto": 500, "low": 800}
BETA_FORMATS = {"pcm16": "audio/pcm", "g711_ulaw": "audio/pcmu", "g711_alaw": "audio/pcma"}
DELAYS = ("minimal", "low", "medium", "high", "xhigh")
PCM_24K = InputFormat("audio/pcm", 24_000)


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


class ProtocolError(Exception):
    """A client event this session answers with an `error` event (the session stays open)."""

    def __init__(self, message: str, param: str | None = None, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


@dataclass(frozen=True)
class SessionSettings:
    format: InputFormat = PCM_24K
    model: str = ""  # as the client named it (echoed); resolved to a loaded model by the session
    language: str | None = None
    prompt: str = ""
    transcription_extra: dict[str, Any] = field(
        default_factory=dict
    )  # keywords, delay, languages, ...: echoed
    turn_detection: dict[str, Any] | None = field(
        default_factory=lambda: {"type": "server_vad", **SERVER_VAD_DEFAULTS}
    )
    noise_reduction: dict[str, Any] | None = None
    include: tuple[str, ...] = ()

    @property
    def vad(self) -> VadSettings | None:
        td = self.turn_detection
        if td is None:
            return None
        if td["type"] == "semantic_vad":
            silence = SEMANTIC_SILENCE_MS[td.get("eagerness", "auto")]
            return VadSettings(0.5, SERVER_VAD_DEFAULTS["prefix_padding_ms"], silence)
        return VadSettings(
            float(td["threshold"]), int(td["prefix_padding_ms"]), int(td["silence_duration_ms"])
        )

    @property
    def logprobs(self) -> bool:
        return LOGPROBS in self.include

    @property
    def delay(self) -> str | None:
        value = self.transcription_extra.get("delay")
        return value if value in DELAYS else None


# -- updates -----------------------------------------------------------------------------------------------


def _object(value: Any, param: str) -> dict:
    if not isinstance(value, dict):
        raise ProtocolError(f"'{param}' must be an object.", param)
    return value


def _format(value: Any, param: str) -> InputFormat:
    value = _object(value, param)
    kind = value.get("type")
    if kind == "audio/pcm":
        rate = value.get("rate", 24_000)
        if not isinstance(rate, int) or rate not in PCM_RATES:
            raise ProtocolError(
                f"'{param}.rate' must be one of {', '.join(map(str, PCM_RATES))} (OpenAI takes 24000).",
                f"{param}.rate",
            )
        return InputFormat("audio/pcm", rate)
    if kind in ("audio/pcmu", "audio/pcma"):
        return InputFormat(kind, 8000)
    raise ProtocolError(f"'{param}.type' must be audio/pcm, audio/pcmu or audio/pcma.", f"{param}.type")


def _turn_detection(value: Any, current: dict | None, param: str) -> dict | None:
    if value is None:
        return None
    value = _object(value, param)
    kind = value.get("type", current["type"] if current else "server_vad")
    if kind not in ("server_vad", "semantic_vad"):
        raise ProtocolError(f"'{param}.type' must be server_vad, semantic_vad or null.", f"{param}.type")
    base = dict(current) if current and current.get("type") == kind else {"type": kind}
    if kind == "server_vad":
        for key, default in SERVER_VAD_DEFAULTS.items():
            base.setdefault(key, default)
    else:
        base.setdefault("eagerness", "auto")
    merged = {**base, **{k: v for k, v in value.items() if v is not None}, "type": kind}
    limits = {"threshold": (0.0, 1.0), "prefix_padding_ms": (0, 10_000), "silence_duration_ms": (0, 10_000)}
    if kind == "server_vad":
        for key, (low, high) in limits.items():
            number = merged[key]
            if isinstance(number, bool) or not isinstance(number, (int, float)) or not low <= number <= high:
                raise ProtocolError(
                    f"'{param}.{key}' must be a number from {low} to {high}.", f"{param}.{key}"
                )
    elif merged["eagerness"] not in SEMANTIC_SILENCE_MS:
        raise ProtocolError(f"'{param}.eagerness' must be low, medium, high or auto.", f"{param}.eagerness")
    return merged


def _transcription(settings: SessionSettings, value: Any, param: str) -> SessionSettings:
    value = _object(value, param)
    changes: dict[str, Any] = {}
    extra = dict(settings.transcription_extra)
    for key, item in value.items():
        if key == "model":
            if not isinstance(item, str) or not item.strip():
                raise ProtocolError(f"'{param}.model' must be a model name.", f"{param}.model")
            changes["model"] = item.strip()
        elif key == "language":
            if item is not None and not isinstance(item, str):
                raise ProtocolError(f"'{param}.language' must be an ISO 639-1 code.", f"{param}.language")
            changes["language"] = item or None
        elif key == "prompt":
            if item is not None and not isinstance(item, str):
                raise ProtocolError(f"'{param}.prompt' must be text.", f"{param}.prompt")
            changes["prompt"] = item or ""
        else:
            extra[key] = item
    return replace(settings, transcription_extra=extra, **changes)


def _include(value: Any, param: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ProtocolError(f"'{param}' must be a list of strings.", param)
    return tuple(value)


def apply_ga(settings: SessionSettings, session: Any) -> SessionSettings:
    """A GA `session.update`'s session applied to `settings` (all or nothing)."""
    session = _object(session, "session")
    kind = session.get("type", "transcription")
    if kind != "transcription":
        raise ProtocolError(
            f"This server runs transcription sessions only; session.type '{kind}' is not supported.",
            "session.type",
            "unsupported_session_type",
        )
    audio = _object(session.get("audio", {}), "session.audio")
    audio_input = _object(audio.get("input", {}), "session.audio.input")
    base = "session.audio.input"
    if "format" in audio_input:
        settings = replace(settings, format=_format(audio_input["format"], f"{base}.format"))
    if "transcription" in audio_input and audio_input["transcription"] is not None:
        settings = _transcription(settings, audio_input["transcription"], f"{base}.transcription")
    if "turn_detection" in audio_input:
        td = _turn_detection(audio_input["turn_detection"], settings.turn_detection, f"{base}.turn_detection")
        settings = replace(settings, turn_detection=td)
    if "noise_reduction" in audio_input:
        settings = replace(settings, noise_reduction=audio_input["noise_reduction"])
    if "include" in session:
        settings = replace(settings, include=_include(session["include"], "session.include"))
    return settings


def is_beta_session(session: Any) -> bool:
    """A flat (beta) session object, as old clients send in `session.update`."""
    beta_keys = ("input_audio_format", "input_audio_transcription", "input_audio_noise_reduction")
    return isinstance(session, dict) and "audio" not in session and any(k in session for k in beta_keys)


def apply_beta(settings: SessionSettings, session: Any) -> SessionSettings:
    """A beta `transcription_session.update`'s (or flat `session.update`'s) session applied to `settings`."""
    session = _object(session, "session")
    if "input_audio_format" in session:
        name = session["input_audio_format"]
        if name not in BETA_FORMATS:
            raise ProtocolError(
                "'session.input_audio_format' must be pcm16, g711_ulaw or g711_alaw.",
                "session.input_audio_format",
            )
        settings = replace(
            settings, format=_format({"type": BETA_FORMATS[name]}, "session.input_audio_format")
        )
    if session.get("input_audio_transcription") is not None:
        settings = _transcription(
            settings, session["input_audio_transcription"], "session.input_audio_transcription"
        )
    if "turn_detection" in session:
        td = _turn_detection(session["turn_detection"], settings.turn_detection, "session.turn_detection")
        settings = replace(settings, turn_detection=td)
    if "input_audio_noise_reduction" in session:
        settings = replace(settings, noise_reduction=session["input_audio_noise_reduction"])
    if "include" in session:
        settings = replace(settings, include=_include(session["include"], "session.include"))
    return settings


# -- rendering ---------------------------------------------------------------------------------------------


def _format_json(fmt: InputFormat) -> dict:
    return {"type": "audio/pcm", "rate": fmt.rate} if fmt.type == "audio/pcm" else {"type": fmt.type}


def _transcription_json(settings: SessionSettings) -> dict:
    return {
        **copy.deepcopy(settings.transcription_extra),
        "model": settings.model,
        "language": settings.language,
        "prompt": settings.prompt,
    }


def ga_session(session_id: str, expires_at: int, settings: SessionSettings) -> dict:
    return {
        "type": "transcription",
        "object": "realtime.transcription_session",
        "id": session_id,
        "expires_at": expires_at,
        "audio": {
            "input": {
                "format": _format_json(settings.format),
                "transcription": _transcription_json(settings),
                "turn_detection": copy.deepcopy(settings.turn_detection),
                "noise_reduction": copy.deepcopy(settings.noise_reduction),
            }
        },
        "include": list(settings.include),
    }


def beta_session(session_id: str, expires_at: int, settings: SessionSettings) -> dict:
    beta_format = next(k for k, v in BETA_FORMATS.items() if v == settings.format.type)
    return {
        "object": "realtime.transcription_session",
        "id": session_id,
        "expires_at": expires_at,
        "modalities": ["text"],
        "input_audio_format": beta_format,
        "input_audio_transcription": _transcription_json(settings),
        "turn_detection": copy.deepcopy(settings.turn_detection),
        "input_audio_noise_reduction": copy.deepcopy(settings.noise_reduction),
        "include": list(settings.include),
    }


def event(kind: str, **fields: Any) -> dict:
    return {"type": kind, "event_id": new_id("event"), **fields}


def error_event(message: str, *, code: str | None, param: str | None = None, client_event_id: str | None = None,
                kind: str = "invalid_request_error") -> dict:  # fmt: skip
    return event(
        "error",
        error={"type": kind, "code": code, "message": message, "param": param, "event_id": client_event_id},
    )


def user_item(item_id: str, transcript: str | None, status: str = "completed") -> dict:
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "status": status,
        "role": "user",
        "content": [{"type": "input_audio", "transcript": transcript}],
    }
