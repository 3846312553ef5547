"""Languages Whisper knows: ISO 639-1 code → the English name OpenAI reports in `verbose_json`."""

from __future__ import annotations

LANGUAGE_NAMES: dict[str, str] = {
    "af": "afrikaans", "am": "amharic", "ar": "arabic", "as": "assamese", "az": "azerbaijani",
    "ba": "bashkir", "be": "belarusian", "bg": "bulgarian", "bn": "bengali", "bo": "tibetan",
    "br": "breton", "bs": "bosnian", "ca": "catalan", "cs": "czech", "cy": "welsh", "da": "danish",
    "de": "german", "el": "greek", "en": "english", "es": "spanish", "et": "estonian", "eu": "basque",
    "fa": "persian", "fi": "finnish", "fo": "faroese", "fr": "french", "gl": "galician",
    "gu": "gujarati", "ha": "hausa", "haw": "hawaiian", "he": "hebrew", "hi": "hindi",
    "hr": "croatian", "ht": "haitian creole", "hu": "hungarian", "hy": "armenian",
    "id": "indonesian", "is": "icelandic", "it": "italian", "ja": "japanese", "jw": "javanese",
    "ka": "georgian", "kk": "kazakh", "km": "khmer", "kn": "kannada", "ko": "korean", "la": "latin",
    "lb": "luxembourgish", "ln": "lingala", "lo": "lao", "lt": "lithuanian", "lv": "latvian",
    "mg": "malagasy", "mi": "maori", "mk": "macedonian", "ml": "malayalam", "mn": "mongolian",
    "mr": "marathi", "ms": "malay", "mt": "maltese", "my": "myanmar", "ne": "nepali", "nl": "dutch",
    "nn": "nynorsk", "no": "norwegian", "oc": "occitan", "pa": "punjabi", "pl": "polish",
    "ps": "pashto", "pt": "portuguese", "ro": "romanian", "ru": "russian", "sa": "sanskrit",
    "sd": "sindhi", "si": "sinhala", "sk": "slovak", "sl": "slovenian", "sn": "shona", "so": "somali",
    "sq": "albanian", "sr": "serbian", "su": "sundanese", "sv": "swedish", "sw": "swahili",
    "ta": "tamil", "te": "telugu", "tg": "tajik", "th": "thai", "tk": "turkmen", "tl": "tagalog",
    "tr": "turkish", "tt": "tatar", "uk": "ukrainian", "ur": "urdu", "uz": "uzbek",
    "vi": "vietnamese", "yi": "yiddish", "yo": "yoruba", "yue": "cantonese", "zh": "chinese",
}  # fmt: skip

# written without spaces between words (a character stands for a word where words are cut)
UNSPACED = frozenset({"zh", "ja", "th", "lo", "my", "yue"})
_CODE_BY_NAME = {name: code for code, name in LANGUAGE_NAMES.items()}
# Names clients commonly send that are not Whisper's own spelling.
_CODE_BY_NAME.update({"burmese": "my", "castilian": "es", "flemish": "nl", "haitian": "ht",
                      "letzeburgesch": "lb", "mandarin": "zh", "moldavian": "ro", "moldovan": "ro",
                      "panjabi": "pa", "pushto": "ps", "sinhalese": "si", "valencian": "ca"})  # fmt: skip


def language_code(value: str) -> str | None:
    """The Whisper code for an ISO 639-1 code or English language name (any case), else None."""
    key = value.strip().lower().replace("_", "-")
    if key in LANGUAGE_NAMES:
        return key
    if key in _CODE_BY_NAME:
        return _CODE_BY_NAME[key]
    base = key.split("-")[0]  # "en-US" → "en"
    return base if base in LANGUAGE_NAMES else None


def language_name(code: str) -> str:
    return LANGUAGE_NAMES.get(code, code)


class UnsupportedLanguage(ValueError):
    """A `language` a model cannot take; the message says why and what to send instead."""


def model_language(raw: str, model: str, english_only: bool, accepted: frozenset[str] | None) -> str:
    """The Whisper code for the `language` a client sent ("fr", "French", "fr-CA" → "fr"), checked against what
    the model takes (`accepted`: its codes, None = all of Whisper's). Files and realtime sessions read it alike."""
    code = language_code(raw)
    if code is None:
        raise UnsupportedLanguage(f"Unsupported language '{raw}': use an ISO 639-1 code such as 'en'.")
    if accepted is not None and code not in accepted:
        raise UnsupportedLanguage(
            f"Model '{model}' does not take language '{raw}'; use an ISO 639-1 code it knows, or leave language "
            "out to detect it."
        )
    if english_only and code != "en":
        raise UnsupportedLanguage(
            f"Model '{model}' is English-only and cannot transcribe '{raw}'; use a multilingual model."
        )
    return code
