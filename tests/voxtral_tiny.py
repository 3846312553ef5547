"""A randomly initialised Voxtral of the real architecture with tiny dimensions, laid out as a hub cache.

Real Voxtral weights are not reachable here (no hub access, none on PyPI). This builds what the engine would
download: `config.json` + `model.safetensors` from `VoxtralForConditionalGeneration.save_pretrained`, the
feature extractor's `preprocessor_config.json`, and a `tekken.json` tokenizer made from the real v3 tekken
vocabulary that mistral-common ships, upgraded to v7 with an audio section and the special tokens at the ranks
the released Voxtral tokenizer uses ([AUDIO] 24, [BEGIN_AUDIO] 25, [TRANSCRIBE] 34). Its text is random; its
shapes, tokenizer, processor and generation code are the real ones.

    python tests/voxtral_tiny.py CACHE_DIR [REPO_ID]
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

REPO_ID = "mistralai/Voxtral-Mini-3B-2507"
AUDIO_TOKEN_ID = 24
_SPECIAL_AT = {24: "[AUDIO]", 25: "[BEGIN_AUDIO]", 32: "[ARGS]", 33: "[CALL_ID]", 34: "[TRANSCRIBE]"}


def _tekken(target: Path) -> None:
    import mistral_common
    from mistral_common.tokens.tokenizers.tekken import Tekkenizer

    source = Path(mistral_common.__file__).parent / "data" / "tekken_240911.json"
    data = json.loads(source.read_text())
    data["config"]["version"] = "v7"
    specials = [{"rank": t["rank"], "token_str": str(t["token_str"]), "is_control": True}
                for t in Tekkenizer.DEPRECATED_SPECIAL_TOKENS]  # fmt: skip
    for rank in range(len(specials), data["config"]["default_num_special_tokens"]):
        name = _SPECIAL_AT.get(rank, f"<SPECIAL_{rank}>")
        specials.append({"rank": rank, "token_str": name, "is_control": True})
    data["special_tokens"] = specials
    data["audio"] = {
        "sampling_rate": 16000,
        "frame_rate": 12.5,
        "chunk_length_s": 30.0,
        "audio_encoding_config": {"num_mel_bins": 128, "hop_length": 160, "window_size": 400},
    }
    target.write_text(json.dumps(data))


def build_model_dir(target: Path, seed: int = 0) -> Path:
    """Write a loadable tiny Voxtral (≈ 17 M parameters, random) into `target`."""
    import torch
    from transformers import VoxtralConfig, VoxtralForConditionalGeneration, WhisperFeatureExtractor

    torch.manual_seed(seed)
    config = VoxtralConfig(
        audio_config={"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2,
                      "num_attention_heads": 2, "num_mel_bins": 128},
        text_config={"vocab_size": 131072, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 32,
                     "max_position_embeddings": 32768},
        audio_token_id=AUDIO_TOKEN_ID,
    )  # fmt: skip
    model = VoxtralForConditionalGeneration(config)
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target)
    WhisperFeatureExtractor(feature_size=128).save_pretrained(target)
    _tekken(target / "tekken.json")
    return target


def install_into_cache(cache: Path, repo_id: str = REPO_ID) -> Path:
    """Build the tiny model and lay it out as `huggingface_hub` would have downloaded `repo_id` into `cache`."""
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    if (repo_dir / "refs" / "main").exists():
        revision = (repo_dir / "refs" / "main").read_text().strip()
        return repo_dir / "snapshots" / revision
    with tempfile.TemporaryDirectory() as tmp:
        built = build_model_dir(Path(tmp) / "model")
        files = sorted(p for p in built.iterdir() if p.is_file())
        digests = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
        revision = hashlib.sha1("".join(sorted(digests.values())).encode()).hexdigest()
        snapshot = repo_dir / "snapshots" / revision
        (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
        snapshot.mkdir(parents=True, exist_ok=True)
        for path in files:
            blob = repo_dir / "blobs" / digests[path.name]
            shutil.copyfile(path, blob)
            (snapshot / path.name).symlink_to(Path("..", "..", "blobs", digests[path.name]))
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(revision)
    return snapshot


if __name__ == "__main__":
    print(install_into_cache(Path(sys.argv[1]), *sys.argv[2:3]))
