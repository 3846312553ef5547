"""`describe` → `info`: one ASR program whose models are the loaded ones, by catalog name."""

from __future__ import annotations

from wyoming.info import AsrModel, AsrProgram, Attribution, Info

from open_stt_server import __version__
from open_stt_server.languages import LANGUAGE_NAMES
from open_stt_server.scheduler import ServedModels

# The engine the Whisper models run on: this project has no public home of its own to link yet.
PROJECT = Attribution(
    name="open-stt-server on faster-whisper", url="https://github.com/SYSTRAN/faster-whisper"
)
HUB = "https://huggingface.co/"


def model_languages(english_only: bool, accepted: frozenset[str] | None) -> list[str]:
    if english_only:
        return ["en"]
    return sorted(accepted if accepted is not None else LANGUAGE_NAMES)


def wyoming_info(served: ServedModels, endpointing: bool) -> Info:
    models = []
    for name, queue in served.queues.items():
        engine = queue.engine
        source = engine.spec.source
        url = HUB + source if "/" in source and not source.startswith(("/", ".", "~")) else source
        models.append(
            AsrModel(
                name=name,
                attribution=Attribution(name=source.split("/")[0], url=url),
                installed=True,
                description=f"{name} ({source})" + (" — default" if name == served.default else ""),
                version=None,
                languages=model_languages(engine.english_only, engine.languages),
            )
        )
    program = AsrProgram(
        name="open-stt-server",
        attribution=PROJECT,
        installed=True,
        description="Self-hosted speech-to-text: resident Whisper-family models, words streamed while you speak",
        version=__version__,
        models=models,
        supports_transcript_streaming=True,
        requires_external_vad=not endpointing,
    )
    return Info(asr=[program])
