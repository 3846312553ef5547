"""Whisper through faster-whisper / CTranslate2."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from faster_whisper import BatchedInferencePipeline, WhisperModel
from faster_whisper.transcribe import Segment as FwSegment

from open_stt_server.audio import SAMPLE_RATE
from open_stt_server.catalog import ModelSpec
from open_stt_server.chunking import speech_pieces, speech_regions
from open_stt_server.engines import Decoding
from open_stt_server.settings import Settings
from open_stt_server.transcript import Segment, TranscribeOptions, Word

log = logging.getLogger(__name__)

WINDOW_S = 30.0  # Whisper's receptive field


def cuda_available() -> bool:
    import ctranslate2

    try:
        return ctranslate2.get_cuda_device_count() > 0
    except Exception:  # no CUDA runtime at all
        return False


class WhisperEngine:
    supports_word_timestamps = True
    supports_prompt = True
    languages = None

    def __init__(self, spec: ModelSpec, weights: Path, settings: Settings) -> None:
        self.spec = spec
        self.device = "cuda" if not settings.force_cpu and cuda_available() else "cpu"
        compute_type = settings.compute_type or ("float16" if self.device == "cuda" else "int8")
        self.model = WhisperModel(
            str(weights),
            device=self.device,
            compute_type=compute_type,
            cpu_threads=settings.threads_per_worker(),
            num_workers=settings.workers,
            local_files_only=True,
        )
        self.compute_type = compute_type
        self.english_only = not self.model.model.is_multilingual
        self.supports_translation = not self.english_only
        self.batched = BatchedInferencePipeline(self.model)
        self.batched_enabled = settings.batched_long_audio
        self.batched_min_seconds = settings.batched_min_seconds
        self.batch_size = settings.batch_size

    def close(self) -> None:
        del self.batched, self.model

    # -- decoding -------------------------------------------------------------------------------------

    def start(
        self, samples: np.ndarray, options: TranscribeOptions, cancelled: threading.Event | None = None
    ) -> Decoding:
        # CTranslate2 cannot be interrupted inside a window: the scheduler stops the job between segments.
        duration = len(samples) / SAMPLE_RATE
        use_batched = options.batched if options.batched is not None else self.batched_enabled
        if use_batched and duration >= self.batched_min_seconds:
            return self._start_batched(samples, options)
        if options.vad_filter:
            return self._start_vad(samples, options)
        segments, info = self.model.transcribe(samples, **self._decode_kwargs(options))
        return Decoding(info.language, _convert(segments, 0.0, duration))

    def _decode_kwargs(self, options: TranscribeOptions, language: str | None = None) -> dict:
        return {
            "language": "en" if self.english_only else (language or options.language),
            "task": options.task,
            "beam_size": options.beam_size,
            "initial_prompt": options.prompt or None,
            "temperature": list(options.temperatures),
            "word_timestamps": options.word_timestamps,
            "vad_filter": False,  # we cut speech regions ourselves so that times stay true
        }

    def _detect_language(self, samples: np.ndarray, options: TranscribeOptions) -> str:
        if self.english_only:
            return "en"
        if options.language:
            return options.language
        language, _, _ = self.model.detect_language(samples)
        return language

    def _start_vad(self, samples: np.ndarray, options: TranscribeOptions) -> Decoding:
        """Transcribe each speech region on its own: no segment can span silence that VAD removed."""
        regions = speech_regions(samples, options, max_s=float("inf"))
        if not regions:
            return Decoding(self._detect_language(samples, options), iter(()))
        first = regions[0]
        language = self._detect_language(samples[first["start"] : first["start"] + 30 * SAMPLE_RATE], options)

        def segments() -> Iterator[Segment]:
            next_id = 0
            for region in regions:
                clip = samples[region["start"] : region["end"]]
                decoded, _ = self.model.transcribe(clip, **self._decode_kwargs(options, language))
                for seg in _convert(
                    decoded, region["start"] / SAMPLE_RATE, region["end"] / SAMPLE_RATE, next_id
                ):
                    next_id = seg.id + 1
                    yield seg

        return Decoding(language, segments())

    def _start_batched(self, samples: np.ndarray, options: TranscribeOptions) -> Decoding:
        """Long audio: batches of ≤ 30 s speech clips decoded together, clips kept contiguous in time.

        Clips are decoded independently: no conditioning on the previous window and no temperature fallback.
        """
        clips = [
            {"start": p.start_s, "end": p.end_s}
            for p in speech_pieces(speech_regions(samples, options, WINDOW_S), WINDOW_S)
        ]
        if not clips:
            return Decoding(self._detect_language(samples, options), iter(()))
        language = self._detect_language(
            samples[int(clips[0]["start"] * SAMPLE_RATE) : int((clips[0]["start"] + WINDOW_S) * SAMPLE_RATE)],
            options,
        )
        kwargs = self._decode_kwargs(options, language)
        del kwargs["vad_filter"]
        # Each clip is decoded without timestamp tokens and becomes one segment spanning the clip: measured on a
        # 10-minute file, timestamp tokens cost speed and doubled WER in batched decoding (benchmarks/README.md).
        # Word timestamps, when asked for (and for subtitles), still place every word.
        segments, _ = self.batched.transcribe(
            samples, clip_timestamps=clips, batch_size=self.batch_size, without_timestamps=True, **kwargs
        )
        return Decoding(language, _convert(segments, 0.0, len(samples) / SAMPLE_RATE))


def _convert(
    segments: Iterable[FwSegment], offset_s: float, limit_s: float, first_id: int = 0
) -> Iterator[Segment]:
    """faster-whisper segments → ours, shifted by `offset_s` and clamped to end by `limit_s`.

    Whisper's timestamps live on a 30-second padded grid, so the last segment can claim to end after the
    audio does; subtitles and word times must not.
    """

    def t(value: float) -> float:
        return round(min(max(value + offset_s, 0.0), limit_s), 3)

    for index, seg in enumerate(segments, start=first_id):
        words = None
        if seg.words is not None:
            words = tuple(Word(t(w.start), t(w.end), w.word, float(w.probability)) for w in seg.words)
        yield Segment(
            id=index,
            seek=int(seg.seek + offset_s * 100),
            start=t(seg.start),
            end=t(seg.end),
            text=seg.text,
            tokens=tuple(seg.tokens),
            temperature=float(seg.temperature or 0.0),
            avg_logprob=float(seg.avg_logprob),
            compression_ratio=float(seg.compression_ratio),
            no_speech_prob=float(seg.no_speech_prob),
            words=words,
        )
