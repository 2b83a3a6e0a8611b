"""Language names as users type them (English and native names) and ISO 639-1 codes."""

# Language names as users type them (English and the language's own name) -> ISO 639-1.
LANGUAGES: dict[str, str] = {
    "english": "en", "englisch": "en", "anglais": "en", "inglés": "en", "ingles": "en",
    "german": "de", "deutsch": "de", "deutsche": "de", "allemand": "de", "alemán": "de",
    "french": "fr", "français": "fr", "francais": "fr", "französisch": "fr", "franzoesisch": "fr",
    "spanish": "es", "español": "es", "espanol": "es", "spanisch": "es", "espagnol": "es",
    "italian": "it", "italiano": "it", "italienisch": "it", "italien": "it",
    "dutch": "nl", "nederlands": "nl", "portuguese": "pt", "português": "pt",
    "polish": "pl", "swedish": "sv", "danish": "da", "norwegian": "no", "finnish": "fi",
    "czech": "cs", "turkish": "tr", "russian": "ru", "japanese": "ja", "chinese": "zh",
}
LANGUAGE_NAMES = {
    "en": "English", "de": "German", "fr": "French", "es": "Spanish", "it": "Italian",
    "nl": "Dutch", "pt": "Portuguese", "pl": "Polish", "sv": "Swedish", "da": "Danish",
    "no": "Norwegian", "fi": "Finnish", "cs": "Czech", "tr": "Turkish", "ru": "Russian",
    "ja": "Japanese", "zh": "Chinese",
}


def language_name(code: str) -> str:
    return LANGUAGE_NAMES.get(code, code)
