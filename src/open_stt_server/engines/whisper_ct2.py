"""Whisper through faster-whisper / CTranslate2."""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import ctranslate2
import numpy as np
from faster_whisper import BatchedInferencePipeline, WhisperModel
from faster_whisper.audio import pad_or_trim
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import Segment as FwSegment

from open_stt_server.audio import SAMPLE_RATE
from open_stt_server.catalog import ModelSpec
from open_stt_server.chunking import speech_regions
from open_stt_server.engines.engine import Decoding
from open_stt_server.sentences import split_segments
from open_stt_server.settings import Settings
from open_stt_server.transcript import Segment, TranscribeOptions, Word

log = logging.getLogger(__name__)

EARLY_TEXT_S = 5.0  # long audio, streamed: about this much is decoded on its own first, so text starts early
# (on 2 CPU cores a piece decoded outside the batches costs about three times its share: keep it short)
EARLY_PAUSE_MS = 200  # ... and cut at a pause at least this long
ENCODINGS_KEPT = 8  # encoder outputs of language detection waiting for their window's decode
UNDETECTED = ""  # the batched path's language until its first batch is decoded


class OneEncodeWhisperModel(WhisperModel):
    """faster-whisper's model, with language detection sharing the first window's encoder pass.

    `transcribe` without a language encodes the first 30 s window in `detect_language`, then encodes it again
    when it decodes that window (≈ 0.37 s of a 2–4 s clip for whisper-base on 2 cores). Here language detection
    encodes exactly the window the decoder will take (the same frames, padded the same way) and keeps the
    encoder output until the decoder asks for that window. The detected language is Whisper's own: the top
    language token after the same encoder output.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.encoder_runs = 0  # observed by tests: one run per decoded window
        self._kept: list[tuple[np.ndarray, ctranslate2.StorageView]] = []
        self._kept_lock = threading.Lock()

    def encode(self, features: np.ndarray) -> ctranslate2.StorageView:
        with self._kept_lock:
            for index, (kept_features, output) in enumerate(self._kept):
                if kept_features.shape == features.shape and np.array_equal(kept_features, features):
                    del self._kept[index]
                    return output
        self.encoder_runs += 1
        return super().encode(features)

    def detect_language(
        self,
        audio: np.ndarray | None = None,
        features: np.ndarray | None = None,
        vad_filter: bool = False,
        vad_parameters: dict | None = None,
        language_detection_segments: int = 1,
        language_detection_threshold: float = 0.5,
    ) -> tuple[str, float, list[tuple[str, float]]]:
        if features is None or language_detection_segments != 1:
            return super().detect_language(
                audio, features, vad_filter, vad_parameters, language_detection_segments,
                language_detection_threshold,
            )  # fmt: skip
        # `transcribe` passes every frame; its decoder drops the last one (`content_frames`) before padding.
        frames = min(self.feature_extractor.nb_max_frames, features.shape[-1] - 1)
        window = pad_or_trim(features[..., :frames])
        output = self.encode(window)
        results = self.model.detect_language(output)[0]
        self.keep(window, output)
        probabilities = [(token[2:-2], probability) for token, probability in results]
        language, probability = probabilities[0]
        return language, probability, probabilities

    def keep(self, features: np.ndarray, output: ctranslate2.StorageView) -> None:
        """Hold an encoder output until `encode` is asked for the same features."""
        with self._kept_lock:
            self._kept.append((features, output))
            del self._kept[:-ENCODINGS_KEPT]

    def top_language(self, encoder_output: ctranslate2.StorageView) -> str:
        """Whisper's top language token after the first window of `encoder_output` (a batch)."""
        if encoder_output.shape[0] > 1 and encoder_output.device == "cpu":  # one row costs a fifth of four
            encoder_output = ctranslate2.StorageView.from_array(
                np.ascontiguousarray(np.asarray(encoder_output)[:1])
            )
        return self.model.detect_language(encoder_output)[0][0][0][2:-2]


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
        detection pass), and when the client streams (`early_text`) the first ≈ 5 s, up to a pause, are decoded
        on their own first so that text starts early. Chunks are decoded independently: no conditioning, no
        temperature fallback.
        """
        cut = _first_pause_after(samples, options, EARLY_TEXT_S) if options.early_text else None
        parts = [(0, len(samples))] if cut is None else [(0, cut), (cut, len(samples))]
        duration = len(samples) / SAMPLE_RATE
        encode = self.model.hf_tokenizer.encode
        decoding = Decoding("en" if self.english_only else (options.language or UNDETECTED), iter(()))

        def segments() -> Iterator[Segment]:
            next_id = 0
            # a part is decoded once the one before it is: it takes that one's language
            for start, end in parts:
                language = decoding.language or None
                pipeline, decoded = self._packed(samples[start:end], options, language)
                for segment in split_segments(
                    _convert(decoded, start / SAMPLE_RATE, duration),
                    lambda text: encode(text, add_special_tokens=False).ids,
                    next_id,
                ):
                    next_id = segment.id + 1
                    decoding.language = decoding.language or pipeline.language or UNDETECTED
                    yield segment if options.word_timestamps else replace(segment, words=None)
            if decoding.language == UNDETECTED:  # no speech at all: Whisper's own guess from the audio
                decoding.language = self._detect_language(samples, options)

        decoding.segments = segments()
        return decoding

    def _packed(
        self, samples: np.ndarray, options: TranscribeOptions, language: str | None
    ) -> tuple[_LongAudioPipeline, Iterator[FwSegment]]:
        """The batched pipeline over `samples` (language None: learned from the first batch); its segments are
        decoded as they are read."""
        pipeline = _LongAudioPipeline(self.model, options.task, self.decoders)
        vad = None
        if options.vad_filter:  # the client's VAD settings; else the pipeline's own (160 ms pauses)
            vad = {"threshold": options.vad_threshold, "min_silence_duration_ms": options.vad_min_silence_ms,
                   "speech_pad_ms": options.vad_speech_pad_ms}  # fmt: skip
        decoded, _ = pipeline.transcribe(
            samples, language=language or "en", multilingual=language is None, task=options.task,
            beam_size=options.beam_size, initial_prompt=options.prompt or None, hotwords=options.hotwords or None,
            temperature=options.temperatures[0], batch_size=self.batch_size, vad_filter=True,
            vad_parameters=vad, without_timestamps=True,
            word_timestamps=options.word_timestamps or options.segment_times,
        )  # fmt: skip
        return pipeline, iter(decoded)


def _first_pause_after(samples: np.ndarray, options: TranscribeOptions, seconds: float) -> int | None:
    """The middle of the first pause in speech after `seconds` (and before three times that), as a sample offset;
    None when the speech goes on without one (or the audio is too short to be worth a first piece)."""
    if len(samples) < 4 * seconds * SAMPLE_RATE:
        return None
    head = samples[: int(3 * seconds * SAMPLE_RATE)]
    regions = speech_regions(
        head, replace(options, vad_min_silence_ms=EARLY_PAUSE_MS, vad_speech_pad_ms=100), 30.0
    )
    for before, after in itertools.pairwise(regions):
        if before["end"] >= seconds * SAMPLE_RATE:
            return (before["end"] + after["start"]) // 2
    return None


class Decoders:
    """One-thread Whisper decoders beside the model, on CPU: a second copy of the weights.

    CTranslate2 spreads a decode over all its threads op by op. The encoder's large matrix products gain from
    that; a beam search, made of small ones step after step, does not: on 2 cores a 5-beam search over one
    window takes about 0.27 s on one thread and 0.4–0.5 s on both. So every beam search runs here (the encoder
    stays on the model with every core; `EncoderApart`), and a batch of long audio is split into parts that run
    side by side, one per decoder, encoder and all: on 2 cores, 2 chunks on each core take about two thirds of
    the time of 4 chunks on both. `count` decoders of one thread each (one per core by default; the weights are
    shared between them).
    """

    def __init__(self, weights: Path, compute_type: str, count: int) -> None:
        self.count = count
        self.model = OneEncodeWhisperModel(
            str(weights), device="cpu", compute_type=compute_type,
            cpu_threads=1, num_workers=count, local_files_only=True,
        )  # fmt: skip
        self.pool = ThreadPoolExecutor(count, thread_name_prefix="whisper-decoder")

    def parts(self, rows: int) -> list[slice]:
        """`rows` chunks split into contiguous parts of near-equal size, one per decoder (at most `count`)."""
        count = min(self.count, rows)
        bounds = [rows * i // count for i in range(count + 1)]
        return [slice(a, b) for a, b in itertools.pairwise(bounds)]

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


class EncoderApart:
    """CTranslate2's Whisper as faster-whisper calls it, with the encoder on `encoder` (every core) and the
    rest — beam search, language detection, word alignment — on the one-thread `decoder` (`Decoders`). The
    decoder takes the encoder's output as it is; the text is the same."""

    def __init__(self, encoder: ctranslate2.models.Whisper, decoder: ctranslate2.models.Whisper) -> None:
        self.encoder = encoder
        self.decoder = decoder

    def encode(self, features: ctranslate2.StorageView, to_cpu: bool = False) -> ctranslate2.StorageView:
        return self.encoder.encode(features, to_cpu=to_cpu)

    def generate(self, *args, **kwargs):
        return self.decoder.generate(*args, **kwargs)

    def detect_language(self, *args, **kwargs):
        return self.decoder.detect_language(*args, **kwargs)

    def align(self, *args, **kwargs):
        return self.decoder.align(*args, **kwargs)

    def __getattr__(self, name: str):  # is_multilingual, n_mels, device, ...
        return getattr(self.encoder, name)


class _LongAudioPipeline(BatchedInferencePipeline):
    """faster-whisper's batched pipeline, with the language learned from the first batch's own encoder output,
    and each batch split over the one-thread `decoders` when there are some.

    Asked with `multilingual=True` (no language given), the pipeline would encode the start of the audio once
    more up front, or (its multilingual mode) detect every chunk's language over the whole batch. Here the first
    batch is encoded once, the language is Whisper's top language token after its first chunk's encoder output,
    and every chunk is decoded in that language — the pipeline's own up-front detection, on the first speech
    rather than the first 30 s of audio, at no encoder cost.

    With decoders, each part of a batch is decoded exactly as the pipeline decodes a batch (the same chunks, the
    same prompt and beam search), side by side; the parts' chunks come back in order.
    """

    def __init__(self, model: OneEncodeWhisperModel, task: str, decoders: Decoders | None) -> None:
        super().__init__(model)
        self.task = task
        self.decoders = decoders
        self.language: str | None = None

    def _parts(self, rows: int) -> list[slice]:
        return self.decoders.parts(rows) if self.decoders is not None else [slice(0, rows)]

    def _batched_segments_generator(
        self, features, tokenizer, chunks_metadata, batch_size, options, log_progress
    ):
        if options.multilingual and len(features):
            first = features[:batch_size]  # the pipeline's first batch: its encode takes this output back
            pieces = [first[part] for part in self._parts(len(first))]  # as `forward` will split the batch
            if len(pieces) == 1:
                model: OneEncodeWhisperModel = self.model  # type: ignore[assignment]
                encoded = [model.encode(first)]
            else:
                model = self.decoders.model  # type: ignore[union-attr]
                encoded = list(self.decoders.pool.map(model.encode, pieces))  # type: ignore[union-attr]
            for piece, output in zip(pieces, encoded, strict=True):
                model.keep(piece, output)
            self.language = model.top_language(encoded[0])
            options = replace(options, multilingual=False)
            tokenizer = Tokenizer(model.hf_tokenizer, True, task=self.task, language=self.language)
        yield from super()._batched_segments_generator(
            features, tokenizer, chunks_metadata, batch_size, options, log_progress
        )

    def forward(self, features, tokenizer, chunks_metadata, options):
        parts = self._parts(len(features))
        if len(parts) == 1:
            return super().forward(features, tokenizer, chunks_metadata, options)
        assert self.decoders is not None
        since = self.last_speech_timestamp  # word times: where the speech before this batch ended

        def decode(part: slice) -> tuple[list, float]:
            part_pipeline = BatchedInferencePipeline(self.decoders.model)
            part_pipeline.last_speech_timestamp = since
            outputs = part_pipeline.forward(features[part], tokenizer, chunks_metadata[part], options)
            return outputs, part_pipeline.last_speech_timestamp

        decoded = list(self.decoders.pool.map(decode, parts))
        self.last_speech_timestamp = decoded[-1][1]
        return [chunk for outputs, _ in decoded for chunk in outputs]


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
