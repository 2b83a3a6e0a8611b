"""Is a model's output usable text? A cheap check that catches what undertrained models emit.

A seq2seq model early in training writes "sssss…", "L Luuueeeee" or one word over and over.
Passing that on as a translation or a summary is worse than saying the model is not ready, so
skills check model output here before they show it. The rules only flag text no language
writes (long letter runs, 40-letter "words", a handful of words repeated, a one-word answer to
a paragraph); a short but real answer passes.
"""

from __future__ import annotations

import re

_WORDS = re.compile(r"[^\W\d_]+")
_LETTER_RUN = re.compile(r"([^\W\d_])\1{4,}")


def degenerate(text: str, source: str | None = None) -> str | None:
    """Why ``text`` is not usable output (a short phrase), or ``None`` when it looks like text.

    ``source`` is the model's input, when known: a one-word reply to a long input is flagged.
    """
    words = _WORDS.findall(text.lower())
    if not words:
        return "it contains no words"
    if _LETTER_RUN.search(text.lower()):
        return "it repeats one letter over and over"
    if max(len(w) for w in words) > 40:
        return "it contains a run-on word"
    if len(words) >= 4 and len(set(words)) / len(words) < 0.3:
        return "it repeats a few words over and over"
    if source is not None:
        n_src = len(_WORDS.findall(source))
        if n_src >= 8 and len(words) < 0.2 * n_src:
            return "it is far shorter than the text"
    return None
