"""The Whisper models the engine holds (CTranslate2 through faster-whisper): language detection sharing the
encoder pass of the window it detects on, and on CPU the one-thread decoders beside the model."""

from __future__ import annotations

import itertools
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.audio import pad_or_trim

ENCODINGS_KEPT = 8  # encoder outputs of language detection waiting for their window's decode


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
