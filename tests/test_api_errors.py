"""Every error a client can cause: status, OpenAI envelope, and a server that stays healthy after it."""

from __future__ import annotations

import io
import math
import wave

import httpx
import numpy as np
import openai
import pytest

from tests.conftest import Server, sample, start_server


def assert_envelope(
    r: httpx.Response, status: int, param: str | None = None, code: str | None = None
) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"]
    assert "detail" not in r.text
    if param is not None:
        assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error
    return error


def post(server: Server, files=None, data=None, path="/audio/transcriptions", **kw) -> httpx.Response:
    return httpx.post(server.base_url + path, files=files, data=data, timeout=120, **kw)


def clip() -> bytes:
    return sample("en", "hello_world").read_bytes()


def wav_bytes(samples: np.ndarray, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((samples * 32767).astype("<i2").tobytes())
    return buf.getvalue()


@pytest.fixture(autouse=True)
def still_healthy_afterwards(server: Server):
    yield
    assert httpx.get(server.url + "/health", timeout=5).json() == {"status": "ok"}


def test_missing_file(server: Server) -> None:
    assert_envelope(post(server, data={"model": "whisper-base"}, files={"x": ("a", b"1")}), 400, "file")


def test_file_sent_as_text_field(server: Server) -> None:
    r = httpx.post(server.base_url + "/audio/transcriptions", data={"file": "not a file"},
                   files={"other": ("x", b"y")}, timeout=30)  # fmt: skip
    assert_envelope(r, 400, "file")


def test_not_multipart(server: Server) -> None:
    assert_envelope(httpx.post(server.base_url + "/audio/transcriptions", json={"file": "x"}), 415)
    assert_envelope(httpx.post(server.base_url + "/audio/transcriptions"), 415)


def test_broken_multipart(server: Server) -> None:
    r = httpx.post(server.base_url + "/audio/transcriptions", content=b"--xyz\r\ngarbage",
                   headers={"content-type": "multipart/form-data; boundary=xyz"})  # fmt: skip
    assert_envelope(r, 400)


def test_empty_audio(server: Server) -> None:
    assert_envelope(post(server, files={"file": ("a.wav", b"")}), 400, "file")


@pytest.mark.parametrize("payload", [b"this is not audio at all" * 50, b"RIFF\x00\x00\x00\x00WAVEfmt " + b"\x00" * 64,
                                     bytes(range(256)) * 40, clip()[:44]])  # fmt: skip
def test_undecodable_audio(server: Server, payload: bytes) -> None:
    assert_envelope(post(server, files={"file": ("a.wav", payload)}), 400, "file", "invalid_audio")


def test_silence_is_not_an_error(server: Server) -> None:
    r = post(server, files={"file": ("s.wav", wav_bytes(np.zeros(16000 * 2)))})
    assert r.status_code == 200 and isinstance(r.json()["text"], str)


def test_unknown_model(server: Server) -> None:
    error = assert_envelope(
        post(server, files={"file": ("a.wav", clip())}, data={"model": "whisper-giant"}), 404
    )
    assert error["code"] == "model_not_found" and error["param"] == "model"


def test_unknown_model_through_sdk(openai_client) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        openai_client.audio.transcriptions.create(model="nope", file=("a.wav", clip()))
    assert info.value.body["code"] == "model_not_found"


@pytest.mark.parametrize("value", ["-0.1", "1.5", "hot", "nan"])
def test_temperature_out_of_range(server: Server, value: str) -> None:
    assert_envelope(post(server, files={"file": ("a.wav", clip())}, data={"temperature": value}), 400,
                    "temperature")  # fmt: skip


@pytest.mark.parametrize("value", ["xx", "klingon", "english-ish"])
def test_unknown_language(server: Server, value: str) -> None:
    assert_envelope(
        post(server, files={"file": ("a.wav", clip())}, data={"language": value}), 400, "language"
    )


def test_non_english_language_on_english_only_model(server: Server) -> None:
    r = post(server, files={"file": ("a.wav", clip())}, data={"model": "whisper-tiny.en", "language": "fr"})
    assert_envelope(r, 400, "language")


def test_unknown_response_format(server: Server) -> None:
    r = post(server, files={"file": ("a.wav", clip())}, data={"response_format": "docx"})
    assert_envelope(r, 400, "response_format")


def test_unknown_route_and_method(server: Server) -> None:
    assert_envelope(httpx.get(server.url + "/v1/nothing"), 404)
    assert_envelope(httpx.get(server.base_url + "/audio/transcriptions"), 405)


def test_upload_over_the_limit(hf_home, tmp_path) -> None:
    srv = start_server(hf_home, tmp_path, "--model", "whisper-tiny.en", "--max-upload-mb", "1")
    try:
        big = wav_bytes(np.zeros(16000 * 40))  # 1.28 MB
        assert_envelope(httpx.post(srv.base_url + "/audio/transcriptions", files={"file": ("a.wav", big)}),
                        413, "file", "upload_too_large")  # fmt: skip

        def chunked():  # no Content-Length: the limit must hold while streaming too
            body = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n' + big
            for i in range(0, len(body), 65536):
                yield body[i : i + 65536]

        r = httpx.post(srv.base_url + "/audio/transcriptions", content=chunked(),
                       headers={"content-type": "multipart/form-data; boundary=b"})  # fmt: skip
        assert_envelope(r, 413, "file")
        small = httpx.post(
            srv.base_url + "/audio/transcriptions", files={"file": ("a.wav", clip())}, timeout=60
        )
        assert small.status_code == 200
    finally:
        srv.stop()


def test_decoded_duration_cap(hf_home, tmp_path) -> None:
    srv = start_server(hf_home, tmp_path, "--model", "whisper-tiny.en", "--max-audio-seconds", "5")
    try:
        six_seconds = wav_bytes(np.zeros(16000 * 6))
        assert_envelope(httpx.post(srv.base_url + "/audio/transcriptions", files={"file": ("a.wav", six_seconds)}),
                        413, "file", "audio_too_long")  # fmt: skip
    finally:
        srv.stop()


def test_api_key(hf_home, tmp_path) -> None:
    from openai import OpenAI

    srv = start_server(hf_home, tmp_path, "--model", "whisper-tiny.en", "--api-key", "s3cret")
    try:
        url = srv.base_url + "/audio/transcriptions"
        assert_envelope(httpx.post(url, files={"file": ("a.wav", clip())}), 401, code="invalid_api_key")
        assert_envelope(httpx.post(url, files={"file": ("a.wav", clip())},
                                   headers={"Authorization": "Bearer wrong"}), 401)  # fmt: skip
        assert_envelope(httpx.get(srv.base_url + "/models", headers={"Authorization": "Basic s3cret"}), 401)
        assert httpx.get(srv.url + "/health").status_code == 200  # no auth on health
        ok = OpenAI(base_url=srv.base_url, api_key="s3cret", max_retries=0)
        with open(sample("en", "hello_world"), "rb") as fh:
            assert "hello" in ok.audio.transcriptions.create(model="whisper-tiny.en", file=fh).text.lower()
        bad = OpenAI(base_url=srv.base_url, api_key="nope", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
    finally:
        srv.stop()


def test_no_key_configured_accepts_any_or_none(server: Server) -> None:
    assert httpx.get(server.base_url + "/models").status_code == 200
    assert (
        httpx.get(server.base_url + "/models", headers={"Authorization": "Bearer whatever"}).status_code
        == 200
    )


def test_envelope_is_never_fastapi_detail(server: Server) -> None:
    for r in (httpx.get(server.url + "/nope"), httpx.post(server.url + "/health"),
              httpx.get(server.base_url + "/models/unknown-model")):  # fmt: skip
        assert "detail" not in r.json()
        assert math.isfinite(r.status_code)
