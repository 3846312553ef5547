"""Useful Sensors' Moonshine (English) through ONNX Runtime: an encoder whose cost follows the audio's length,
and a merged decoder with a key/value cache, driven by our own decoding loop.

Moonshine was trained on short utterances: audio is cut at speech pauses (Silero VAD) into pieces of at most
`PIECE_S`, each decoded on its own and returned as one segment with the piece's true times. It gives no word
times and takes no prompt. The decoder's output is bounded by a token budget per second of audio, so noise
never loops; a decode that runs out of budget or repeats itself is tried again hotter (OpenAI's temperature=0
semantics, as for Whisper).

The models' ONNX Runtime format files (the bundles) store int8 weights that the graph turns back into floats on
every decoder step, and ONNX Runtime does not optimise a model of that format when loading it. Loaded here, they
are re-serialised as ONNX and optimised like any ONNX model: the dequantisation is folded into constants once,
and a decoder step of moonshine-base costs a fifth of what it did.
"""

from __future__ import annotations

import logging
import math
import tempfile
import threading
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
from faster_whisper.transcribe import get_compression_ratio
from tokenizers import Tokenizer

from open_stt_server import hub
from open_stt_server.audio import SAMPLE_RATE
from open_stt_server.catalog import ModelSpec
from open_stt_server.chunking import Piece, is_silent, piece_segments, speech_pieces, speech_regions
from open_stt_server.engines.engine import MOONSHINE_LANGUAGES, Decoding, EngineUnavailable
from open_stt_server.settings import Settings
from open_stt_server.transcript import COMPRESSION_RATIO_LIMIT, LOGPROB_LIMIT, Segment, TranscribeOptions

log = logging.getLogger(__name__)

PIECE_S = 15.0  # the longest piece decoded at once: Moonshine's error rate doubles on 25-55 s inputs
PIECE_GAP_S = 1.0  # a pause at least this long always ends a piece (and so a segment)
# Cutting at pauses: speech regions split at silences this long, padded so no word is clipped.
CUT_SILENCE_MS = 300
CUT_PAD_MS = 200
MIN_PIECE_SAMPLES = SAMPLE_RATE // 10  # the encoder needs some audio; shorter pieces are padded with silence
# Fast English speech is about 5 tokens a second (digits and punctuation more); past this budget a decode loops.
TOKENS_PER_SECOND = 10.0
MIN_TOKENS = 12
WORD_START = "▁"  # the tokenizer's mark on a token that opens a word
DECODER_START, END_OF_TEXT = 1, 2


def token_budget(seconds: float) -> int:
    return MIN_TOKENS + math.ceil(max(seconds, 0.0) * TOKENS_PER_SECOND)


@dataclass
class _Decoded:
    tokens: list[int]
    logprobs: list[float]
    temperature: float
    ran_out: bool

    @property
    def avg_logprob(self) -> float:
        return sum(self.logprobs) / len(self.logprobs) if self.logprobs else 0.0


class MoonshineEngine:
    english_only = True
    supports_translation = False
    supports_word_timestamps = False
    supports_prompt = False
    languages = MOONSHINE_LANGUAGES

    def __init__(self, spec: ModelSpec, weights: Path, settings: Settings) -> None:
        self.spec = spec
        cuda = not settings.force_cpu and "CUDAExecutionProvider" in ort.get_available_providers()
        self.device = "cuda" if cuda else "cpu"
        self.providers = (
            ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]
        )
        if settings.compute_type not in (None, "", "default", "auto", "int8"):
            log.info("%s keeps its published int8 weights: --compute-type %s applies to the other engines",
                     spec.name, settings.compute_type)  # fmt: skip
        self.compute_type = "int8"
        self.threads = settings.threads_per_worker()
        self.encoder = self._session(_model_file(weights, "encoder_model"))
        self.decoder = self._session(_model_file(weights, "decoder_model_merged"))
        tokenizer = weights / "tokenizer.json"
        if not tokenizer.is_file():
            tokenizer = hub.resolve_tokenizer(spec)
        self.tokenizer = Tokenizer.from_file(str(tokenizer))
        self._read_interface()

    def _session(self, path: Path) -> ort.InferenceSession:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        model: str | bytes = _optimisable(path) if path.suffix == ".ort" else str(path)
        return ort.InferenceSession(model, options, providers=self.providers)

    def _read_interface(self) -> None:
        """Input names and cache shapes from the sessions themselves: exports differ (masks, head sizes)."""
        encoder_inputs = {i.name for i in self.encoder.get_inputs()}
        decoder_inputs = {i.name: i for i in self.decoder.get_inputs()}
        self.encoder_mask = "attention_mask" in encoder_inputs
        self.decoder_mask = "encoder_attention_mask" in decoder_inputs
        self.cache_names = [name for name in decoder_inputs if name.startswith("past_key_values.")]
        self.cache_shapes = {}
        for name in self.cache_names:
            heads, head_size = decoder_inputs[name].shape[1], decoder_inputs[name].shape[3]
            if not isinstance(heads, int) or not isinstance(head_size, int):
                raise EngineUnavailable(f"Moonshine decoder input {name} has no fixed head count or size")
            self.cache_shapes[name] = (heads, head_size)
        self.output_names = [o.name for o in self.decoder.get_outputs()]
        if self.output_names[0] != "logits" or "use_cache_branch" not in decoder_inputs:
            raise EngineUnavailable("the Moonshine decoder is not a merged decoder with a cache branch")

    def close(self) -> None:
        del self.encoder, self.decoder

    def start(
        self, samples: np.ndarray, options: TranscribeOptions, cancelled: threading.Event | None = None
    ) -> Decoding:
        stop = cancelled or threading.Event()
        pieces = self.pieces(samples, options)

        def transcribe(piece: Piece, index: int) -> Segment | None:
            return self._transcribe_piece(samples, piece, index, options, stop)

        return Decoding("en", piece_segments(pieces, transcribe, stop))

    @staticmethod
    def pieces(samples: np.ndarray, options: TranscribeOptions) -> list[Piece]:
        """Short audio whole (a live turn, a voice command); longer audio cut at speech pauses — with the
        client's VAD settings when it asked for VAD, else at any pause long enough to be one."""
        if not options.vad_filter and len(samples) <= PIECE_S * SAMPLE_RATE:
            return [Piece(0, len(samples))]
        if not options.vad_filter:
            options = replace(options, vad_min_silence_ms=CUT_SILENCE_MS, vad_speech_pad_ms=CUT_PAD_MS)
        regions = speech_regions(samples, options, PIECE_S)
        return speech_pieces(regions, PIECE_S, max_gap_s=PIECE_GAP_S)

    # -- one piece ------------------------------------------------------------------------------------

    def _transcribe_piece(
        self, samples: np.ndarray, piece: Piece, index: int, options: TranscribeOptions, stop: threading.Event
    ) -> Segment | None:
        audio = samples[piece.start : piece.end]
        if is_silent(audio):
            return None
        if len(audio) < MIN_PIECE_SAMPLES:
            audio = np.pad(audio, (0, MIN_PIECE_SAMPLES - len(audio)))
        hidden = self._encode(audio)
        budget = token_budget(len(audio) / SAMPLE_RATE)
        best: tuple[_Decoded, str, float] | None = None
        for temperature in options.temperatures:
            decoded = self._decode(hidden, len(audio), budget, temperature, stop)
            if stop.is_set():
                return None
            text = self.tokenizer.decode(decoded.tokens, skip_special_tokens=True).strip()
            ratio = get_compression_ratio(text) if text else 0.0
            if best is None or not decoded.ran_out or (best[0].ran_out and ratio < best[2]):
                best = (decoded, text, ratio)
            if decoded.ran_out:
                log.warning("moonshine piece %.1f-%.1f s used its whole budget of %d tokens at temperature %.1f",
                            piece.start_s, piece.end_s, budget, temperature)  # fmt: skip
            elif ratio <= COMPRESSION_RATIO_LIMIT and decoded.avg_logprob >= LOGPROB_LIMIT:
                break
        assert best is not None
        decoded, text, ratio = best
        if not text:
            return None
        return Segment(
            id=index,
            seek=round(piece.start_s * 100),
            start=round(piece.start_s, 3),
            end=round(piece.end_s, 3),
            text=" " + text,
            tokens=tuple(decoded.tokens),
            temperature=decoded.temperature,
            avg_logprob=round(decoded.avg_logprob, 6),
            compression_ratio=round(ratio, 6),
            no_speech_prob=0.0,
            word_probabilities=self._word_probabilities(decoded, text),
        )

    def _word_probabilities(self, decoded: _Decoded, text: str) -> tuple[float, ...] | None:
        """Each word's probability (the product of its tokens'): a token that opens a word starts with the
        tokenizer's space mark. None when the words so counted are not the text's."""
        words: list[float] = []
        for token, logprob in zip(decoded.tokens, decoded.logprobs, strict=False):
            if self.tokenizer.id_to_token(token).startswith(WORD_START) or not words:
                words.append(logprob)
            else:
                words[-1] += logprob
        return tuple(math.exp(w) for w in words) if len(words) == len(text.split()) else None

    def _encode(self, audio: np.ndarray) -> np.ndarray:
        feed = {"input_values": audio[np.newaxis].astype(np.float32, copy=False)}
        if self.encoder_mask:
            feed["attention_mask"] = np.ones((1, len(audio)), dtype=np.int64)
        return self.encoder.run(None, feed)[0]

    def _decode(
        self, hidden: np.ndarray, samples: int, budget: int, temperature: float, stop: threading.Event
    ) -> _Decoded:
        """Greedy (or sampled, when hotter) decoding with the key/value cache: the first step fills the
        cross-attention cache from the encoder's output, later steps feed one token and reuse it. A decoder
        that takes a mask takes it over the audio's samples, as the encoder does."""
        cache = {
            name: np.zeros((1, heads, 0, size), dtype=np.float32)
            for name, (heads, size) in self.cache_shapes.items()
        }
        fixed = {"encoder_hidden_states": hidden}
        if self.decoder_mask:
            fixed["encoder_attention_mask"] = np.ones((1, samples), dtype=np.int64)
        rng = np.random.default_rng() if temperature > 0 else None
        tokens: list[int] = []
        logprobs: list[float] = []
        previous = DECODER_START
        for step in range(budget):
            if stop.is_set():
                break
            feed = {
                "input_ids": np.array([[previous]], dtype=np.int64),
                "use_cache_branch": np.array([step > 0]),
                **fixed,
                **cache,
            }
            logits, *present = self.decoder.run(None, feed)
            for name, value in zip(self.output_names[1:], present, strict=True):
                past = name.replace("present.", "past_key_values.", 1)
                if step == 0 or ".decoder." in past:  # the cross-attention cache is made once
                    cache[past] = value
            scores = logits[0, -1].astype(np.float64)
            log_probs = scores - _log_sum_exp(scores)
            if rng is None:
                token = int(np.argmax(scores))
            else:
                hot = np.exp((log_probs - log_probs.max()) / temperature)
                token = int(rng.choice(len(hot), p=hot / hot.sum()))
            logprobs.append(float(log_probs[token]))
            if token == END_OF_TEXT:
                return _Decoded(tokens, logprobs, temperature, ran_out=False)
            tokens.append(token)
            previous = token
        if stop.is_set():
            return _Decoded(tokens, logprobs, temperature, ran_out=False)
        kept = without_repeated_tail(tokens)
        return _Decoded(tokens[:kept], logprobs[:kept], temperature, ran_out=True)


def without_repeated_tail(tokens: list[int], longest: int = 16, times: int = 3) -> int:
    """How many tokens to keep of a decode that ran out of budget: a phrase repeated `times` or more at the end
    is kept once (audio cut mid-word often sends the decoder round one phrase)."""
    for period in range(1, longest + 1):
        tail = tokens[len(tokens) - period :]
        count, end = 1, len(tokens) - period
        while end >= period and tokens[end - period : end] == tail:
            count, end = count + 1, end - period
        if count >= times and count * period >= 6:
            return end + period
    return len(tokens)


def _log_sum_exp(scores: np.ndarray) -> float:
    top = float(scores.max())
    return top + math.log(float(np.exp(scores - top).sum()))


def _model_file(directory: Path, stem: str) -> Path:
    for suffix in (".onnx", ".ort"):
        if (directory / f"{stem}{suffix}").is_file():
            return directory / f"{stem}{suffix}"
    raise EngineUnavailable(f"{directory} holds no {stem}.onnx or {stem}.ort")


def _optimisable(path: Path) -> bytes:
    """An ONNX Runtime format model re-serialised as ONNX, so that loading it optimises the graph (constant
    folding above all). ONNX Runtime writes subgraphs without names, which an ONNX graph must have."""
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.optimized_model_filepath = str(Path(tmp) / "model.onnx")
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        model = onnx.load(options.optimized_model_filepath)
    model.graph.name = model.graph.name or path.stem
    _name_subgraphs(model.graph)
    return model.SerializeToString()


def _name_subgraphs(graph) -> None:
    import onnx

    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                attribute.g.name = attribute.g.name or f"{graph.name}/{node.name}/{attribute.name}"
                _name_subgraphs(attribute.g)
