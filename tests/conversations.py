"""Multi-speaker recordings with known turns, built from espeak-ng voices and the recorded clips we have."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from open_stt_server.audio import decode_audio
from tests.conftest import SAMPLES

SAMPLE_RATE = 16_000

# espeak-ng voices the GE2E encoder tells apart (window similarity between them ≤ 0.62, within each ≈ 0.8):
# a US man, a US woman, a Scottish woman.
VOICES = ("en-us", "en-us+f4", "en-gb-scotland+f5")

LINES = (
    "Good morning, thanks for joining the call today.",
    "Happy to be here. Shall we start with the budget?",
    "Yes, the numbers for the third quarter came in higher than we expected.",
    "That is good news. What drove the increase?",
    "Mostly the new contracts in the north region, and lower shipping costs.",
    "I see. And what is the forecast for next year?",
    "We expect steady growth, perhaps eight percent.",
    "Great, let us review the hiring plan next.",
    "We need two engineers and one designer before the summer.",
    "Can we afford that with the current budget?",
    "Only if the new contracts are signed by March.",
    "Then let us make that our first priority.",
)


@dataclass(frozen=True)
class Turn:
    start: float
    end: float
    speaker: str
    text: str


@dataclass(frozen=True)
class Conversation:
    samples: np.ndarray
    turns: tuple[Turn, ...]

    @property
    def duration(self) -> float:
        return len(self.samples) / SAMPLE_RATE

    @property
    def speakers(self) -> list[str]:
        return list(dict.fromkeys(t.speaker for t in self.turns))

    def speaker_at(self, t: float) -> str | None:
        for turn in self.turns:
            if turn.start <= t <= turn.end:
                return turn.speaker
        return None

    def write(self, path: Path) -> Path:
        pcm = (np.clip(self.samples, -1, 1) * 32767).astype("<i2").tobytes()
        header = (
            b"RIFF" + (36 + len(pcm)).to_bytes(4, "little") + b"WAVEfmt "
            + (16).to_bytes(4, "little") + (1).to_bytes(2, "little") + (1).to_bytes(2, "little")
            + SAMPLE_RATE.to_bytes(4, "little") + (SAMPLE_RATE * 2).to_bytes(4, "little")
            + (2).to_bytes(2, "little") + (16).to_bytes(2, "little") + b"data" + len(pcm).to_bytes(4, "little")
        )  # fmt: skip
        path.write_bytes(header + pcm)
        return path


def espeak(text: str, voice: str, speed: int = 160) -> np.ndarray:
    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text], capture_output=True, check=True
    ).stdout
    return decode_audio(wav, 600).samples


def clip(lang: str, name: str) -> np.ndarray:
    return decode_audio((SAMPLES / lang / f"{name}.wav").read_bytes(), 600).samples


def build(pieces: list[tuple[str, str, np.ndarray]], gap_s: float = 0.5) -> Conversation:
    """(speaker, text, samples) in order, `gap_s` of silence between turns (0: back to back)."""
    out, turns, at = [], [], 0.0
    gap = np.zeros(int(SAMPLE_RATE * gap_s), dtype=np.float32)
    for i, (speaker, text, samples) in enumerate(pieces):
        if i and gap_s:
            out.append(gap)
            at += gap_s
        out.append(samples)
        turns.append(Turn(round(at, 3), round(at + len(samples) / SAMPLE_RATE, 3), speaker, text))
        at += len(samples) / SAMPLE_RATE
    return Conversation(np.concatenate(out), tuple(turns))


def meeting(voices: tuple[str, ...] = VOICES, lines: tuple[str, ...] = LINES, gap_s: float = 0.5,
            rounds: int = 1) -> Conversation:  # fmt: skip
    """The lines spoken in turn by `voices`, `rounds` times over."""
    pieces = []
    for r in range(rounds):
        for i, line in enumerate(lines):
            voice = voices[(i + r) % len(voices)]
            pieces.append((voice, line, espeak(line, voice)))
    return build(pieces, gap_s)


def recorded(gap_s: float = 0.6) -> Conversation:
    """Three recorded voices (pytest-audioeval's English, French and Chinese speakers), taking turns."""
    order = [
        ("en", "quick_brown_fox"), ("fr", "pangrama"), ("zh", "pangrama"), ("en", "counting"),
        ("fr", "comptage"), ("zh", "jishu"), ("en", "hello_world"), ("fr", "bonjour_monde"),
    ]  # fmt: skip
    pieces = [(lang, name, clip(lang, name)) for lang, name in order]
    return build(pieces, gap_s)
