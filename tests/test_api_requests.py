"""The typed request of /v1/audio/*: every field of the form table has an error case here — status, envelope,
param, code and message — and the OpenAPI schema the server publishes is the one generated from the same table."""

from __future__ import annotations

import httpx
import pytest

from open_stt_server.api.form import FORM_FIELDS
from tests.conftest import Server
from tests.test_api_errors import assert_envelope, clip, post

# field → (form data, status, code, a piece of the message); the file is the hello-world clip unless the case
# replaces it
CASES: dict[str, tuple[dict, int, str | None, str]] = {
    "file": ({"model": "whisper-tiny.en"}, 400, "missing_file", "Missing the 'file' field"),
    "model": ({"model": "whisper-huge-v9"}, 404, "model_not_found", "'whisper-huge-v9' does not exist"),
    "language": ({"language": "xx"}, 400, "unsupported_language", "Unsupported language 'xx'"),
    "response_format": ({"response_format": "docx"}, 400, None, "Unsupported response_format 'docx'"),
    "temperature": ({"temperature": "2"}, 400, None, "'temperature' must be between 0 and 1, got 2."),
    "timestamp_granularities": (
        {"timestamp_granularities[]": "char", "response_format": "verbose_json"},
        400,
        None,
        "Unknown timestamp granularity 'char'",
    ),
    "include": ({"include[]": "tokens"}, 400, None, "Unknown include value 'tokens'"),
    "stream": ({"stream": "maybe"}, 400, None, "'stream' must be true or false, got 'maybe'."),
    "chunking_strategy": (
        {"chunking_strategy": '{"type": "semantic"}'},
        400,
        None,
        '\'chunking_strategy\' must be "auto" or {"type": "server_vad", ...}.',
    ),
    "known_speaker_names": (
        {"known_speaker_names[]": "Ann"},
        400,
        None,
        "'known_speaker_names' requires response_format=diarized_json.",
    ),
    "known_speaker_references": (
        {"known_speaker_references[]": "data:audio/wav;base64,AAAA"},
        400,
        None,
        "'known_speaker_references' requires response_format=diarized_json.",
    ),
    "num_speakers": (
        {"num_speakers": "0", "response_format": "diarized_json"},
        400,
        None,
        "'num_speakers' must be a whole number from 1 to 32, got '0'.",
    ),
    "min_speakers": (
        {"min_speakers": "3", "max_speakers": "2", "response_format": "diarized_json"},
        400,
        None,
        "'min_speakers' (3) is larger than 'max_speakers' (2).",
    ),
    "max_speakers": (
        {"max_speakers": "99", "response_format": "diarized_json"},
        400,
        None,
        "'max_speakers' must be a whole number from 1 to 32, got '99'.",
    ),
    "vad_filter": (
        {"vad_filter": "sometimes"},
        400,
        None,
        "'vad_filter' must be true or false, got 'sometimes'.",
    ),
    "batched": ({"batched": "2"}, 400, None, "'batched' must be true or false, got '2'."),
}
# Whisper takes every prompt: the prompt's error (a model without prompts) is tested on Voxtral.
ELSEWHERE = {"prompt": "tests/test_voxtral.py::test_requests_the_model_cannot_honour_are_clear_400s"}


def test_every_field_of_the_form_has_an_error_case():
    assert {f.name for f in FORM_FIELDS} == set(CASES) | set(ELSEWHERE)


@pytest.mark.parametrize("field", list(CASES))
def test_each_fields_error(server: Server, field: str) -> None:
    data, status, code, message = CASES[field]
    # multipart either way: without a file, the other fields go as text parts
    files = (
        {"file": ("a.wav", clip(), "audio/wav")}
        if field != "file"
        else {k: (None, v) for k, v in data.items()}
    )
    error = assert_envelope(
        post(server, files=files, data=None if field == "file" else data), status, code=code
    )
    assert message in error["message"], error
    assert error["param"] == field, error


def test_the_published_form_schema_is_the_table(server: Server) -> None:
    spec = httpx.get(server.url + "/openapi.json", timeout=10).json()
    for route in ("/v1/audio/transcriptions", "/v1/audio/translations"):
        body = spec["paths"][route]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
        assert body["required"] == ["file"]
        assert set(body["properties"]) == {f.key for f in FORM_FIELDS}
        assert body["properties"]["temperature"]["maximum"] == 1
        assert "diarized_json" in body["properties"]["response_format"]["enum"]
        assert body["properties"]["timestamp_granularities[]"]["items"]["enum"] == ["segment", "word"]
