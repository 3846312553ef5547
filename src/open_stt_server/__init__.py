"""open-stt-server: OpenAI-compatible speech-to-text served from resident Whisper models."""

__version__ = "0.1.0"
