"""Whisper through faster-whisper / CTranslate2."""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import ctranslate2
import numpy as np
from faster_whisper import BatchedInferencePipeline, WhisperModel
from faster_whisper.audio import pad_or_trim
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import Segment as FwSegment
from faster_whisper.transcribe import get_compression_ratio, get_suppressed_tokens
from faster_whisper.vad import VadOptions, collect_chunks, get_speech_timestamps

from open_stt_server.audio import SAMPLE_RATE
from open_stt_server.catalog import ModelSpec
from open_stt_server.chunking import speech_regions
from open_stt_server.engines.engine import Decoding
from open_stt_server.sentences import split_segments
from open_stt_server.settings import Settings
from open_stt_server.transcript import Segment, TranscribeOptions, Word

log = logging.getLogger(__name__)

CHUNK_S = 30  # the batched pipeline packs speech into chunks of up to this long
FIRST_CHUNK_WITHIN_S = (
    45.0  # streamed: VAD over this much first, to find the first chunk (else the whole audio)
)
# the beam search of the batched path (faster-whisper's defaults, named so that the early search is the same)
SEARCH = {"patience": 1, "length_penalty": 1, "repetition_penalty": 1, "no_repeat_ngram_size": 0,
          "suppress_blank": True, "suppress_tokens": [-1]}  # fmt: skip
EARLY_TOKENS = 12  # long audio, streamed: the first chunk's first tokens, decoded alone so text starts early
SENTENCE_ENDS = (".", "?", "!", "。", "？", "！")
UNSPACED = {"zh", "ja", "th", "lo", "my", "yue"}  # languages written without spaces between words
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
        self.encoder_runs = 0  # observed by tests: encoder calls ...
        self.encoded_rows = 0  # ... and the windows they encoded
        self._kept: list[tuple[np.ndarray, ctranslate2.StorageView]] = []
        self._kept_lock = threading.Lock()

    def encode(self, features: np.ndarray) -> ctranslate2.StorageView:
        head = None
        with self._kept_lock:
            for index, (kept_features, output) in enumerate(self._kept):
                if kept_features.shape == features.shape and np.array_equal(kept_features, features):
                    del self._kept[index]
                    return output
                if (
                    len(kept_features) == 1
                    and len(features) > 1
                    and np.array_equal(kept_features[0], features[0])
                ):
                    del self._kept[index]  # a batch's first row, encoded ahead (a streamed file's early text)
                    head = output
                    break
        self.encoder_runs += 1
        self.encoded_rows += len(features) - (head is not None)
        if head is None:
            return super().encode(features)
        rest = np.asarray(super().encode(features[1:]))
        return ctranslate2.StorageView.from_array(np.concatenate([np.asarray(head), rest]))

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
        detection pass), and when the client streams text (`early_text`) the first chunk's first words are sent
        before the first batch is decoded (`_LongAudioPipeline.streamed`). Chunks are decoded independently: no
        conditioning, no temperature fallback.
        """
        duration = len(samples) / SAMPLE_RATE
        encode = self.model.hf_tokenizer.encode
        decoding = Decoding("en" if self.english_only else (options.language or UNDETECTED), iter(()))

        def segments() -> Iterator[Segment]:
            pipeline, decoded = self._packed(samples, options, decoding.language or None)
            for segment in split_segments(
                _convert(decoded, 0.0, duration), lambda text: encode(text, add_special_tokens=False).ids
            ):
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
        vad = VadOptions(max_speech_duration_s=CHUNK_S, min_silence_duration_ms=160)  # the pipeline's own
        if options.vad_filter:  # the client's VAD settings
            vad = VadOptions(threshold=options.vad_threshold, min_silence_duration_ms=options.vad_min_silence_ms,
                             speech_pad_ms=options.vad_speech_pad_ms, max_speech_duration_s=CHUNK_S)  # fmt: skip
        search = {**SEARCH, "beam_size": options.beam_size, "initial_prompt": options.prompt or None,
                  "hotwords": options.hotwords or None, "temperature": options.temperatures[0]}  # fmt: skip

        def transcribe(language: str | None) -> Iterable[FwSegment]:
            return pipeline.transcribe(
                samples, language=language or "en", multilingual=language is None, task=options.task,
                batch_size=self.batch_size, vad_filter=True, vad_parameters=vad, without_timestamps=True,
                word_timestamps=options.word_timestamps or options.segment_times, **search,
            )[0]  # fmt: skip

        # early text in text-only streams: words sent that early cannot be timed before their chunk is decoded
        if options.early_text and not (options.word_timestamps or options.segment_times):
            return pipeline, pipeline.streamed(samples, vad, search, language, transcribe)
        return pipeline, iter(transcribe(language))


def _first_chunk(samples: np.ndarray, vad: VadOptions) -> tuple[np.ndarray, float, float] | None:
    """The batched pipeline's first chunk of `samples` (its speech packed up to 30 s) and where it starts and ends
    in the audio, found by VAD over the first `FIRST_CHUNK_WITHIN_S` when its speech fills the chunk there (Silero
    reads the audio in order: the regions before the last one are those of the whole audio), else over twice as
    much, and so on; None without speech."""
    within = FIRST_CHUNK_WITHIN_S
    while True:
        head = samples[: int(within * SAMPLE_RATE)]
        regions = get_speech_timestamps(head, vad)
        chunks, _ = collect_chunks(head, regions, max_duration=CHUNK_S)
        if len(chunks) > 1 or len(head) == len(samples):
            break
        within *= 2
    if not regions:
        return None
    length, end = 0, regions[0]["end"]
    for region in regions:
        length += region["end"] - region["start"]
        end = region["end"]
        if length >= len(chunks[0]):
            break
    return chunks[0], regions[0]["start"] / SAMPLE_RATE, end / SAMPLE_RATE


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

    def parts(self, rows: int, larger_first: bool = False) -> list[slice]:
        """`rows` chunks split into contiguous parts of near-equal size, one per decoder (at most `count`); the
        larger ones last, or first."""
        count = min(self.count, rows)
        sizes = [rows * (i + 1) // count - rows * i // count for i in range(count)]
        bounds = list(itertools.accumulate(sorted(sizes, reverse=larger_first), initial=0))
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
    each batch split over the one-thread `decoders` when there are some, and (streamed) the first chunk's first
    words sent before the first batch is decoded.

    Asked with `multilingual=True` (no language given), the pipeline would encode the start of the audio once
    more up front, or (its multilingual mode) detect every chunk's language over the whole batch. Here the first
    batch is encoded once, the language is Whisper's top language token after its first chunk's encoder output,
    and every chunk is decoded in that language — the pipeline's own up-front detection, on the first speech
    rather than the first 30 s of audio, at no encoder cost.

    With decoders, each part of a batch is decoded exactly as the pipeline decodes a batch (the same chunks, the
    same prompt and beam search), side by side; the parts' chunks come back in order.

    Streamed (`streamed`), the first chunk is found by VAD over the start of the audio alone and encoded at every
    core; a short beam search over its encoder output (`EARLY_TOKENS`) gives its first words, which are yielded at
    once, while the pipeline finds the speech of the whole audio beside it. The batch then decodes that chunk on
    from those words (a prefix): the text sent early is the start of the text the batch gives, and no window is
    encoded twice.
    """

    def __init__(self, model: OneEncodeWhisperModel, task: str, decoders: Decoders | None) -> None:
        super().__init__(model)
        self.task = task
        self.decoders = decoders
        self.language: str | None = None
        # streamed: the first chunk's features and encoder output
        self.head: tuple[np.ndarray, ctranslate2.StorageView] | None = None
        self.prefix: list[int] = []  # the first chunk's tokens already yielded, until its batch is decoded
        self.batches = 0  # batches decoded

    def _parts(self, rows: int) -> list[slice]:
        if self.decoders is None:
            return [slice(0, rows)]
        # streamed, the first batch's first part starts early (its first chunk was encoded ahead): it takes the
        # larger share
        return self.decoders.parts(rows, larger_first=self.head is not None and self.batches == 0)

    def streamed(
        self, samples: np.ndarray, vad: VadOptions, search: dict, language: str | None,
        transcribe: Callable[[str | None], Iterable[FwSegment]],
    ) -> Iterator[FwSegment]:  # fmt: skip
        """The first chunk's first words, then the segments of `transcribe(language)` (this pipeline over
        `samples`, with `vad` and the beam `search` settings), which runs beside the short search."""
        model: OneEncodeWhisperModel = self.model  # type: ignore[assignment]
        first = _first_chunk(samples, vad)
        if first is None:  # no speech
            yield from transcribe(language)
            return
        chunk, start_s, end_s = first
        row = pad_or_trim(model.feature_extractor(chunk)[..., :-1])[None]  # as the pipeline stacks it
        output = model.encode(row)
        self.head = (row, output)
        self.language = language or model.top_language(output)
        tokenizer = Tokenizer(
            model.hf_tokenizer, model.model.is_multilingual, task=self.task, language=self.language
        )
        initial = search["initial_prompt"]
        prompt = model.get_prompt(
            tokenizer, previous_tokens=tokenizer.encode(initial) if initial is not None else [],
            without_timestamps=True, hotwords=search["hotwords"],
        )  # fmt: skip

        def generate():
            return model.model.generate(
                output, [prompt], beam_size=search["beam_size"], patience=search["patience"],
                length_penalty=search["length_penalty"], max_length=len(prompt) + EARLY_TOKENS,
                suppress_blank=search["suppress_blank"],
                suppress_tokens=get_suppressed_tokens(tokenizer, search["suppress_tokens"]),
                num_hypotheses=search["beam_size"], return_scores=True, return_no_speech_prob=True,
                sampling_temperature=search["temperature"], repetition_penalty=search["repetition_penalty"],
                no_repeat_ngram_size=search["no_repeat_ngram_size"],
            )[0]  # fmt: skip

        searching = setup = None
        if self.decoders is not None:  # the short search on a decoder, the VAD of the whole audio beside it
            searching = self.decoders.pool.submit(generate)
            setup = self.decoders.pool.submit(transcribe, self.language)
        result = searching.result() if searching is not None else generate()
        self.prefix = _early_tokens(result.sequences_ids, tokenizer, self.language)
        if self.prefix:  # (text only: a segment has its chunk's times)
            text = tokenizer.decode(self.prefix)
            yield FwSegment(
                id=0, seek=int(start_s * model.frames_per_second), start=start_s, end=end_s, text=text,
                tokens=self.prefix, avg_logprob=result.scores[0] / (len(result.sequences_ids[0]) + 1),
                compression_ratio=get_compression_ratio(text), no_speech_prob=result.no_speech_prob, words=None,
                temperature=search["temperature"],
            )  # fmt: skip
        yield from setup.result() if setup is not None else transcribe(self.language)

    def _batched_segments_generator(
        self, features, tokenizer, chunks_metadata, batch_size, options, log_progress
    ):
        if len(features) and (options.multilingual or self.head is not None):
            first = features[:batch_size]  # the pipeline's first batch: its encode takes these outputs back
            parts = self._parts(len(first))
            # where the first batch's rows are encoded and kept: the model that decodes them
            owner: OneEncodeWhisperModel = self.decoders.model if len(parts) > 1 else self.model  # type: ignore
            if self.head is not None:
                self._encode_ahead(first, parts, owner, chunks_metadata)
            else:
                if len(parts) == 1:
                    encoded = [owner.encode(first)]
                else:  # each part on its decoder, as `forward` will split the batch
                    encoded = list(self.decoders.pool.map(owner.encode, [first[p] for p in parts]))  # type: ignore
                for part, output in zip(parts, encoded, strict=True):
                    owner.keep(first[part], output)
                self.language = owner.top_language(encoded[0])
                options = replace(options, multilingual=False)
                tokenizer = Tokenizer(owner.hf_tokenizer, True, task=self.task, language=self.language)
        yield from super()._batched_segments_generator(
            features, tokenizer, chunks_metadata, batch_size, options, log_progress
        )

    def _encode_ahead(
        self, first: np.ndarray, parts: list[slice], owner: OneEncodeWhisperModel, chunks_metadata: list[dict]
    ) -> None:
        """Streamed: the first batch's first chunk is the one encoded ahead (unless the VAD of the whole audio
        packed it otherwise). The first part carries the early words' cost, so a part as large and as much
        speech gets its first chunk encoded now, at every core, to start as early; a lighter one has the time
        to encode its own."""
        row, output = self.head  # type: ignore[misc]
        model: OneEncodeWhisperModel = self.model  # type: ignore[assignment]
        if output.device != "cpu":  # (on a GPU the batch encodes it again: a few milliseconds)
            return
        if np.array_equal(first[0], row[0]):
            owner.keep(first[:1], output)

        def weight(part: slice) -> tuple[int, float]:  # windows to encode, then seconds of speech to decode
            return part.stop - part.start, sum(chunk["duration"] for chunk in chunks_metadata[part])

        for part in parts[1:]:
            if weight(part) >= weight(parts[0]):
                ahead = first[part.start : part.start + 1]
                owner.keep(ahead, model.encode(ahead))

    def forward(self, features, tokenizer, chunks_metadata, options):
        prefix, self.prefix = self.prefix, []
        parts = self._parts(len(features))
        since = self.last_speech_timestamp  # word times: where the speech before this batch ended

        def decode(model: OneEncodeWhisperModel, part: slice) -> tuple[list, float]:
            pipeline = BatchedInferencePipeline(
                _Prefixed(model, prefix) if prefix and part.start == 0 else model
            )
            pipeline.last_speech_timestamp = since
            outputs = pipeline.forward(features[part], tokenizer, chunks_metadata[part], options)
            return outputs, pipeline.last_speech_timestamp

        if len(parts) == 1:
            decoded = [decode(self.model, parts[0])]  # type: ignore[arg-type]
        else:
            assert self.decoders is not None
            decoded = list(self.decoders.pool.map(lambda part: decode(self.decoders.model, part), parts))  # type: ignore
        self.last_speech_timestamp = decoded[-1][1]
        self.batches += 1
        outputs = [chunk for chunks, _ in decoded for chunk in chunks]
        if prefix:
            outputs[0] = _after_prefix(outputs[0], prefix, tokenizer)
        return outputs


class _Prefixed:
    """A faster-whisper model whose batch decodes start the first row's text with `prefix` (text already sent):
    the beam search goes on from there."""

    def __init__(self, model: WhisperModel, prefix: list[int]) -> None:
        self._model = model
        self.model = _PrefixedDecoder(model.model, prefix)

    def __getattr__(self, name: str):
        return getattr(self._model, name)


class _PrefixedDecoder:
    def __init__(self, model: ctranslate2.models.Whisper, prefix: list[int]) -> None:
        self._model = model
        self._prefix = prefix

    def generate(self, encoder_output, prompts, **kwargs):
        return self._model.generate(encoder_output, [prompts[0] + self._prefix, *prompts[1:]], **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._model, name)


def _early_tokens(
    hypotheses: list[list[int]], tokenizer: Tokenizer, language: str, limit: int = EARLY_TOKENS
) -> list[int]:
    """The tokens that every hypothesis of the short beam search starts with (the beam search over the whole
    chunk goes on from one of those beams, so its text starts with them too), up to their last sentence end, or
    else their last word end. When the hypotheses part before a word ends (e.g. "1, 2, 3", "1 2 3" and "One,
    two"), the best one's words. A hypothesis `limit` tokens long was cut there, maybe inside a word."""
    common = list(hypotheses[0])
    for other in hypotheses[1:]:
        same = next((i for i, (a, b) in enumerate(zip(common, other, strict=False)) if a != b), None)
        common = common[: min(len(common), len(other)) if same is None else same]
    return _whole_words(common, hypotheses, tokenizer, language, limit) or _whole_words(
        hypotheses[0], hypotheses[:1], tokenizer, language, limit
    )


def _whole_words(
    tokens: list[int], hypotheses: list[list[int]], tokenizer: Tokenizer, language: str, limit: int
) -> list[int]:
    """`tokens` up to their last sentence end, or else their last word end (a character's, in languages written
    without spaces), where a word ends when every hypothesis ended there or goes on with a space or a mark."""

    def word_ends(count: int) -> bool:
        if any(len(h) == count == limit for h in hypotheses):  # cut there: the word may go on
            return False
        following = (tokenizer.decode([h[count]]) for h in hypotheses if len(h) > count)
        return language in UNSPACED or not any(text[:1].isalnum() or text[:1] in "'’-" for text in following)

    word_end = 0
    for count in range(len(tokens), 0, -1):
        text = tokenizer.decode(tokens[:count])
        if "\ufffd" in text or not text.strip():  # the middle of a character; no word yet
            continue
        if text.rstrip().endswith(SENTENCE_ENDS):
            return list(tokens[:count])
        if not word_end and word_ends(count):
            word_end = count
    return list(tokens[:word_end])


def _after_prefix(chunk: list[dict], prefix: list[int], tokenizer: Tokenizer) -> list[dict]:
    """The first chunk's decoded segment without the words already sent (`prefix`, its first tokens)."""
    if not chunk:
        return chunk
    segment = dict(chunk[0])
    tokens = segment["tokens"][len(prefix) :]
    if not tokens:
        return chunk[1:]
    segment["tokens"] = tokens
    segment["text"] = tokenizer.decode(tokens)
    return [segment, *chunk[1:]]


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
