"""Live speech with no protocol: audio in → speech started/stopped, partial words, finals out."""
