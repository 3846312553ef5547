"""The voice-agent frameworks' own OpenAI realtime STT plugins, unchanged, against the server on loopback, with
audio at real-time pace in 50 ms frames: LiveKit Agents (`livekit-plugins-openai`) and Pipecat
(`OpenAIRealtimeSTTService`)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tests.conftest import Server, needs_espeak, wer
from tests.conversations import Conversation, meeting
from tests.realtime_client import pcm16, silence

pytestmark = needs_espeak
FRAME_S = 0.05


@pytest.fixture(scope="module")
def two_turns() -> Conversation:
    lines = (
        "Good morning, thanks for joining the call today.",
        "Please send me the report before the meeting.",
    )
    return meeting(voices=("en-us",), lines=lines, gap_s=1.0)


def frames(samples: np.ndarray, rate: int) -> list[bytes]:
    audio = pcm16(samples, rate)
    size = int(rate * FRAME_S) * 2
    return [audio[i : i + size] for i in range(0, len(audio), size)]


def test_livekit_stt_with_its_defaults(server: Server, two_turns: Conversation):
    from livekit import rtc
    from livekit.agents import utils
    from livekit.agents.stt import SpeechEventType
    from livekit.plugins import openai as lk_openai

    async def scenario():
        async with utils.http_context.open():
            stt = lk_openai.STT(use_realtime=True, base_url=server.base_url, api_key="unused")
            stream = stt.stream()
            events, failures = [], []

            async def read():
                try:
                    async for event in stream:
                        events.append(event)
                except (
                    Exception
                ) as exc:  # an `error` event from the server ends LiveKit's stream with APIError
                    failures.append(exc)

            reader = asyncio.create_task(read())
            for chunk in frames(np.concatenate([two_turns.samples, silence(1.0)]), 24000):
                samples = len(chunk) // 2
                stream.push_frame(rtc.AudioFrame(chunk, 24000, 1, samples))
                await asyncio.sleep(FRAME_S)
            for _ in range(200):
                if sum(e.type == SpeechEventType.FINAL_TRANSCRIPT for e in events) >= len(two_turns.turns):
                    break
                await asyncio.sleep(0.1)
            stream.end_input()
            await stream.aclose()
            reader.cancel()
            await stt.aclose()
            return events, failures

    events, failures = asyncio.run(scenario())
    assert not failures, failures
    kinds = [e.type for e in events]
    finals = [e for e in events if e.type == SpeechEventType.FINAL_TRANSCRIPT]
    assert SpeechEventType.START_OF_SPEECH in kinds and SpeechEventType.END_OF_SPEECH in kinds
    assert SpeechEventType.INTERIM_TRANSCRIPT in kinds
    assert len(finals) == len(two_turns.turns)
    said = " ".join(f.alternatives[0].text for f in finals)
    assert wer(" ".join(t.text for t in two_turns.turns), said) < 0.3, said


@pytest.mark.parametrize("server_vad", [False, True], ids=["local-vad-commit", "server-vad"])
def test_pipecat_realtime_stt(server: Server, two_turns: Conversation, server_vad: bool):
    from pipecat.frames.frames import (
        ErrorFrame,
        InputAudioRawFrame,
        TranscriptionFrame,
        VADUserStartedSpeakingFrame,
        VADUserStoppedSpeakingFrame,
    )
    from pipecat.services.openai.stt import OpenAIRealtimeSTTService
    from pipecat.tests.utils import SleepFrame, run_test

    ws_url = server.url.replace("http://", "ws://") + "/v1/realtime"
    kwargs = {"turn_detection": {"type": "server_vad"}} if server_vad else {}
    stt = OpenAIRealtimeSTTService(api_key="unused", base_url=ws_url, **kwargs)
    sent = [SleepFrame(sleep=0.5)]
    rate = 16000
    for turn in two_turns.turns:
        speech = two_turns.samples[int(turn.start * 16000) : int(turn.end * 16000)]
        sent.append(VADUserStartedSpeakingFrame())
        sent += [InputAudioRawFrame(audio=c, sample_rate=rate, num_channels=1) for c in frames(speech, rate)]
        sent.append(VADUserStoppedSpeakingFrame())
        sent += [
            InputAudioRawFrame(audio=c, sample_rate=rate, num_channels=1) for c in frames(silence(1.0), rate)
        ]
        sent.append(SleepFrame(sleep=4.0))

    down, up = asyncio.run(run_test(stt, frames_to_send=sent, start_timeout=10))
    finals = [f for f in down if isinstance(f, TranscriptionFrame)]
    errors = [f for f in [*down, *up] if isinstance(f, ErrorFrame)]
    assert not errors, errors
    assert len(finals) == len(two_turns.turns), [f.text for f in finals]
    said = " ".join(f.text for f in finals)
    assert wer(" ".join(t.text for t in two_turns.turns), said) < 0.3, said
