"""Whisper through faster-whisper / CTranslate2: the engine (short clips, VAD regions, long audio). Its models are in
`whisper_models`, long audio's batched pipeline in `whisper_long`."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path

import ctranslate2
import numpy as np
from faster_whisper.transcribe import Segment as FwSegment

from open_stt_server.audio import SAMPLE_RATE
from open_stt_server.catalog import ModelSpec
from open_stt_server.chunking import speech_regions
from open_stt_server.engines.engine import Decoding
from open_stt_server.engines.whisper_long import packed
from open_stt_server.engines.whisper_models import Decoders, EncoderApart, OneEncodeWhisperModel
from open_stt_server.sentences import split_segments
from open_stt_server.settings import Settings
from open_stt_server.transcript import Segment, TranscribeOptions, Word

log = logging.getLogger(__name__)

UNDETECTED = ""  # the batched path's language until its first batch is decoded


def cuda_available() -> bool:
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
        self.model = OneEncodeWhisperModel(
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
        self.batched_enabled = settings.batched_long_audio
        self.batched_min_seconds = settings.batched_min_seconds
        self.batch_size = settings.batch_size
        self.decoders: Decoders | None = None
        if self.device == "cpu" and settings.decoders() > 0 and settings.threads_per_worker() > 1:
            self.decoders = Decoders(weights, compute_type, settings.decoders())
            self.model.model = EncoderApart(self.model.model, self.decoders.model.model)
            log.info("%s: beam searches on %d one-thread decoders beside the model (--cpu-decoders)",
                     spec.name, self.decoders.count)  # fmt: skip

    def close(self) -> None:
        if self.decoders is not None:
            self.decoders.close()
        del self.model

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
            "hotwords": options.hotwords or None,
            "temperature": list(options.temperatures),
            "max_new_tokens": options.max_new_tokens,
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
        clips = [samples[region["start"] : region["end"]] for region in regions]
        # The first region's decode detects the language (from the encoder pass it decodes with); the rest
        # take that language.
        first, info = self.model.transcribe(clips[0], **self._decode_kwargs(options))

        def segments() -> Iterator[Segment]:
            next_id = 0
            for index, (region, clip) in enumerate(zip(regions, clips, strict=True)):
                decoded = (
                    first
                    if index == 0
                    else self.model.transcribe(clip, **self._decode_kwargs(options, info.language))[0]
                )
                for seg in _convert(
                    decoded, region["start"] / SAMPLE_RATE, region["end"] / SAMPLE_RATE, next_id
                ):
                    next_id = seg.id + 1
                    yield seg

        return Decoding(info.language, segments())

    def _start_batched(self, samples: np.ndarray, options: TranscribeOptions) -> Decoding:
        """Long audio through faster-whisper's batched pipeline as its users call it: VAD with its settings,
        speech packed into chunks of up to 30 s (silences left out, times restored), each chunk decoded without
        timestamp tokens, in batches. Word times (one alignment pass per batch) cut each chunk's text into
        sentence-sized segments with true times — when the caller reads segment times: for `json`/`text` the
        alignment (≈ 8 % of the decode) is not paid for, and a segment is a chunk.

        What this path adds: the language is read from the first batch's own encoder output (no separate
        detection pass), and when the client streams text (`early_text`) the first chunk's first words are sent
        before the first batch is decoded (`whisper_long`). Chunks are decoded independently: no
        conditioning, no temperature fallback.
        """
        duration = len(samples) / SAMPLE_RATE
        encode = self.model.hf_tokenizer.encode
        decoding = Decoding("en" if self.english_only else (options.language or UNDETECTED), iter(()))

        def segments() -> Iterator[Segment]:
            pipeline, decoded = packed(
                self.model, self.decoders, samples, options, decoding.language or None, self.batch_size
            )
            for segment in split_segments(
                _convert(decoded, 0.0, duration), lambda text: encode(text, add_special_tokens=False).ids
            ):
                decoding.language = decoding.language or pipeline.language or UNDETECTED
                yield segment if options.word_timestamps else replace(segment, words=None)
            if decoding.language == UNDETECTED:  # no speech at all: Whisper's own guess from the audio
                decoding.language = self._detect_language(samples, options)

        decoding.segments = segments()
        return decoding


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
