"""Home Assistant's Wyoming door, driven by the `wyoming` library's own client over real TCP on loopback: the
describe/info exchange, Home Assistant's utterance sequence on real speech (several languages, 16 kHz mono and
48 kHz stereo, at once and at real-time pace), server endpointing, hints, every error case, limits, and no leaks."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from wyoming.asr import Transcribe
from wyoming.audio import AudioChunk, AudioStart
from wyoming.client import AsyncTcpClient
from wyoming.event import Event, async_read_event
from wyoming.info import Describe, Info

from tests.conftest import (
    Server,
    free_port,
    metric,
    needs_espeak,
    reference,
    sample,
    speak,
    start_server,
    wer,
)
from tests.wyoming_client import read_pcm, transcribe

HOST = "127.0.0.1"


def run(coro):
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def door(hf_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, int]]:
    """whisper-base (default) and whisper-tiny.en with the Wyoming port open; short limits to test them."""
    port = free_port()
    srv = start_server(
        hf_home, tmp_path_factory.mktemp("logs"), "--model", "whisper-base,whisper-tiny.en",
        "--wyoming-port", str(port), "--realtime-max-buffer-seconds", "20", "--wyoming-idle-timeout", "4",
    )  # fmt: skip
    yield srv, port
    srv.stop()


@pytest.fixture(scope="module")
def command(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A spoken voice command (espeak-ng), 16 kHz mono."""
    if subprocess.run(["which", "espeak-ng"], capture_output=True).returncode:
        pytest.skip("espeak-ng is not installed")
    folder = tmp_path_factory.mktemp("wyoming")
    raw = speak(
        "Turn on the kitchen lights and set the thermostat to twenty one degrees.", folder / "raw.wav"
    )
    out = folder / "command.wav"
    subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(out)], check=True)
    return out


def file_api_text(server: Server, path: Path, language: str | None = None) -> str:
    form = {"model": "whisper-base", **({"language": language} if language else {})}
    with path.open("rb") as f:
        response = httpx.post(
            server.base_url + "/audio/transcriptions", data=form, files={"file": f}, timeout=120
        )
    response.raise_for_status()
    return response.json()["text"]


def wyoming_connections(server: Server) -> float:
    return metric(server, "open_stt_wyoming_connections")


def wait_until(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_describe_lists_the_loaded_models_with_their_languages(door):
    _, port = door

    async def scenario() -> Info:
        async with AsyncTcpClient(HOST, port) as client:
            await client.write_event(Describe().event())
            event = await client.read_event()
            assert event is not None
            return Info.from_event(event)

    info = run(scenario())
    assert len(info.asr) == 1
    program = info.asr[0]
    assert program.installed and program.version and program.description and program.attribution.name
    assert program.supports_transcript_streaming is True
    assert program.requires_external_vad is True  # endpointing is off on this server
    models = {m.name: m for m in program.models}
    assert set(models) == {"whisper-base", "whisper-tiny.en"}
    assert models["whisper-tiny.en"].languages == ["en"]
    assert {"en", "fr", "es", "ja", "zh"} <= set(models["whisper-base"].languages)
    assert models["whisper-base"].attribution.url.endswith("Systran/faster-whisper-base")
    assert all(m.installed for m in models.values())


@pytest.mark.parametrize(
    ("lang", "name"),
    [
        ("en", "quick_brown_fox"),
        ("es", "pangrama"),
        ("fr", "pangrama"),
        ("it", "pangrama"),
        ("pt", "ola_mundo"),
    ],
)
def test_home_assistant_sequence_on_real_speech(door, lang: str, name: str):
    server, port = door
    path = sample(lang, name)
    if not path.exists():
        pytest.skip(f"no {lang}/{name} clip")
    pcm, rate, width, channels = read_pcm(path)
    answer = run(transcribe(HOST, port, pcm, rate, width, channels, request=Transcribe(language=lang)))
    kinds = [e.type for _, e in answer.events]
    assert kinds[0] == "transcript-start" and kinds[-2:] == ["transcript-stop", "transcript"], kinds
    assert set(kinds[1:-2]) == {"transcript-chunk"}
    assert "".join(answer.chunks) == answer.text
    assert answer.of("transcript")[-1].data["language"] == lang
    # the same engine call as the file API's on the same clip (the PCM is 16-bit here: allow a word or so)
    assert wer(file_api_text(server, path, lang), answer.text) <= 0.2, answer.text
    assert wer(reference(lang, name), answer.text) <= 0.6, answer.text


def test_no_transcribe_goes_to_the_default_model_and_detects_the_language(door):
    server, port = door
    pcm, rate, width, channels = read_pcm(sample("es", "conteo"))

    async def scenario():
        async with AsyncTcpClient(HOST, port) as client:
            await client.write_event(AudioStart(rate=rate, width=width, channels=channels).event())
            for at in range(0, len(pcm), 2048):
                await client.write_event(AudioChunk(rate=rate, width=width, channels=channels,
                                                    audio=pcm[at : at + 2048]).event())  # fmt: skip
            from wyoming.audio import AudioStop

            await client.write_event(AudioStop().event())
            while True:
                event = await client.read_event()
                assert event is not None
                if event.type == "transcript":
                    return event.data

    data = run(scenario())
    assert data["language"] == "es"  # whisper-base (the default) detected it; tiny.en could not
    assert wer(file_api_text(server, sample("es", "conteo")), data["text"]) <= 0.2, data


def test_48k_stereo_and_8bit_audio_are_converted(door, command: Path, tmp_path: Path):
    _, port = door
    stereo = tmp_path / "stereo.wav"
    subprocess.run(["sox", str(command), "-r", "48000", "-c", "2", "-b", "16", str(stereo)], check=True)
    narrow = tmp_path / "u8.wav"
    # -D: no dither, so the 8-bit audio is the same in every run
    subprocess.run(["sox", "-D", str(command), "-r", "22050", "-c", "1", "-b", "8", "-e", "unsigned", str(narrow)],
                   check=True)  # fmt: skip
    for path in (stereo, narrow):
        pcm, rate, width, channels = read_pcm(path)
        answer = run(transcribe(HOST, port, pcm, rate, width, channels,
                                request=Transcribe(name="whisper-tiny.en")))  # fmt: skip
        assert (
            wer("Turn on the kitchen lights and set the thermostat to twenty one degrees.", answer.text)
            <= 0.2
        ), (path.name, answer.events)


def test_words_arrive_while_the_speaker_talks(door, command: Path):
    """At real-time pace with Home Assistant's trailing silence: transcript-chunks before audio-stop, append-only,
    joined equal to the final text, and the final follows audio-stop quickly (its decode began in the silence)."""
    server, port = door
    pcm, rate, width, channels = read_pcm(command)
    before = metric(
        server, "open_stt_wyoming_utterances_total", model="whisper-tiny.en", outcome="transcribed"
    )
    answer = run(transcribe(HOST, port, pcm, rate, width, channels, request=Transcribe(name="whisper-tiny.en"),
                            realtime=True, trailing_silence_s=0.5))  # fmt: skip
    first_chunk = answer.first_at("transcript-chunk")
    assert first_chunk is not None and first_chunk < answer.audio_stop_at, answer.events
    early = [e for t, e in answer.events if e.type == "transcript-chunk" and t < answer.audio_stop_at]
    assert early, "no words before audio-stop"
    assert "".join(answer.chunks) == answer.text
    assert wer("Turn on the kitchen lights and set the thermostat to twenty one degrees.", answer.text) <= 0.2
    assert (
        answer.first_at("transcript") >= answer.audio_stop_at
    )  # speed after audio-stop: the benchmark's job
    after = metric(
        server, "open_stt_wyoming_utterances_total", model="whisper-tiny.en", outcome="transcribed"
    )
    assert after == before + 1
    assert metric(server, "open_stt_wyoming_audio_seconds_total", model="whisper-tiny.en") > 0
    assert metric(server, "open_stt_wyoming_latency_seconds_count", model="whisper-tiny.en") >= 1


@needs_espeak
def test_names_bias_recognition(door, tmp_path: Path):
    """A rare name is spelled right only with the hint (Whisper's prompt and hotwords)."""
    _, port = door
    raw = speak("Send a message to Siobhan.", tmp_path / "raw.wav")
    clip = tmp_path / "name.wav"
    subprocess.run(["sox", str(raw), "-r", "16000", str(clip)], check=True)
    pcm, rate, width, channels = read_pcm(clip)
    for model in ("whisper-tiny.en", "whisper-base"):
        plain = run(transcribe(HOST, port, pcm, rate, width, channels,
                               request=Transcribe(name=model, language="en")))  # fmt: skip
        hinted = run(transcribe(HOST, port, pcm, rate, width, channels,
                                request=Transcribe(name=model, language="en", transcript_names=["Siobhan"],
                                                   transcript_terms=["message"])))  # fmt: skip
        assert "siobhan" not in plain.text.lower(), plain.text
        assert "Siobhan" in hinted.text, hinted.text


def test_four_clients_at_once(door, command: Path):
    server, port = door
    pcm, rate, width, channels = read_pcm(command)
    clips = [
        (pcm, rate, width, channels, "whisper-tiny.en"),
        (pcm, rate, width, channels, "whisper-base"),
    ] * 2

    async def scenario():
        return await asyncio.gather(
            *(transcribe(HOST, port, p, r, w, c, request=Transcribe(name=m), realtime=True, trailing_silence_s=0.5)
              for p, r, w, c, m in clips)
        )  # fmt: skip

    for answer in run(scenario()):
        assert answer.error is None
        assert (
            wer("Turn on the kitchen lights and set the thermostat to twenty one degrees.", answer.text)
            <= 0.2
        )
        assert "".join(answer.chunks) == answer.text
    wait_until(lambda: wyoming_connections(server) == 0)


def _error_of(port: int, *events, pcm_format=(16000, 2, 1)) -> dict:
    async def scenario():
        async with AsyncTcpClient(HOST, port) as client:
            for event in events:
                await client.write_event(event.event() if hasattr(event, "event") else event)
            while True:
                event = await asyncio.wait_for(client.read_event(), 30)
                assert event is not None, "the connection closed without an error event"
                if event.type == "error":
                    closed = await asyncio.wait_for(client.read_event(), 10)
                    assert closed is None, "the connection stays open after an error"
                    return event.data

    return run(scenario())


def test_bad_requests_get_an_error_event_then_the_end(door):
    server, port = door
    chunk = AudioChunk(rate=16000, width=2, channels=1, audio=b"\0" * 2048)
    cases = {
        "model_not_found": [Transcribe(name="whisper-huge-v9")],
        "unsupported_language": [Transcribe(name="whisper-tiny.en", language="fr")],
        "audio_not_started": [Transcribe(), chunk],
    }
    for code, events in cases.items():
        data = _error_of(port, *events)
        assert data["code"] == code and data["text"], data
    assert "whisper-huge-v9" in _error_of(port, Transcribe(name="whisper-huge-v9"))["text"]
    assert "xx" in _error_of(port, Transcribe(language="xx"))["text"]
    for rate, width, channels in ((1, 2, 1), (16000, 3, 1), (16000, 2, 0), (16000, 2, 1000), (10**9, 2, 1)):
        data = _error_of(port, Transcribe(), AudioStart(rate=rate, width=width, channels=channels))
        assert data["code"] == "invalid_audio", (rate, width, channels, data)
    assert httpx.get(server.url + "/health", timeout=5).status_code == 200


def _raw_exchange(port: int, payload: bytes) -> list[Event]:
    """Bytes straight onto the socket; the events the server answers with until it closes, read by the library."""
    with socket.create_connection((HOST, port), timeout=30) as sock:
        sock.sendall(payload)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk

    async def parse() -> list[Event]:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        events = []
        while (event := await async_read_event(reader)) is not None:
            events.append(event)
        return events

    return run(parse())


def test_malformed_and_oversized_events_are_errors_not_crashes(door):
    server, port = door
    for payload in (b"this is not json\n", b"[1, 2, 3]\n", b'{"data": {}}\n', b'{"type": "x"' + b" " * 200_000 + b"}\n",
                    b'{"type": "audio-chunk", "payload_length": 999999999}\n'):  # fmt: skip
        events = _raw_exchange(port, payload)
        assert [(e.type, e.data.get("code")) for e in events] == [("error", "invalid_event")], (
            payload[:40],
            events,
        )
    assert httpx.get(server.url + "/health", timeout=5).status_code == 200
    wait_until(lambda: wyoming_connections(server) == 0)


def test_an_utterance_over_the_buffer_limit_is_an_error(door):
    _, port = door
    silence = np.zeros(16000 * 25, dtype=np.int16).tobytes()  # the door's server holds at most 20 s
    answer = run(transcribe(HOST, port, silence, request=Transcribe(name="whisper-tiny.en")))
    assert answer.error is not None and answer.error.code == "audio_too_long", answer.events
    assert "20" in answer.error.text


def test_idle_connection_is_closed_with_an_error(door):
    _, port = door
    events = _raw_exchange(port, b"")  # the server closes the silent connection itself, or this would hang
    assert [(e.type, e.data.get("code")) for e in events] == [("error", "idle_timeout")], events


def test_a_client_that_vanishes_mid_utterance_leaves_nothing_behind(door, command: Path):
    server, port = door
    pcm, *_ = read_pcm(command)

    async def vanish():
        _, writer = await asyncio.open_connection(HOST, port)
        from wyoming.event import async_write_event

        await async_write_event(Transcribe(name="whisper-base").event(), writer)
        await async_write_event(AudioStart(rate=16000, width=2, channels=1).event(), writer)
        for at in range(0, len(pcm) // 2, 2048):
            await async_write_event(AudioChunk(rate=16000, width=2, channels=1, audio=pcm[at : at + 2048]).event(),
                                    writer)  # fmt: skip
        writer.write(b'{"type": "audio-chunk", "payload_length": 2048}\n' + b"\0" * 100)  # torn mid-event
        await writer.drain()
        writer.close()

    for _ in range(3):
        run(vanish())
    wait_until(lambda: wyoming_connections(server) == 0)
    wait_until(
        lambda: metric(server, "open_stt_running") == 0 and metric(server, "open_stt_queue_depth") == 0
    )
    # the slots are free again: the model still takes as many streams as before
    answer = run(transcribe(HOST, port, pcm, request=Transcribe(name="whisper-base")))
    assert answer.error is None and answer.text


def test_endpointing_limits_and_the_api_key_warning(hf_home: Path, tmp_path: Path, command: Path):
    """--wyoming-endpointing: the server ends the utterance when the speaker stops (before audio-stop); the
    realtime session limit is shared per model; --api-key cannot protect Wyoming, and the log says so."""
    port = free_port()
    server = start_server(hf_home, tmp_path, "--model", "whisper-tiny.en", "--wyoming-port", str(port),
                          "--wyoming-host", HOST, "--wyoming-endpointing", "true", "--realtime-max-sessions", "1",
                          "--api-key", "secret")  # fmt: skip
    try:
        assert "--api-key does not protect the Wyoming port" in server.log()
        assert "--wyoming-host" in server.log()

        async def describe() -> Info:
            async with AsyncTcpClient(HOST, port) as client:
                await client.write_event(Describe().event())
                return Info.from_event(await client.read_event())

        assert run(describe()).asr[0].requires_external_vad is False

        pcm, rate, width, channels = read_pcm(command)
        answer = run(transcribe(HOST, port, pcm, rate, width, channels, realtime=True, trailing_silence_s=4.0,
                                request=Transcribe(vad_sensitivity="aggressive")))  # fmt: skip
        # the client stops sending once the transcript is in: audio-stop (after 4 s of silence) was never needed
        assert answer.audio_stop_at == 0.0, "audio-stop was needed: the server did not end the utterance"
        assert (
            wer("Turn on the kitchen lights and set the thermostat to twenty one degrees.", answer.text)
            <= 0.2
        )

        async def two_at_once():
            slow = asyncio.create_task(transcribe(HOST, port, pcm, realtime=True, trailing_silence_s=1.0))
            await asyncio.sleep(1.0)
            second = await transcribe(HOST, port, pcm)
            return await slow, second

        first, second = run(two_at_once())
        assert first.error is None and first.text
        assert second.error is not None and second.error.code == "session_limit_reached"
    finally:
        server.stop()


def _mdns_reaches_this_machine() -> bool:
    """A service announced here can be looked up here: multicast DNS works on this machine's interfaces."""
    from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

    async def probe() -> bool:
        announcer, asker = AsyncZeroconf(), AsyncZeroconf()
        name = f"probe-{uuid.uuid4().hex[:8]}._probe._tcp.local."
        info = AsyncServiceInfo("_probe._tcp.local.", name, addresses=[socket.inet_aton(HOST)], port=9)
        try:
            await announcer.async_register_service(info)
            return await AsyncServiceInfo("_probe._tcp.local.", name).async_request(asker.zeroconf, 3000)
        finally:
            await announcer.async_close()
            await asker.async_close()

    try:
        return run(probe())
    except OSError:
        return False


def test_zeroconf_announces_the_port_home_assistant_discovers(hf_home: Path, tmp_path: Path):
    """--wyoming-zeroconf NAME: the `_wyoming._tcp` service Home Assistant's discovery looks for, at the
    listener's address and port (a Wyoming `describe` there answers), and withdrawn when the server stops."""
    from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

    if not _mdns_reaches_this_machine():
        pytest.skip("multicast DNS does not reach this machine's own sockets")
    name = f"open-stt-test-{uuid.uuid4().hex[:8]}"
    port = free_port()
    server = start_server(hf_home, tmp_path, "--model", "whisper-tiny.en", "--wyoming-port", str(port),
                          "--wyoming-host", HOST, "--wyoming-zeroconf", name)  # fmt: skip

    async def look_up() -> AsyncServiceInfo | None:
        asker = AsyncZeroconf()
        try:
            info = AsyncServiceInfo("_wyoming._tcp.local.", f"{name}._wyoming._tcp.local.")
            return info if await info.async_request(asker.zeroconf, 3000) else None
        finally:
            await asker.async_close()

    try:
        found = run(look_up())
        assert found is not None and found.port == port and found.parsed_addresses() == [HOST]

        async def describe() -> Info:
            async with AsyncTcpClient(found.parsed_addresses()[0], found.port) as client:
                await client.write_event(Describe().event())
                return Info.from_event(await client.read_event())

        assert [m.name for m in run(describe()).asr[0].models] == ["whisper-tiny.en"]
    finally:
        server.stop()
    assert run(look_up()) is None  # withdrawn
