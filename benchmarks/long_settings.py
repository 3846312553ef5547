"""The batched long-file pipeline under other settings, in-process, on the benchmark's 10-minute file.

    python benchmarks/long_settings.py 8x5 8x1 16x1 8x2 8x3     # BATCHxBEAM
    python benchmarks/long_settings.py seq 8x5 8x5x2 8x5 8x5x2 seq   # interleaved: sequential, lanes

Prints one JSON line per setting, in the order given: wall seconds, speed (× real time) and WER against the
known text. `seq` is faster-whisper's sequential decoder (beam 5); BATCHxBEAMxLANES decodes the clips in LANES
consecutive groups side by side (threads sharing one model with LANES CTranslate2 workers). Interleave settings
to compare them: this shared machine's speed drifts by tens of percent within an hour.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from faster_whisper import BatchedInferencePipeline, WhisperModel, decode_audio

from benchmarks.run import make_long_file, weights_dir, wer
from open_stt_server.chunking import speech_pieces, speech_regions
from open_stt_server.transcript import FALLBACK_TEMPERATURES, TranscribeOptions


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path, reference = make_long_file(Path(tmp) / "long.wav", 600)
        audio = decode_audio(str(path))
    model = WhisperModel(str(weights_dir("whisper-base")), device="cpu", compute_type="int8",
                         cpu_threads=os.cpu_count() or 1, num_workers=2)  # fmt: skip
    pipeline = BatchedInferencePipeline(model)
    started = time.perf_counter()
    pieces = speech_pieces(speech_regions(audio, TranscribeOptions(), 30.0), 30.0)
    clips = [{"start": p.start_s, "end": p.end_s} for p in pieces]
    print(json.dumps({"audio_s": round(len(audio) / 16000, 1), "vad_s": round(time.perf_counter() - started, 2),
                      "clips": len(clips)}), flush=True)  # fmt: skip
    for setting in sys.argv[1:] or ["8x5"]:
        started = time.perf_counter()
        if setting == "seq":
            segments, _ = model.transcribe(audio, language="en", beam_size=5)
            text, figures = "".join(s.text for s in segments), {"path": "sequential"}
        else:
            batch, beam, lanes = ([*map(int, setting.split("x")), 1])[:3]

            def decode(group: list[dict], batch: int = batch, beam: int = beam) -> str:
                segments, _ = pipeline.transcribe(audio, language="en", clip_timestamps=group, batch_size=batch,
                                                  beam_size=beam, without_timestamps=True,
                                                  temperature=list(FALLBACK_TEMPERATURES))  # fmt: skip
                return "".join(s.text for s in segments)

            share = -(-len(clips) // lanes)
            groups = [clips[i : i + share] for i in range(0, len(clips), share)]
            with concurrent.futures.ThreadPoolExecutor(lanes) as pool:
                text = "".join(pool.map(decode, groups))
            figures = {"batch": batch, "beam": beam, "lanes": lanes}
        wall = time.perf_counter() - started
        print(json.dumps({**figures, "wall_s": round(wall, 2), "x_realtime": round(len(audio) / 16000 / wall, 2),
                          "wer": round(wer(reference, text), 4)}), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
