"""Split a reply into parts Twilio accepts (WhatsApp bodies are at most 1,600 characters).

Twilio counts those characters in UTF-16 code units: an emoji outside the Basic
Multilingual Plane counts 2, and a body over the limit is refused for good (error
21617), so the customer would get nothing. Cuts on sentence boundaries where it can
(Chinese and Japanese sentences end on 。！？ with no space after), then on whitespace,
and only as a last resort inside a word, so every part reads as whole sentences; never
inside a grapheme cluster (a flag, a family emoji joined by ZWJs, a letter and its accent).
"""
import re
from bisect import bisect_right

import regex  # installed with transformers; its \X is Unicode's extended grapheme cluster

MAX_PART = 1600
_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"')\]]*\s+|(?<=[。！？])[」』）】\"')\]]*\s*|\n{2,}")
_GRAPHEME = regex.compile(r"\X")


def units(text: str) -> int:
    """Length as Twilio counts it: UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def split_text(text: str, limit: int = MAX_PART) -> list[str]:
    """``text`` as a list of non-empty parts of at most ``limit`` UTF-16 code units."""
    text = text.strip()
    parts = []
    while units(text) > limit:
        ends = _cluster_ends(text, limit)
        fits = ends[-1]  # characters of whole clusters that fit
        window = text[: fits + 1]
        cut = _last_sentence_end(window, fits)
        if cut is None:
            space = window.rfind(" ", 0, fits)
            cut = space if space > fits // 2 else fits
        cut = ends[max(bisect_right(ends, cut) - 1, 0)]  # back to the cluster's start
        parts.append(text[:cut].rstrip())
        text = text[cut:].lstrip()
    if text:
        parts.append(text)
    return parts


def _cluster_ends(text, limit):
    """Where each grapheme cluster of ``text`` ends, as long as they fit in ``limit`` units together."""
    ends, used = [], 0
    for cluster in _GRAPHEME.finditer(text):
        used += units(cluster.group())
        if used > limit:
            break
        ends.append(cluster.end())
    if not ends:  # one cluster longer than a whole part (only in made-up text): cut it between code points
        end = used = 0
        while units(text[end]) + used <= limit:
            used += units(text[end])
            end += 1
        ends = [end]
    return ends


def _last_sentence_end(window, limit):
    best = None
    for match in _SENTENCE_END.finditer(window):
        if match.start() <= limit and match.start() > limit // 3:
            best = match.end() if match.end() <= limit else match.start()
    return best
