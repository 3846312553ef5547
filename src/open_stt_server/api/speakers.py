"""The speaker-label fields of a diarized_json request (known speakers, speaker counts), read and checked into
a `SpeakerAsk` for the diarizer; their references stay encoded until the request is admitted."""

from __future__ import annotations

import base64
import binascii
import urllib.parse
from dataclasses import dataclass

from fastapi import Request
from starlette.datastructures import FormData

from open_stt_server.api.errors import bad_request
from open_stt_server.api.form import MAX_SPEAKERS, fields, text
from open_stt_server.diarization import INSTALL_HINT, SpeakerCount
from open_stt_server.settings import Settings
from open_stt_server.transcript import Task

MAX_KNOWN_SPEAKERS = 4  # as OpenAI
MAX_SPEAKER_NAME = 64


@dataclass(frozen=True)
class SpeakerAsk:
    """What a diarized_json request asks of the diarizer, its references still encoded."""

    count: SpeakerCount
    names: tuple[str, ...]
    references: tuple[bytes, ...]


def _count(form: FormData, name: str) -> int | None:
    value = text(form, name)
    if value is None or value == "":
        return None
    if not value.isdigit() or not 1 <= int(value) <= MAX_SPEAKERS:
        raise bad_request(f"'{name}' must be a whole number from 1 to {MAX_SPEAKERS}, got '{value}'.", name)
    return int(value)


def speaker_ask(request: Request, form: FormData, task: Task, response_format: str) -> SpeakerAsk | None:
    names = fields(form, "known_speaker_names", split=False)
    references = fields(form, "known_speaker_references", split=False)
    exact, low, high = (_count(form, n) for n in ("num_speakers", "min_speakers", "max_speakers"))
    if response_format != "diarized_json":
        for field, given in (
            ("known_speaker_names", names),
            ("known_speaker_references", references),
            ("num_speakers", exact),
            ("min_speakers", low),
            ("max_speakers", high),
        ):
            if given:
                raise bad_request(f"'{field}' requires response_format=diarized_json.", field)
        return None
    if task != "transcribe":
        raise bad_request(
            "response_format=diarized_json is for transcriptions; translations have no speaker labels.",
            "response_format",
        )
    if request.app.state.diarization is None:
        raise bad_request(
            "Speaker labels (diarized_json) are not available on this server: "
            + _diarization_missing(request.app.state.settings),
            "response_format",
            "diarization_unavailable",
        )
    if low is not None and high is not None and low > high:
        raise bad_request(f"'min_speakers' ({low}) is larger than 'max_speakers' ({high}).", "min_speakers")
    if exact is not None and ((low is not None and exact < low) or (high is not None and exact > high)):
        raise bad_request("'num_speakers' lies outside min_speakers..max_speakers.", "num_speakers")
    if len(references) > MAX_KNOWN_SPEAKERS:
        raise bad_request(
            f"At most {MAX_KNOWN_SPEAKERS} known speakers are supported, got {len(references)}.",
            "known_speaker_references",
        )
    if len(names) != len(references):
        raise bad_request(
            f"known_speaker_names has {len(names)} entries but known_speaker_references has "
            f"{len(references)}; give one name per reference.",
            "known_speaker_names",
        )
    if len(set(names)) != len(names):
        raise bad_request("known_speaker_names must be different from each other.", "known_speaker_names")
    for name in names:
        if len(name) > MAX_SPEAKER_NAME:
            raise bad_request(
                f"A known speaker name is longer than {MAX_SPEAKER_NAME} characters.", "known_speaker_names"
            )
    decoded = tuple(_data_url(i, value) for i, value in enumerate(references))
    return SpeakerAsk(SpeakerCount(exact, low or 1, high), tuple(names), decoded)


def _diarization_missing(settings: Settings) -> str:
    if settings.diarizer == "off":
        return "it was turned off (--diarizer off)."
    return f"the diarizer's packages are not installed. Install them with: {INSTALL_HINT}"


def _data_url(index: int, value: str) -> bytes:
    """The bytes of a data URL (`data:audio/wav;base64,...`; plain percent-encoded data too)."""
    field = "known_speaker_references"
    head, comma, payload = value.partition(",")
    if not head.lower().startswith("data:") or not comma:
        raise bad_request(
            f"known_speaker_references[{index}] must be a data URL such as 'data:audio/wav;base64,...'.",
            field,
        )
    try:
        if head.lower().endswith(";base64"):
            return base64.b64decode(payload, validate=True)
        return urllib.parse.unquote_to_bytes(payload)
    except (binascii.Error, ValueError):
        raise bad_request(f"known_speaker_references[{index}] is not valid base64.", field) from None
