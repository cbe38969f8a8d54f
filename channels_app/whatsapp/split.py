"""Split a reply into parts Twilio accepts (WhatsApp bodies are at most 1,600 characters).

Cuts on sentence boundaries where it can, then on whitespace, and only as a last
resort inside a word, so every part reads as whole sentences.
"""
import re

MAX_PART = 1600
_SENTENCE_END = re.compile(r"(?<=[.!?…。])[\"')\]]*\s+|\n{2,}")


def split_text(text: str, limit: int = MAX_PART) -> list[str]:
    """``text`` as a list of non-empty parts of at most ``limit`` characters."""
    text = text.strip()
    parts = []
    while len(text) > limit:
        window = text[: limit + 1]
        cut = _last_sentence_end(window, limit)
        if cut is None:
            space = window.rfind(" ", 0, limit)
            cut = space if space > limit // 2 else limit
        parts.append(text[:cut].rstrip())
        text = text[cut:].lstrip()
    if text:
        parts.append(text)
    return parts


def _last_sentence_end(window, limit):
    best = None
    for match in _SENTENCE_END.finditer(window):
        if match.start() <= limit and match.start() > limit // 3:
            best = match.end() if match.end() <= limit else match.start()
    return best
