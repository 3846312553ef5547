"""Diarization with the GE2E voice encoder: speech regions → 1.6 s windows → embeddings → clusters → turns."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import numpy as np

from open_stt_server.diarization.clustering import centroids, cluster_speakers
from open_stt_server.diarization.diarizer import (
    KNOWN_SPEAKER_SIMILARITY,
    UNNAMED_PREFIX,
    DiarizationCancelled,
    DiarizationRequest,
    KnownSpeaker,
    SpeakerTurn,
)
from open_stt_server.diarization.voice_encoder import (
    HOP_LENGTH,
    PARTIAL_FRAMES,
    SAMPLE_RATE,
    VoiceEncoder,
    mel_spectrogram,
    normalize_volume,
    window_starts,
)

WINDOW_STEP_FRAMES = 50  # a window every 0.5 s: the resolution of a speaker change
MIN_WINDOW_FRAMES = 40  # regions shorter than 0.4 s get no window of their own (their neighbours name them)
# Speech regions: cut at pauses of 0.3 s, so most changes of speaker fall between regions.
VAD_MIN_SILENCE_MS = 300
VAD_PAD_MS = 100


def speech_regions(samples: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) sample offsets of speech, by Silero VAD (the model faster-whisper ships)."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(min_silence_duration_ms=VAD_MIN_SILENCE_MS, speech_pad_ms=VAD_PAD_MS)
    return [(r["start"], r["end"]) for r in get_speech_timestamps(samples, options, SAMPLE_RATE)]


class Ge2eDiarizer:
    name = "ge2e"

    def __init__(self, weights: Path) -> None:
        self.encoder = VoiceEncoder(weights)

    def diarize(
        self, samples: np.ndarray, request: DiarizationRequest, cancelled: threading.Event | None = None
    ) -> list[SpeakerTurn]:
        def check() -> None:
            if cancelled is not None and cancelled.is_set():
                raise DiarizationCancelled

        regions = speech_regions(samples)
        check()
        # Each window: (region index, centre in seconds); full-length windows are embedded in one batch.
        centres: list[tuple[int, float]] = []
        full: list[np.ndarray] = []
        short: list[tuple[int, np.ndarray]] = []  # (position in `centres`, mel) of regions under 1.6 s
        for index, (start, end) in enumerate(regions):
            mel = mel_spectrogram(normalize_volume(samples[start:end]))
            if len(mel) < MIN_WINDOW_FRAMES:
                continue
            for first in window_starts(len(mel), WINDOW_STEP_FRAMES):
                window = mel[first : first + PARTIAL_FRAMES]
                centre = (start + (first + len(window) / 2) * HOP_LENGTH) / SAMPLE_RATE
                if len(window) == PARTIAL_FRAMES:
                    full.append(window)
                else:
                    short.append((len(centres), window))
                centres.append((index, centre))
        check()
        if not centres:
            return []
        embeddings = np.zeros((len(centres), 256), dtype=np.float32)
        short_positions = {position for position, _ in short}
        full_positions = [i for i in range(len(centres)) if i not in short_positions]
        if full:
            embeddings[full_positions] = self.encoder.embed_mels(np.stack(full))
        for position, mel in short:
            embeddings[position] = self.encoder.embed_mels(mel[None])[0]
        check()
        labels = cluster_speakers(embeddings, request.count)
        names = self._names(embeddings, labels, request.known)
        return _turns(regions, centres, labels, names)

    def _names(
        self, embeddings: np.ndarray, labels: np.ndarray, known: tuple[KnownSpeaker, ...]
    ) -> list[str]:
        """The speaker key of each cluster: a known speaker's name when its voice matches, else "#n"."""
        count = int(labels.max()) + 1
        names = [f"{UNNAMED_PREFIX}{k}" for k in range(count)]
        if not known:
            return names
        references = np.stack([self.encoder.embed_utterance(k.samples) for k in known])
        similarity = centroids(embeddings, labels, count) @ references.T  # clusters × known speakers
        # Several clusters may take one name: the clustering can split a voice that a reference names whole.
        for cluster, row in enumerate(similarity):
            best = int(np.argmax(row))
            if row[best] >= KNOWN_SPEAKER_SIMILARITY:
                names[cluster] = known[best].name
        return names


def _turns(
    regions: list[tuple[int, int]],
    centres: list[tuple[int, float]],
    labels: np.ndarray,
    names: list[str],
) -> list[SpeakerTurn]:
    """Each region split where its windows' labels change (midway between the two windows' centres)."""
    labels = _smooth(centres, labels)
    turns: list[SpeakerTurn] = []
    by_region: dict[int, list[tuple[float, int]]] = {}
    for (region, centre), label in zip(centres, labels, strict=True):
        by_region.setdefault(region, []).append((centre, int(label)))
    for region, windows in sorted(by_region.items()):
        start_s, end_s = regions[region][0] / SAMPLE_RATE, regions[region][1] / SAMPLE_RATE
        begin = start_s
        for (centre, label), (next_centre, next_label) in itertools.pairwise(windows):
            if next_label != label:
                cut = (centre + next_centre) / 2
                turns.append(SpeakerTurn(round(begin, 3), round(cut, 3), names[label]))
                begin = cut
        turns.append(SpeakerTurn(round(begin, 3), round(end_s, 3), names[windows[-1][1]]))
    merged: list[SpeakerTurn] = []
    for turn in turns:
        if merged and merged[-1].speaker == turn.speaker and turn.start - merged[-1].end < 0.5:
            merged[-1] = SpeakerTurn(merged[-1].start, turn.end, turn.speaker)
        else:
            merged.append(turn)
    return merged


def _smooth(centres: list[tuple[int, float]], labels: np.ndarray) -> np.ndarray:
    """A lone window whose neighbours in the same region agree with each other takes their label."""
    out = labels.copy()
    for i in range(1, len(labels) - 1):
        same_region = centres[i - 1][0] == centres[i][0] == centres[i + 1][0]
        if same_region and labels[i - 1] == labels[i + 1] != labels[i]:
            out[i] = labels[i - 1]
    return out
