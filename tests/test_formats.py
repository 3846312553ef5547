"""Subtitles from segments that carry no word times (Voxtral's 30-second pieces)."""

from __future__ import annotations

import srt

from open_stt_server.formats import MAX_CUE_CHARS, subtitle_cues, to_srt
from open_stt_server.transcript import Segment, Transcript


def segment(index: int, start: float, end: float, text: str) -> Segment:
    return Segment(index, int(start * 100), start, end, text, (), 0.0, 0.0, 1.0, 0.0)


def test_long_segments_without_words_become_readable_cues_within_their_span() -> None:
    sentence = "The keeper climbed the stairs and lit the lamp before the storm. "
    transcript = Transcript(
        "transcribe",
        "en",
        60.0,
        [segment(0, 0.0, 28.7, " " + sentence * 5), segment(1, 28.7, 60.0, " " + sentence * 4)],
    )
    cues = subtitle_cues(transcript)
    assert len(cues) == 9
    assert all(len(c.text) <= MAX_CUE_CHARS for c in cues)
    assert cues[0].start == 0.0 and cues[-1].end == 60.0
    assert any(c.end == 28.7 for c in cues) and any(c.start == 28.7 for c in cues)  # segment bounds kept
    parsed = list(srt.parse(to_srt(cues)))
    assert " ".join(c.content for c in parsed) == (sentence * 9).strip()


def test_text_without_spaces_is_cut_between_characters() -> None:
    text = "这是一个很长的中文句子，用来测试字幕。" * 10
    cues = subtitle_cues(Transcript("transcribe", "zh", 30.0, [segment(0, 0.0, 30.0, text)]))
    assert len(cues) > 1
    assert "".join(c.text for c in cues) == text
    assert all(len(c.text) <= MAX_CUE_CHARS for c in cues)
