"""Long audio through faster-whisper's batched pipeline, as its users call it: Silero VAD, speech packed into
chunks of up to 30 s, batches decoded without timestamp tokens. Here each batch is split over the one-thread
decoders beside the model (CPU), the language is read from the first batch's own encoder output, and a streamed
request gets the first chunk's first words before the first batch is decoded."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace

import ctranslate2
import numpy as np
from faster_whisper import BatchedInferencePipeline, WhisperModel
from faster_whisper.audio import pad_or_trim
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import Segment as FwSegment
from faster_whisper.transcribe import get_compression_ratio, get_suppressed_tokens
from faster_whisper.vad import VadOptions, collect_chunks, get_speech_timestamps

from open_stt_server.audio import SAMPLE_RATE
from open_stt_server.engines.whisper_models import Decoders, OneEncodeWhisperModel
from open_stt_server.languages import UNSPACED
from open_stt_server.sentences import SENTENCE_ENDS
from open_stt_server.transcript import TranscribeOptions

CHUNK_S = 30  # the batched pipeline packs speech into chunks of up to this long
FIRST_CHUNK_WITHIN_S = 45.0  # streamed: VAD over this much first, to find the first chunk (else over more)
# the beam search of the batched path (faster-whisper's defaults, named so that the early search is the same)
SEARCH = {"patience": 1, "length_penalty": 1, "repetition_penalty": 1, "no_repeat_ngram_size": 0,
          "suppress_blank": True, "suppress_tokens": [-1]}  # fmt: skip
EARLY_TOKENS = 12  # streamed: the first chunk's first tokens, decoded alone so that text starts early


def packed(
    model: OneEncodeWhisperModel, decoders: Decoders | None, samples: np.ndarray, options: TranscribeOptions,
    language: str | None, batch_size: int,
) -> tuple[LongAudioPipeline, Iterator[FwSegment]]:  # fmt: skip
    """The batched pipeline over `samples` (language None: learned from the first batch); its segments are
    decoded as they are read."""
    pipeline = LongAudioPipeline(model, options.task, decoders)
    vad = VadOptions(max_speech_duration_s=CHUNK_S, min_silence_duration_ms=160)  # the pipeline's own
    if options.vad_filter:  # the client's VAD settings
        vad = VadOptions(threshold=options.vad_threshold, min_silence_duration_ms=options.vad_min_silence_ms,
                         speech_pad_ms=options.vad_speech_pad_ms, max_speech_duration_s=CHUNK_S)  # fmt: skip
    search = {**SEARCH, "beam_size": options.beam_size, "initial_prompt": options.prompt or None,
              "hotwords": options.hotwords or None, "temperature": options.temperatures[0]}  # fmt: skip

    def transcribe(language: str | None) -> Iterable[FwSegment]:
        return pipeline.transcribe(
            samples, language=language or "en", multilingual=language is None, task=options.task,
            batch_size=batch_size, vad_filter=True, vad_parameters=vad, without_timestamps=True,
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


class LongAudioPipeline(BatchedInferencePipeline):
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
        # streamed: the first chunk's features and encoder output, until the first batch is decoded
        self.head: tuple[np.ndarray, ctranslate2.StorageView] | None = None
        self.prefix: list[int] = []  # the first chunk's tokens already yielded, until its batch is decoded

    def _parts(self, rows: int) -> list[slice]:
        if self.decoders is None:
            return [slice(0, rows)]
        # streamed, the first batch's first part starts early (its first chunk was encoded ahead): it takes the
        # larger share
        return self.decoders.parts(rows, larger_first=self.head is not None)

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
        self.head = None
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
