"""The diarizer on real GE2E weights: our numpy encoder against the reference, and turns on known conversations."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from open_stt_server.diarization import (
    DiarizationRequest,
    KnownSpeaker,
    SpeakerCount,
    SpeakerTurn,
    ge2e_weights,
    load_diarizer,
)
from open_stt_server.diarization.checkpoint import load_legacy_checkpoint
from open_stt_server.diarization.speakers import SegmentLabeller, SpeakerLetters
from open_stt_server.diarization.voice_encoder import PARTIAL_FRAMES, VoiceEncoder, mel_spectrogram
from open_stt_server.transcript import Segment, Word
from tests.conftest import needs_espeak
from tests.conversations import VOICES, Conversation, espeak, meeting, recorded

pytestmark = needs_espeak


@pytest.fixture(scope="module")
def diarizer():
    return load_diarizer("ge2e")


def frame_accuracy(conversation: Conversation, turns: list[SpeakerTurn], step: float = 0.05) -> float:
    """Share of speech time (inside the true turns and a found turn) labelled right, under the best mapping."""
    times = np.arange(0, conversation.duration, step)
    truth = [conversation.speaker_at(t) for t in times]
    found = [next((u.speaker for u in turns if u.start <= t <= u.end), None) for t in times]
    pairs = [(a, b) for a, b in zip(truth, found, strict=True) if a and b]
    keys = sorted({b for _, b in pairs})
    speakers = conversation.speakers + [None] * max(0, len(keys) - len(conversation.speakers))
    best = max(
        sum(1 for a, b in pairs if mapping.get(b) == a)
        for mapping in (
            dict(zip(keys, perm, strict=True)) for perm in itertools.permutations(speakers, len(keys))
        )
    )
    return best / len(pairs)


def test_checkpoint_reader_matches_torch():
    torch = pytest.importorskip("torch")
    path = ge2e_weights()
    ours = load_legacy_checkpoint(path)["model_state"]
    theirs = torch.load(path, map_location="cpu", weights_only=True)["model_state"]
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        assert np.array_equal(ours[key], value.numpy()), key


def test_encoder_matches_resemblyzer():
    """Same mel front end as Resemblyzer (librosa) and the same embeddings as its PyTorch network."""
    torch = pytest.importorskip("torch")
    from resemblyzer import VoiceEncoder as Reference
    from resemblyzer.audio import wav_to_mel_spectrogram

    samples = espeak("The quick brown fox jumps over the lazy dog, twice, for the encoder test.", VOICES[1])
    reference_mel = wav_to_mel_spectrogram(samples)
    mel = mel_spectrogram(samples)
    assert mel.shape == reference_mel.shape
    assert np.abs(mel - reference_mel).max() <= 1e-4 * np.abs(reference_mel).max()

    windows = np.stack(
        [reference_mel[s : s + PARTIAL_FRAMES] for s in range(0, len(mel) - PARTIAL_FRAMES, 50)]
    )
    with torch.no_grad():
        expected = Reference("cpu", verbose=False)(torch.from_numpy(windows)).numpy()
    got = VoiceEncoder(ge2e_weights()).embed_mels(windows)
    assert np.abs(got - expected).max() < 1e-4


CONVERSATIONS = {
    "three espeak voices, pauses": lambda: meeting(gap_s=0.5),
    "three espeak voices, back to back": lambda: meeting(gap_s=0),
    "two espeak voices": lambda: meeting(voices=VOICES[:2]),
    "three recorded voices, pauses": lambda: recorded(0.6),
    "three recorded voices, back to back": lambda: recorded(0),
    "one voice": lambda: meeting(voices=(VOICES[0],)),
}


@pytest.mark.parametrize("name", list(CONVERSATIONS))
def test_turns_follow_the_known_speakers(diarizer, name):
    conversation = CONVERSATIONS[name]()
    turns = diarizer.diarize(conversation.samples, DiarizationRequest())
    assert len({t.speaker for t in turns}) == len(conversation.speakers)
    assert frame_accuracy(conversation, turns) >= 0.9
    assert all(a.end <= b.start for a, b in itertools.pairwise(turns))
    assert turns[0].start >= 0 and turns[-1].end <= conversation.duration + 0.01


def test_speaker_count_hints(diarizer):
    conversation = meeting()

    def count(**hint) -> int:  # fmt: skip
        turns = diarizer.diarize(conversation.samples, DiarizationRequest(SpeakerCount(**hint)))
        return len({t.speaker for t in turns})

    assert count(exact=2) == 2
    assert count(maximum=2) == 2
    assert count(exact=4) == 4
    assert count(minimum=4) == 4
    assert count(minimum=1, maximum=8) == 3


def test_known_speakers_name_their_voices(diarizer):
    conversation = meeting()
    reference = espeak("This is my voice, recorded for the meeting notes. Thank you.", VOICES[1])
    assert 2 < len(reference) / 16000 < 10
    turns = diarizer.diarize(
        conversation.samples, DiarizationRequest(known=(KnownSpeaker("Dana", reference),))
    )
    for turn in conversation.turns:
        middle = (turn.start + turn.end) / 2
        label = next(u.speaker for u in turns if u.start - 0.3 <= middle <= u.end + 0.3)
        assert (label == "Dana") == (turn.speaker == VOICES[1]), (turn, label)


def test_a_reference_of_a_voice_not_in_the_audio_names_nothing(diarizer):
    conversation = meeting(voices=VOICES[:2])
    stranger = espeak("Someone else entirely is speaking in this reference clip.", "en+Annie")
    turns = diarizer.diarize(conversation.samples, DiarizationRequest(known=(KnownSpeaker("Eve", stranger),)))
    assert all(t.speaker.startswith("#") for t in turns)


def test_silence_and_noise_have_no_turns(diarizer):
    assert diarizer.diarize(np.zeros(16000 * 5, np.float32), DiarizationRequest()) == []
    noise = np.random.default_rng(0).normal(0, 0.001, 16000 * 5).astype(np.float32)
    assert diarizer.diarize(noise, DiarizationRequest()) == []


# -- segments cut at speaker changes ------------------------------------------------------------------------


def _segment(words: list[tuple[float, float, str]], start: float | None = None, end: float | None = None):
    ws = tuple(Word(a, b, w, 0.9) for a, b, w in words)
    text = "".join(w.word for w in ws)
    return Segment(
        0, 0, start if start is not None else ws[0].start, end or ws[-1].end, text, (), 0, 0, 1, 0, ws
    )


def test_a_segment_is_cut_where_the_speaker_changes():
    turns = [SpeakerTurn(0.0, 2.0, "#1"), SpeakerTurn(2.1, 4.0, "#0"), SpeakerTurn(4.2, 6.0, "#1")]
    segment = _segment(
        [
            (0.1, 0.5, " Hello"),
            (0.6, 1.8, " there."),
            (2.2, 2.9, " Hi,"),
            (3.0, 3.9, " you."),
            (4.3, 5.0, " Bye."),
        ],
        start=0.0,
        end=5.2,
    )
    pieces = SegmentLabeller(turns).label(segment)
    assert [(p.speaker, p.text) for p in pieces] == [
        ("A", " Hello there."),
        ("B", " Hi, you."),
        ("A", " Bye."),
    ]
    assert [p.id for p in pieces] == ["seg_0", "seg_1", "seg_2"]
    assert pieces[0].start == 0.0 and pieces[-1].end == 5.2  # the outer edges stay the segment's
    assert pieces[1].start == 2.2 and pieces[1].end == 3.9  # inner edges are word times


def test_a_word_between_turns_goes_to_the_nearest_and_no_turns_means_one_speaker():
    turns = [SpeakerTurn(0.0, 1.0, "#0"), SpeakerTurn(3.0, 4.0, "#1")]
    pieces = SegmentLabeller(turns).label(
        _segment([(0.2, 0.8, " one"), (1.2, 1.5, " two"), (2.7, 2.9, " three")])
    )
    assert [(p.speaker, p.text) for p in pieces] == [("A", " one two"), ("B", " three")]
    assert [p.speaker for p in SegmentLabeller([]).label(_segment([(0, 1, " a"), (5, 6, " b")]))] == ["A"]


def test_letters_in_order_of_first_appearance_skip_known_names():
    letters = SpeakerLetters(reserved=["B", "agent"])
    assert [letters(k) for k in ("#3", "agent", "#0", "#3", "#1")] == ["A", "agent", "C", "A", "D"]
    many = SpeakerLetters()
    assert [many(f"#{i}") for i in range(28)][-3:] == ["Z", "AA", "AB"]
