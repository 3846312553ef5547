"""pyannote.audio's diarization pipeline behind our Diarizer interface, for hosts that have its weights.

pyannote's pipelines are better than GE2E clustering on hard audio (overlaps, noisy rooms) but their weights
are gated on the Hugging Face hub: accept the terms, set `HF_TOKEN`, download once; with the weights in the
cache it runs offline like everything else. Known speakers are matched by the GE2E encoder when its weights
are installed (each pyannote speaker's speech against each reference), else they are refused at start-up.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from open_stt_server.diarization.diarizer import (
    KNOWN_SPEAKER_SIMILARITY,
    UNNAMED_PREFIX,
    DiarizationCancelled,
    DiarizationRequest,
    DiarizerUnavailable,
    SpeakerTurn,
)

DEFAULT_PIPELINE = "pyannote/speaker-diarization-3.1"
SAMPLE_RATE = 16_000


class PyannoteDiarizer:
    name = "pyannote"

    def __init__(self, pipeline: str | None = None, encoder_weights: Path | None = None) -> None:
        try:
            import torch
            from pyannote.audio import Pipeline
        except ImportError as exc:
            raise DiarizerUnavailable(
                f"--diarizer pyannote needs pyannote.audio ({exc}); install it with: pip install pyannote.audio"
            ) from None
        source = pipeline or DEFAULT_PIPELINE
        token = os.environ.get("HF_TOKEN")
        try:
            try:
                loaded = Pipeline.from_pretrained(source, token=token)  # pyannote.audio 4
            except TypeError:
                loaded = Pipeline.from_pretrained(source, use_auth_token=token)  # pyannote.audio 3
        except Exception as exc:  # the hub client raises many kinds; all mean "not usable here"
            raise DiarizerUnavailable(
                f"The pyannote pipeline '{source}' could not be loaded ({exc}). Its weights are gated: accept its "
                "terms on the hub, set HF_TOKEN and download it once, or name a local directory."
            ) from None
        if loaded is None:
            raise DiarizerUnavailable(
                f"The pyannote pipeline '{source}' is not in the cache (set HF_TOKEN?)."
            )
        self._torch = torch
        self._pipeline = loaded
        self._encoder = None
        if encoder_weights is not None:
            from open_stt_server.diarization.voice_encoder import VoiceEncoder

            self._encoder = VoiceEncoder(encoder_weights)

    def diarize(
        self, samples: np.ndarray, request: DiarizationRequest, cancelled: threading.Event | None = None
    ) -> list[SpeakerTurn]:
        count = request.count
        hints: dict[str, int] = {}
        if count.exact is not None:
            hints["num_speakers"] = count.exact
        else:
            if count.minimum > 1:
                hints["min_speakers"] = count.minimum
            if count.maximum is not None:
                hints["max_speakers"] = count.maximum
        waveform = self._torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))[None]
        output = self._pipeline({"waveform": waveform, "sample_rate": SAMPLE_RATE}, **hints)
        if cancelled is not None and cancelled.is_set():
            raise DiarizationCancelled
        annotation = getattr(output, "speaker_diarization", output)  # 4.x wraps the annotation
        labels: dict[str, str] = {}
        turns = []
        for segment, _, label in annotation.itertracks(yield_label=True):
            key = labels.setdefault(label, f"{UNNAMED_PREFIX}{len(labels)}")
            turns.append(SpeakerTurn(round(segment.start, 3), round(segment.end, 3), key))
        turns.sort(key=lambda t: t.start)
        return self._name_known(samples, turns, request)

    def _name_known(self, samples: np.ndarray, turns: list[SpeakerTurn], request: DiarizationRequest):
        if not request.known or not turns:
            return turns
        if self._encoder is None:
            return turns
        names: dict[str, str] = {}
        references = np.stack([self._encoder.embed_utterance(k.samples) for k in request.known])
        for key in {t.speaker for t in turns}:
            speech = np.concatenate(
                [
                    samples[int(t.start * SAMPLE_RATE) : int(t.end * SAMPLE_RATE)]
                    for t in turns
                    if t.speaker == key
                ]
            )
            if len(speech) < SAMPLE_RATE // 2:
                continue
            similarity = references @ self._encoder.embed_utterance(speech)
            best = int(np.argmax(similarity))
            if similarity[best] >= KNOWN_SPEAKER_SIMILARITY:
                names[key] = request.known[best].name
        return [SpeakerTurn(t.start, t.end, names.get(t.speaker, t.speaker)) for t in turns]
