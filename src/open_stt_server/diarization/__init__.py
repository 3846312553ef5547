"""Who spoke when: the diarizer interface every engine's transcript can be labelled with.

A diarizer takes 16 kHz mono samples and returns speaker turns. Turns carry a speaker key: a known speaker's
name, or `#0`, `#1`, ... for voices it could not name; `speakers.label_segments` turns keys into the letters
clients see. `load_diarizer` builds the one the settings choose, or explains what is missing.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from open_stt_server.diarization.diarizer import (
    DIARIZERS,
    INSTALL_HINT,
    KNOWN_SPEAKER_SIMILARITY,
    UNNAMED_PREFIX,
    WEIGHTS_PACKAGE,
    WEIGHTS_VERSION,
    DiarizationCancelled,
    DiarizationRequest,
    Diarizer,
    DiarizerUnavailable,
    KnownSpeaker,
    SpeakerCount,
    SpeakerTurn,
)

__all__ = [
    "DIARIZERS",
    "INSTALL_HINT",
    "KNOWN_SPEAKER_SIMILARITY",
    "UNNAMED_PREFIX",
    "WEIGHTS_PACKAGE",
    "WEIGHTS_VERSION",
    "DiarizationCancelled",
    "DiarizationRequest",
    "Diarizer",
    "DiarizerUnavailable",
    "KnownSpeaker",
    "SpeakerCount",
    "SpeakerTurn",
    "ge2e_weights",
    "load_diarizer",
]


def ge2e_weights(explicit: str | None = None) -> Path:
    """The GE2E voice-encoder weights: an explicit file, else the one inside an installed Resemblyzer wheel
    (found without importing the package, whose imports need webrtcvad and PyTorch)."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise DiarizerUnavailable(f"The diarizer weights file '{explicit}' does not exist.")
        return path
    missing = [m for m in ("scipy",) if importlib.util.find_spec(m) is None]
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    candidates = [Path(p) / "pretrained.pt" for p in locations]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        missing.append(f"{WEIGHTS_PACKAGE} (weights)")
    if missing:
        raise DiarizerUnavailable(
            f"Speaker diarization needs packages that are not installed (missing: {', '.join(missing)}). "
            f"Install them with: {INSTALL_HINT}"
        )
    assert found is not None
    return found


def load_diarizer(choice: str, weights: str | None = None) -> Diarizer | None:
    """The diarizer for `choice` ("auto", "ge2e", "pyannote", "off"); None when off, or when auto finds nothing
    installed. `weights`: a GE2E checkpoint, or for pyannote a pipeline repo id or directory.

    Raises DiarizerUnavailable when the chosen diarizer cannot run."""
    if choice == "off":
        return None
    if choice == "pyannote":
        from open_stt_server.diarization.pyannote import PyannoteDiarizer

        try:
            encoder = ge2e_weights()  # names known speakers when installed
        except DiarizerUnavailable:
            encoder = None
        return PyannoteDiarizer(weights, encoder)
    try:
        path = ge2e_weights(weights)
    except DiarizerUnavailable:
        if choice == "auto" and not weights:
            return None
        raise
    from open_stt_server.diarization.ge2e import Ge2eDiarizer

    return Ge2eDiarizer(path)
