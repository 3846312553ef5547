"""WS /v1/realtime, event by event, on real weights: both dialects, server VAD and manual commits, clear, empty
commits, G.711, resampling, live partials, bad audio, auth, limits and timeouts."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json

import httpx
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from open_stt_server.realtime.audio import InputAudio, InputFormat
from tests.conftest import Server, assert_deltas_tell, metric, needs_espeak, needs_ffmpeg, start_server, wer
from tests.conversations import VOICES, Conversation, build, espeak, meeting
from tests.realtime_client import (
    g711,
    open_session,
    partials_turn,
    pcm16,
    silence,
    transcription_session,
    url,
)

pytestmark = needs_espeak
TINY = transcription_session(transcription={"model": "whisper-tiny.en"})


def run(coro):
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def talk() -> Conversation:
    """Three turns by three voices with 0.8 s pauses (longer than the default 500 ms of silence)."""
    lines = (
        "Good morning, thanks for joining the call today.",
        "Happy to be here. Shall we start with the budget?",
        "Yes, the numbers for the third quarter came in higher than we expected.",
    )
    return meeting(lines=lines, gap_s=0.8)


def test_server_vad_turns_in_order_with_true_offsets(server: Server, talk: Conversation):
    async def scenario():
        s = await open_session(server)
        created = s.events[0]["session"]
        assert created["type"] == "transcription" and created["object"] == "realtime.transcription_session"
        assert created["audio"]["input"]["turn_detection"]["type"] == "server_vad"
        assert created["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
        await s.send("session.update", session=TINY)
        updated = await s.next("session.updated")
        assert updated["session"]["audio"]["input"]["transcription"]["model"] == "whisper-tiny.en"
        await s.append(pcm16(np.concatenate([talk.samples, silence(1.5)])))
        completed = await s.until("conversation.item.input_audio_transcription.completed", 3)
        await s.until("conversation.item.done", 3)
        await s.ws.close()
        return s, completed

    s, completed = run(scenario())
    starts, stops = s.of("input_audio_buffer.speech_started"), s.of("input_audio_buffer.speech_stopped")
    committed = s.of("input_audio_buffer.committed")
    assert len(starts) == len(stops) == len(committed) == 3
    for turn, start, stop in zip(talk.turns, starts, stops, strict=True):
        # true offsets into the session's audio: the start includes the 300 ms prefix padding, the stop the
        # 500 ms of silence that ended the turn
        assert turn.start * 1000 - 400 <= start["audio_start_ms"] <= turn.start * 1000 + 300, (turn, start)
        assert turn.end * 1000 <= stop["audio_end_ms"] <= turn.end * 1000 + 900, (turn, stop)
    items = [c["item_id"] for c in committed]
    assert [c["item_id"] for c in completed] == items  # completions in audio order
    assert [c["previous_item_id"] for c in committed] == [None, *items[:-1]]
    assert [e["item_id"] for e in starts] == items
    for item, turn, done in zip(items, talk.turns, completed, strict=True):
        kinds = [
            e["type"] for e in s.events if e.get("item_id") == item or e.get("item", {}).get("id") == item
        ]
        assert kinds.index("input_audio_buffer.speech_started") < kinds.index("input_audio_buffer.committed")
        assert kinds.index("input_audio_buffer.committed") < kinds.index("conversation.item.added")
        assert kinds.index("conversation.item.added") < kinds.index("conversation.item.done")
        deltas = [
            e["delta"]
            for e in s.of("conversation.item.input_audio_transcription.delta")
            if e["item_id"] == item
        ]
        assert_deltas_tell(deltas, done["transcript"])
        assert done["usage"]["type"] == "duration" and 1 < done["usage"]["seconds"] < 8
        assert wer(turn.text, done["transcript"]) < 0.35, done["transcript"]
    assert all(e["event_id"].startswith("event_") for e in s.events)
    assert metric(server, "open_stt_realtime_turns_total", model="whisper-tiny.en") >= 3
    assert "realtime session sess_" in server.log()


def test_update_changes_only_its_fields_and_echoes_what_it_cannot_honour(server: Server):
    async def scenario():
        s = await open_session(server)
        await s.send("session.update", session=transcription_session(
            transcription={"model": "gpt-4o-mini-transcribe", "language": "en", "keywords": ["Acme"], "delay": "high"},
            turn_detection={"type": "server_vad", "silence_duration_ms": 350, "prefix_padding_ms": 600,
                            "create_response": True, "idle_timeout_ms": 5000},
            noise_reduction={"type": "far_field"},
        ), include=["item.input_audio_transcription.logprobs"])  # fmt: skip
        first = (await s.next("session.updated"))["session"]
        await s.send("session.update", session=transcription_session(turn_detection={"threshold": 0.6}))
        second = (await s.next("session.updated"))["session"]
        await s.ws.close()
        return s, first, second

    s, first, second = run(scenario())
    assert not s.of("error")
    audio = second["audio"]["input"]
    assert audio["transcription"] == {"model": "gpt-4o-mini-transcribe", "language": "en", "prompt": "",
                                      "keywords": ["Acme"], "delay": "high"}  # fmt: skip
    assert audio["turn_detection"] == {"type": "server_vad", "threshold": 0.6, "prefix_padding_ms": 600,
                                       "silence_duration_ms": 350, "create_response": True,
                                       "idle_timeout_ms": 5000}  # fmt: skip
    assert audio["noise_reduction"] == {"type": "far_field"}
    assert first["audio"]["input"]["turn_detection"]["threshold"] == 0.5


def test_manual_commit_clear_and_empty_commit(server: Server, talk: Conversation):
    first, second = talk.turns[0], talk.turns[1]

    def part(turn) -> bytes:
        return pcm16(talk.samples[int(turn.start * 16000) : int(turn.end * 16000)])

    async def scenario():
        s = await open_session(server, "intent=transcription&model=whisper-tiny.en")
        await s.send("session.update", session=transcription_session(turn_detection=None))
        updated = await s.next("session.updated")
        assert updated["session"]["audio"]["input"]["turn_detection"] is None
        await s.send("input_audio_buffer.commit", event_id="evt_empty")
        empty = await s.next("error")
        await s.append(part(first))
        await s.send("input_audio_buffer.clear")
        await s.next("input_audio_buffer.cleared")
        await s.send("input_audio_buffer.commit")
        after_clear = await s.next("error")
        await s.append(part(second))
        await s.send("input_audio_buffer.commit")
        committed = await s.next("input_audio_buffer.committed")
        done = await s.next("conversation.item.input_audio_transcription.completed")
        await s.ws.close()
        return s, empty, after_clear, committed, done

    s, empty, after_clear, committed, done = run(scenario())
    assert empty["error"]["code"] == "input_audio_buffer_commit_empty"
    assert empty["error"]["event_id"] == "evt_empty" and empty["error"]["type"] == "invalid_request_error"
    assert "buffer too small" in empty["error"]["message"]
    assert after_clear["error"]["code"] == "input_audio_buffer_commit_empty"
    assert not s.of("input_audio_buffer.speech_started")
    assert done["item_id"] == committed["item_id"]
    assert wer(second.text, done["transcript"]) < 0.35, done["transcript"]  # the cleared turn is gone


def test_beta_dialect_with_g711(server: Server, talk: Conversation):
    turn = talk.turns[0]  # telephone-band audio: the clearest voice
    audio = talk.samples[int(turn.start * 16000) : int(turn.end * 16000)]

    async def scenario(codec: str, name: str):
        s = await open_session(server, additional_headers={"OpenAI-Beta": "realtime=v1"})
        assert "input_audio_format" in s.events[0]["session"]  # the beta shape from the start
        await s.send("transcription_session.update", session={
            "input_audio_format": name, "input_audio_transcription": {"model": "whisper-tiny.en"},
            "turn_detection": None, "input_audio_noise_reduction": {"type": "near_field"},
        })  # fmt: skip
        updated = await s.next("transcription_session.updated")
        await s.append(g711(np.concatenate([audio, silence(0.3)]), codec), chunk_bytes=800)
        await s.send("input_audio_buffer.commit")
        created = await s.next("conversation.item.created")
        done = await s.next("conversation.item.input_audio_transcription.completed")
        await s.ws.close()
        return s, updated, created, done

    for codec, name in (("pcm_mulaw", "g711_ulaw"), ("pcm_alaw", "g711_alaw")):
        s, updated, created, done = run(scenario(codec, name))
        session = updated["session"]
        assert session["input_audio_format"] == name
        assert session["input_audio_transcription"]["model"] == "whisper-tiny.en"
        assert session["turn_detection"] is None and session["input_audio_noise_reduction"] == {
            "type": "near_field"
        }
        assert created["item"]["role"] == "user" and created["item"]["type"] == "message"
        assert not s.of("conversation.item.added") and not s.of("error")
        assert wer(turn.text, done["transcript"]) < 0.35, (name, done["transcript"])


def test_flat_beta_session_update_is_understood(server: Server):
    async def scenario():
        s = await open_session(server)
        await s.send("session.update", session={"input_audio_format": "g711_ulaw", "turn_detection": None})
        updated = await s.next("session.updated")
        await s.ws.close()
        return updated

    session = run(scenario())["session"]
    assert session["input_audio_format"] == "g711_ulaw" and session["turn_detection"] is None


@pytest.mark.parametrize("rate", [16000, 24000, 48000])
def test_pcm_rates(server: Server, talk: Conversation, rate: int):
    turn = talk.turns[0]
    audio = talk.samples[int(turn.start * 16000) : int(turn.end * 16000)]

    async def scenario():
        s = await open_session(server, "intent=transcription&model=whisper-tiny.en")
        await s.send("session.update", session=transcription_session(
            format={"type": "audio/pcm", "rate": rate}, turn_detection=None))  # fmt: skip
        await s.next("session.updated")
        await s.append(pcm16(audio, rate), chunk_bytes=rate // 10 * 2)
        await s.send("input_audio_buffer.commit")
        done = await s.next("conversation.item.input_audio_transcription.completed")
        await s.ws.close()
        return done

    done = run(scenario())
    assert wer(turn.text, done["transcript"]) < 0.35, done["transcript"]
    assert done["usage"]["seconds"] == pytest.approx(turn.end - turn.start, abs=0.05)


def test_streaming_resampler_has_no_seams():
    """Chunked decoding equals decoding the whole stream at once: no clicks where chunks meet."""
    tone = np.sin(2 * np.pi * 440 * np.arange(24000) / 24000).astype(np.float32) * 0.5
    raw = pcm16(tone, 16000)  # any PCM16 stream; read as 24 kHz below
    whole, _ = InputAudio(InputFormat("audio/pcm", 24000)).decode(base64.b64encode(raw).decode())
    chunked_input = InputAudio(InputFormat("audio/pcm", 24000))
    parts = [
        chunked_input.decode(base64.b64encode(raw[i : i + 962]).decode())[0] for i in range(0, len(raw), 962)
    ]
    chunked = np.concatenate(parts)
    n = min(len(whole), len(chunked))
    assert n > 0.9 * len(whole)
    assert np.abs(whole[:n] - chunked[:n]).max() < 1e-4


def test_g711_tables_match_ffmpeg():
    from open_stt_server.realtime.audio import ALAW, MULAW

    ramp = np.linspace(-0.9, 0.9, 16000).astype(np.float32)
    for codec, table in (("pcm_mulaw", MULAW), ("pcm_alaw", ALAW)):
        encoded = g711(ramp, codec)
        import subprocess

        reference = subprocess.run(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", codec.removeprefix("pcm_"), "-ar", "8000",
             "-ac", "1", "-i", "-", "-f", "s16le", "-"],
            input=encoded, capture_output=True, check=True,
        ).stdout  # fmt: skip
        expected = np.frombuffer(reference, dtype="<i2").astype(np.float32) / 32768
        assert np.array_equal(table[np.frombuffer(encoded, dtype=np.uint8)], expected), codec


def test_bad_audio_and_bad_events_keep_the_session_open(server: Server, talk: Conversation):
    turn = talk.turns[0]

    async def scenario():
        s = await open_session(server, "intent=transcription&model=whisper-tiny.en")
        await s.send("input_audio_buffer.append", audio="not base64 at all!!", event_id="e1")
        bad_base64 = await s.next("error")
        await s.send("input_audio_buffer.append", audio=base64.b64encode(b"\x01\x02\x03").decode())
        torn = await s.next("error")
        await s.ws.send("{not json")
        not_json = await s.next("error")
        await s.send("response.create")
        wrong_kind = await s.next("error")
        await s.send("no.such.event")
        unknown = await s.next("error")
        await s.send(
            "session.update", session=transcription_session(transcription={"model": "no-such-model"})
        )
        no_model = await s.next("error")
        await s.send("session.update", session=transcription_session(format={"type": "audio/flac"}))
        bad_format = await s.next("error")
        await s.send("session.update", session=transcription_session(turn_detection={"threshold": 7}))
        bad_threshold = await s.next("error")
        await s.send("session.update", session={"type": "realtime"})
        bad_type = await s.next("error")
        audio = talk.samples[int(turn.start * 16000) : int(turn.end * 16000)]
        await s.append(pcm16(np.concatenate([audio, silence(1)])))
        done = await s.next("conversation.item.input_audio_transcription.completed")
        await s.ws.close()
        return (
            bad_base64,
            torn,
            not_json,
            wrong_kind,
            unknown,
            no_model,
            bad_format,
            bad_threshold,
            bad_type,
            done,
        )

    errors = run(scenario())
    done = errors[-1]
    codes = [e["error"]["code"] for e in errors[:-1]]
    assert codes == ["invalid_audio", "invalid_audio", "invalid_json", "unsupported_event", "unknown_event",
                     "model_not_found", "invalid_value", "invalid_value", "unsupported_session_type"]  # fmt: skip
    assert errors[0]["error"]["event_id"] == "e1"
    assert errors[5]["error"]["param"] == "session.audio.input.transcription.model"
    assert errors[6]["error"]["param"] == "session.audio.input.format.type"
    assert errors[7]["error"]["param"] == "session.audio.input.turn_detection.threshold"
    for e in errors[:-1]:
        assert set(e["error"]) == {"type", "code", "message", "param", "event_id"}
    assert wer(turn.text, done["transcript"]) < 0.35  # the session went on, with its model unchanged


def test_unknown_intent_is_an_error_then_close(server: Server):
    async def scenario():
        s = await open_session(server, "intent=conversation")
        return s

    with pytest.raises(AssertionError) as caught:  # the first event is the error, not session.created
        run(scenario())
    assert "unsupported_intent" in str(caught.value)


def test_unknown_url_model_is_reported_and_the_default_serves(server: Server):
    async def scenario():
        s = await open_session(server, "intent=transcription&model=nope")
        error = await s.next("error")
        await s.ws.close()
        return s.events[0], error

    created, error = run(scenario())
    assert error["error"]["code"] == "model_not_found" and error["error"]["param"] == "model"
    assert created["session"]["audio"]["input"]["transcription"]["model"] == "nope"


def test_languages_are_read_as_the_file_api_reads_them(server: Server, talk: Conversation):
    """Names and regional codes become Whisper's codes; a language the model cannot take is an error naming the
    field (the session goes on), never a session whose every turn then fails."""
    turn = talk.turns[0]
    audio = talk.samples[int(turn.start * 16000) : int(turn.end * 16000)]

    def language(s) -> str | None:
        return s["session"]["audio"]["input"]["transcription"]["language"]

    async def scenario():
        s = await open_session(server, "intent=transcription&model=whisper-tiny.en&language=de")
        url_error = await s.next("error")
        await s.send("session.update", session=transcription_session(
            transcription={"model": "whisper-base", "language": "French"}, turn_detection=None))  # fmt: skip
        french = await s.next("session.updated")
        await s.send("session.update", session=transcription_session(transcription={"language": "xx"}))
        unknown = await s.next("error")
        await s.send(
            "session.update", session=transcription_session(transcription={"model": "whisper-tiny.en"})
        )
        english_only = await s.next("error")  # the session's language is still French
        await s.send("session.update", session=transcription_session(transcription={"language": "en-US"}))
        english = await s.next("session.updated")
        await s.append(pcm16(audio))
        await s.send("input_audio_buffer.commit")
        done = await s.next("conversation.item.input_audio_transcription.completed")
        await s.ws.close()

        beta = await open_session(server, additional_headers={"OpenAI-Beta": "realtime=v1"})
        await beta.send(
            "transcription_session.update", session={"input_audio_transcription": {"language": "zz"}}
        )
        beta_error = await beta.next("error")
        await beta.ws.close()
        return s, url_error, french, unknown, english_only, english, done, beta_error

    s, url_error, french, unknown, english_only, english, done, beta_error = run(scenario())
    assert url_error["error"]["code"] == "unsupported_language" and url_error["error"]["param"] == "language"
    assert "English-only" in url_error["error"]["message"] and language(s.events[0]) is None
    assert (
        language(french) == "fr"
        and french["session"]["audio"]["input"]["transcription"]["model"] == "whisper-base"
    )
    field = "session.audio.input.transcription.language"
    for error in (unknown, english_only):
        assert error["error"]["code"] == "unsupported_language" and error["error"]["param"] == field
    assert "'xx'" in unknown["error"]["message"] and "English-only" in english_only["error"]["message"]
    assert (
        language(english) == "en"
        and english["session"]["audio"]["input"]["transcription"]["model"] == "whisper-base"
    )
    assert not s.of("conversation.item.input_audio_transcription.failed")
    assert wer(turn.text, done["transcript"]) < 0.35, done["transcript"]
    assert done.get("languages") == [{"code": "en"}]
    assert beta_error["error"]["param"] == "session.input_audio_transcription.language"


def test_live_partials_arrive_while_speaking_and_join_to_the_transcript(server: Server, talk: Conversation):
    turn = talk.turns[2]
    audio = talk.samples[int(turn.start * 16000) : int(turn.end * 16000)]

    s, done = run(partials_turn(server, "whisper-tiny.en", audio))
    item = done["item_id"]
    deltas = [e for e in s.of("conversation.item.input_audio_transcription.delta") if e["item_id"] == item]
    kinds = [e["type"] for e in s.events]
    first_delta = kinds.index("conversation.item.input_audio_transcription.delta")
    assert first_delta < kinds.index("input_audio_buffer.speech_stopped"), "no words before the end of speech"
    assert_deltas_tell([d["delta"] for d in deltas], done["transcript"])
    assert wer(turn.text, done["transcript"]) < 0.4, done["transcript"]


def test_a_long_turn_is_committed_at_a_pause(server: Server):
    words = " ".join(["the quick brown fox jumps over the lazy dog and keeps on running"] * 12)
    long_talk = build([("a", words, espeak(words, VOICES[0], speed=190))])
    assert long_talk.duration > 35

    async def scenario():
        s = await open_session(server, "intent=transcription&model=whisper-tiny.en")
        await s.send(
            "session.update", session=transcription_session(turn_detection={"silence_duration_ms": 1500})
        )
        await s.next("session.updated")
        await s.append(pcm16(np.concatenate([long_talk.samples, silence(2.5)])))
        committed = await s.until("input_audio_buffer.committed", 2)
        await s.until("conversation.item.input_audio_transcription.completed", 2)
        await s.ws.close()
        return s, committed

    s, _ = run(scenario())
    starts = [e["audio_start_ms"] for e in s.of("input_audio_buffer.speech_started")]
    stops = [e["audio_end_ms"] for e in s.of("input_audio_buffer.speech_stopped")]
    assert len(starts) >= 2
    assert all(b - a <= 30_500 for a, b in zip(starts, stops, strict=False))
    assert all(stop <= following for stop, following in zip(stops, starts[1:], strict=False))
    assert all(b > a for a, b in itertools.pairwise(starts))


async def no_sessions(server: Server, timeout: float = 30) -> None:
    """Until the server counts no open realtime session (a closed socket is counted out just after)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while metric(server, "open_stt_realtime_sessions"):
        assert asyncio.get_running_loop().time() < deadline, "a closed session is still counted"
        await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
def guarded_server(hf_home, tmp_path_factory):
    srv = start_server(
        hf_home, tmp_path_factory.mktemp("rt-guarded"), "--model", "whisper-tiny.en", "--api-key", "sekret",
        "--realtime-max-sessions", "1", "--realtime-idle-timeout", "2.5", "--realtime-max-session-seconds", "5",
        "--realtime-max-buffer-seconds", "2", "--realtime-max-message-mb", "0.5",
    )  # fmt: skip
    yield srv
    srv.stop()


def test_auth_is_checked_before_the_socket_opens(guarded_server: Server):
    async def refused(**kwargs) -> InvalidStatus:
        with pytest.raises(InvalidStatus) as caught:
            await open_session(guarded_server, **kwargs)
        return caught.value

    for kwargs in ({}, {"additional_headers": {"Authorization": "Bearer wrong"}},
                   {"subprotocols": ["realtime", "openai-insecure-api-key.wrong"]}):  # fmt: skip
        status = run(refused(**kwargs))
        assert status.response.status_code == 401
        body = json.loads(status.response.body)
        assert body["error"]["code"] == "invalid_api_key" and set(body["error"]) == {
            "message",
            "type",
            "param",
            "code",
        }

    async def accepted():
        by_header = await open_session(guarded_server, additional_headers={"Authorization": "Bearer sekret"})
        await by_header.ws.close()
        await no_sessions(guarded_server)  # this server takes one at a time
        browser = await open_session(
            guarded_server, subprotocols=["realtime", "openai-insecure-api-key.sekret"]
        )
        protocol = browser.ws.subprotocol
        await browser.ws.close()
        return protocol

    assert run(accepted()) == "realtime"


def test_session_limit_idle_timeout_and_session_length(guarded_server: Server):
    auth = {"additional_headers": {"Authorization": "Bearer sekret"}}

    async def scenario():
        await no_sessions(guarded_server)  # the tests before may have just closed theirs
        first = await open_session(guarded_server, **auth)
        with pytest.raises(InvalidStatus) as caught:
            await open_session(guarded_server, **auth)
        refused = caught.value.response
        # idle: no client event for 2.5 s closes the socket (no error event)
        with pytest.raises(ConnectionClosed) as closed:
            await first.next(timeout=10)
        idle_close = closed.value.rcvd
        await no_sessions(guarded_server)
        # length: a client that keeps talking is told the session expired after 5 s, then closed
        second = await open_session(guarded_server, **auth)
        expired = None
        for _ in range(60):
            await second.append(pcm16(silence(0.1)))
            try:
                expired = await second.next("error", timeout=0.2)
                break
            except TimeoutError:
                continue
        with pytest.raises(ConnectionClosed):
            await second.next(timeout=10)
        return refused, idle_close, first.of("error"), expired

    refused, idle_close, idle_errors, expired = run(scenario())
    assert refused.status_code == 429 and json.loads(refused.body)["error"]["code"] == "session_limit_reached"
    assert refused.headers["Retry-After"]
    assert idle_close is not None and idle_close.code == 1001 and not idle_errors
    assert expired is not None and expired["error"]["code"] == "session_expired"


@needs_ffmpeg
def test_openai_sdk_connects_unchanged(server: Server, talk: Conversation):
    from openai import AsyncOpenAI

    async def scenario():
        client = AsyncOpenAI(base_url=server.base_url, api_key="unused")
        events = []
        async with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
            await conn.session.update(session=TINY)
            for i in range(0, len(pcm := pcm16(np.concatenate([talk.samples, silence(1.2)]))), 2400):
                await conn.input_audio_buffer.append(audio=base64.b64encode(pcm[i : i + 2400]).decode())
                await asyncio.sleep(0.05 / 4)  # 50 ms chunks at 4× real time
            async for event in conn:
                events.append(event)
                if event.type == "conversation.item.input_audio_transcription.completed" and sum(
                    e.type == event.type for e in events
                ) == len(talk.turns):
                    break
        return events

    events = run(scenario())
    kinds = [e.type for e in events]
    assert kinds[0] == "session.created" and "error" not in kinds
    done = [e for e in events if e.type == "conversation.item.input_audio_transcription.completed"]
    for turn, event in zip(talk.turns, done, strict=True):
        assert wer(turn.text, event.transcript) < 0.35


def test_metrics_report_sessions(server: Server):
    text = httpx.get(server.url + "/metrics").text
    for name in ("open_stt_realtime_sessions", "open_stt_realtime_turns_total",
                 "open_stt_realtime_turn_latency_seconds_bucket", "open_stt_realtime_audio_seconds_total"):  # fmt: skip
        assert name in text, name
    assert url(server).startswith("ws://")


def test_buffer_and_message_limits(guarded_server: Server, talk: Conversation):
    auth = {"additional_headers": {"Authorization": "Bearer sekret"}}
    turn = talk.turns[0]
    speech = talk.samples[int(turn.start * 16000) : int(turn.end * 16000)]

    async def scenario():
        await no_sessions(guarded_server)
        s = await open_session(guarded_server, **auth)
        await s.send("session.update", session=transcription_session(turn_detection=None))
        await s.next("session.updated")
        await s.append(pcm16(speech))  # 3.3 s without a commit, over the 2 s limit
        too_large = await s.next("error")
        committed = await s.next("input_audio_buffer.committed")
        # at once: this server closes a session after 2.5 s without a client event
        big = base64.b64encode(b"\0" * 600_000).decode()  # one message over 0.5 MB
        await s.ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": big}))
        with pytest.raises(ConnectionClosed) as closed:
            for _ in range(20):  # events still on their way (conversation.item.done), then the close
                await s.next(timeout=10)
        return too_large, committed, closed.value.rcvd

    too_large, committed, close = run(scenario())
    assert too_large["error"]["code"] == "input_audio_buffer_too_large"
    assert committed["item_id"]
    assert close is not None and close.code == 1009  # message too big


def test_semantic_vad_is_server_vad_with_its_eagerness(server: Server, talk: Conversation):
    async def scenario():
        s = await open_session(server, "intent=transcription&model=whisper-tiny.en")
        await s.send("session.update", session=transcription_session(
            turn_detection={"type": "semantic_vad", "eagerness": "high"}))  # fmt: skip
        updated = await s.next("session.updated")
        await s.append(pcm16(np.concatenate([talk.samples, silence(1.0)])))
        done = await s.until("conversation.item.input_audio_transcription.completed", 3)
        await s.ws.close()
        return updated, done

    updated, done = run(scenario())
    assert updated["session"]["audio"]["input"]["turn_detection"] == {
        "type": "semantic_vad",
        "eagerness": "high",
    }
    assert len(done) == 3


def test_include_logprobs(server: Server, talk: Conversation):
    turn = talk.turns[0]
    speech = talk.samples[int(turn.start * 16000) : int(turn.end * 16000)]

    async def scenario():
        s = await open_session(server, "intent=transcription&model=whisper-tiny.en")
        await s.send("session.update", session={**transcription_session(turn_detection=None),
                                                "include": ["item.input_audio_transcription.logprobs"]})  # fmt: skip
        await s.next("session.updated")
        await s.append(pcm16(speech))
        await s.send("input_audio_buffer.commit")
        done = await s.next("conversation.item.input_audio_transcription.completed")
        await s.ws.close()
        return done

    done = run(scenario())
    logprobs = done["logprobs"]
    assert logprobs and all(set(p) == {"token", "logprob", "bytes"} and p["logprob"] <= 0 for p in logprobs)
    assert "".join(p["token"] for p in logprobs).strip() == done["transcript"]
