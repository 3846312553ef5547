"""OpenAI Realtime transcription sessions over WebSocket (`WS /v1/realtime`)."""
