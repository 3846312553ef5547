"""Mistral's Voxtral through Hugging Face transformers (the `voxtral` extra).

Audio is cut into pieces of at most one encoder window (30 s) at quiet points (or at VAD speech regions when
`vad_filter` is on); each piece is one transcription request of the model's own template
(`VoxtralProcessor.apply_transcription_request`) and becomes one segment whose times are the piece's true
offsets. Voxtral gives no finer timestamps, no word times and no translation to English in this mode.
"""

from __future__ import annotations

import logging
import math
import threading
import unicodedata
from pathlib import Path

import numpy as np
import torch
from faster_whisper.transcribe import get_compression_ratio
from transformers import (
    AutoProcessor,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
    VoxtralForConditionalGeneration,
)

from open_stt_server.audio import SAMPLE_RATE
from open_stt_server.catalog import ModelSpec
from open_stt_server.chunking import (
    Piece,
    is_silent,
    piece_segments,
    quiet_pieces,
    speech_pieces,
    speech_regions,
)
from open_stt_server.engines.engine import VOXTRAL_LANGUAGES, Decoding, EngineUnavailable
from open_stt_server.settings import Settings
from open_stt_server.transcript import COMPRESSION_RATIO_LIMIT, LOGPROB_LIMIT, Segment, TranscribeOptions

log = logging.getLogger(__name__)

PIECE_S = 30.0  # one window of Voxtral's audio encoder
# The output budget grows with the audio: fast speech is ~5 text tokens a second (CJK ~7); twice that plus a
# margin leaves room for any real transcript and still stops a decoder that loops.
TOKENS_PER_SECOND = 12.0
MIN_TOKENS = 32
UNKNOWN_LANGUAGE = "unknown"

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def token_budget(seconds: float) -> int:
    """The most text tokens one piece of `seconds` of audio may produce."""
    return MIN_TOKENS + math.ceil(max(seconds, 0.0) * TOKENS_PER_SECOND)


def pick_device_and_dtype(settings: Settings) -> tuple[str, torch.dtype]:
    device = "cuda" if not settings.force_cpu and torch.cuda.is_available() else "cpu"
    wanted = settings.compute_type
    if wanted in (None, "", "default", "auto"):
        if device == "cuda":
            return device, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return device, torch.float32
    if wanted not in DTYPES:
        raise EngineUnavailable(
            f"--compute-type {wanted} is not supported by the Voxtral engine; use one of "
            f"{', '.join(DTYPES)} (or leave it unset: bfloat16 on CUDA, float32 on CPU)."
        )
    if wanted == "float16" and device == "cpu":
        raise EngineUnavailable("--compute-type float16 needs CUDA; on the CPU use float32 or bfloat16.")
    return device, DTYPES[wanted]


class _ChosenTokenLogprobs(LogitsProcessor):
    """Records the log-probability of each generated token (of the model's raw distribution), one vocabulary
    row at a time: at every step the previous step's choice is the last input id."""

    def __init__(self) -> None:
        self.previous: torch.Tensor | None = None
        self.logprobs: list[float] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.previous is not None:
            self.logprobs.append(float(self.previous[0, input_ids[0, -1]]))
        self.previous = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def finish(self, last_token: int) -> None:
        if self.previous is not None:
            self.logprobs.append(float(self.previous[0, last_token]))
            self.previous = None


class _StopWhenSet(StoppingCriteria):
    """Ends generation at the next token once the request is cancelled (client gone, timeout, shutdown)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        return torch.full(
            (input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device
        )


class VoxtralEngine:
    english_only = False
    supports_translation = False
    supports_word_timestamps = False
    supports_prompt = False
    # The request template takes ISO 639-1 codes: Whisper's three-letter and made-up ones (haw, yue, jw) do not fit.
    languages = VOXTRAL_LANGUAGES

    def __init__(self, spec: ModelSpec, weights: Path, settings: Settings) -> None:
        self.spec = spec
        self.device, self.dtype = pick_device_and_dtype(settings)
        self.compute_type = str(self.dtype).removeprefix("torch.")
        if self.device == "cpu":
            torch.set_num_threads(settings.threads_per_worker())
        self.processor = AutoProcessor.from_pretrained(str(weights), local_files_only=True)
        self.model = VoxtralForConditionalGeneration.from_pretrained(
            str(weights), dtype=self.dtype, device_map=self.device, local_files_only=True
        ).eval()
        self.eos_token_id = self.processor.tokenizer.eos_token_id
        text_config = self.model.config.text_config
        self.max_positions = int(getattr(text_config, "max_position_embeddings", 32768))

    def close(self) -> None:
        del self.model, self.processor
        if self.device == "cuda":
            torch.cuda.empty_cache()

    def start(
        self, samples: np.ndarray, options: TranscribeOptions, cancelled: threading.Event | None = None
    ) -> Decoding:
        if options.vad_filter:
            pieces = speech_pieces(speech_regions(samples, options, PIECE_S), PIECE_S)
        else:
            pieces = quiet_pieces(samples, PIECE_S)
        language = options.language
        stop = cancelled or threading.Event()

        def transcribe(piece: Piece, index: int) -> Segment | None:
            return self._transcribe_piece(samples, piece, index, options, stop)

        return Decoding(language or UNKNOWN_LANGUAGE, piece_segments(pieces, transcribe, stop))

    # -- one piece ------------------------------------------------------------------------------------

    def _transcribe_piece(
        self, samples: np.ndarray, piece: Piece, index: int, options: TranscribeOptions, stop: threading.Event
    ) -> Segment | None:
        audio = samples[piece.start : piece.end]
        if is_silent(audio):
            return None
        inputs = self.processor.apply_transcription_request(
            audio=audio,
            sampling_rate=SAMPLE_RATE,
            format="wav",
            language=options.language,
            model_id=self.spec.source,
        ).to(self.device)
        inputs["input_features"] = inputs["input_features"].to(self.dtype)
        prompt_length = int(inputs["input_ids"].shape[1])
        budget = min(token_budget(len(audio) / SAMPLE_RATE), self.max_positions - prompt_length)
        if budget <= 0:
            raise RuntimeError(
                f"a {PIECE_S:g} s piece does not fit the model's context of {self.max_positions}"
            )

        best: tuple[list[int], str, float, float, float] | None = None
        for temperature in options.temperatures:
            tokens, logprobs = self._generate(inputs, budget, temperature, stop)
            if stop.is_set():
                log.info("voxtral piece %.1f-%.1f s stopped after %d of %d tokens: request cancelled",
                         piece.start_s, piece.end_s, len(tokens), budget)  # fmt: skip
                return None
            text = self.processor.tokenizer.decode(tokens, skip_special_tokens=True).strip()
            avg_logprob = sum(logprobs) / len(logprobs) if logprobs else 0.0
            ratio = get_compression_ratio(text) if text else 0.0  # Whisper's repetition measure
            best = (tokens, text, temperature, avg_logprob, ratio)
            ran_out = len(tokens) >= budget and (not tokens or tokens[-1] != self.eos_token_id)
            if ran_out:
                log.warning("voxtral piece %.1f-%.1f s used its whole budget of %d tokens at temperature %.1f",
                            piece.start_s, piece.end_s, budget, temperature)  # fmt: skip
            if not ran_out and ratio <= COMPRESSION_RATIO_LIMIT and avg_logprob >= LOGPROB_LIMIT:
                break
        assert best is not None
        tokens, text, temperature, avg_logprob, ratio = best
        if not text:
            return None
        return Segment(
            id=index,
            seek=round(piece.start_s * 100),
            start=round(piece.start_s, 3),
            end=round(piece.end_s, 3),
            text=text if _joins_without_space(text) else " " + text,
            tokens=tuple(t for t in tokens if t != self.eos_token_id),
            temperature=temperature,
            avg_logprob=round(avg_logprob, 6),
            compression_ratio=round(ratio, 6),
            no_speech_prob=0.0,
        )

    @torch.inference_mode()
    def _generate(
        self, inputs, budget: int, temperature: float, stop: threading.Event
    ) -> tuple[list[int], list[float]]:
        prompt_length = int(inputs["input_ids"].shape[1])
        recorder = _ChosenTokenLogprobs()
        sampling = (
            {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        )
        output = self.model.generate(
            **inputs,
            max_new_tokens=budget,
            logits_processor=LogitsProcessorList([recorder]),
            stopping_criteria=StoppingCriteriaList([_StopWhenSet(stop)]),
            pad_token_id=self.eos_token_id,
            **sampling,
        )
        tokens = output[0, prompt_length:].tolist()
        if tokens:
            recorder.finish(tokens[-1])
        return tokens, recorder.logprobs


def _joins_without_space(text: str) -> bool:
    """Scripts written without spaces between words (Chinese, Japanese, Thai, …) join pieces directly."""
    name = unicodedata.name(text[0], "")
    return name.startswith(("CJK", "HIRAGANA", "KATAKANA", "THAI", "LAO", "KHMER", "MYANMAR", "HALFWIDTH"))
