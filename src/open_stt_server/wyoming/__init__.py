"""Home Assistant's Wyoming protocol over the live-speech core: `describe` → `info`, and each utterance
(`transcribe`, `audio-start`, `audio-chunk`s, `audio-stop`) a live stream whose words come back as
`transcript-chunk`s while the speaker talks, then `transcript-stop` and the final `transcript`."""
