"""Knowledge retrieval: the pieces of a bot's knowledge relevant to a question.

Knowledge is small per bot (FAQ pairs and a few documents), so a BM25 ranking in
memory over the bot's own published chunks is fast and dependency-free; it can
only ever see the one bot's knowledge because it is handed that bot's config.
"""
import math
import re
import unicodedata
from collections import Counter


def _marks() -> str:
    """Every combining mark (Unicode categories Mn, Mc, Me) as the ranges of a regex class. Marks
    are in planes 0, 1 and 14 only; scanning those takes ~40 ms, once."""
    ranges, start = [], None
    for code in [*range(0x20000), *range(0xE0000, 0xE1000), 0xE1000]:  # the last: a sentinel
        if unicodedata.category(chr(code))[0] == "M":
            start = code if start is None else start
        elif start is not None:
            ranges.append(f"{chr(start)}-{chr(code - 1)}")
            start = None
    return "".join(ranges)


# Combining marks belong to the letter before them. Python's \w leaves them out, so a word was cut
# at each Devanagari, Bengali or Tamil vowel sign: "दुकान" (shop) into "द", "क", "न", letters that
# any Hindi text shares, and questions matched knowledge they had no word in common with.
MARKS = _marks()
# letters, digits and marks of any script: "envíos", "часы", "営業時間", "दुकान"
WORD = re.compile(f"(?:[^\\W_]|[{MARKS}])+")
# Accents that a question may leave out ("envio" for "envío"; "Ελλαδα"; Arabic and Hebrew written
# without their vowel points), taken off after NFKD, and the invisible joiners (ZWNJ, ZWJ) that
# only change how Indic and Persian letters join. Not every combining mark: the kana voicing marks
# tell バス (bus) from パス (pass), and Indic vowel signs are letters of their words.
ACCENTS = re.compile("[\u0300-\u036f\u064b-\u065f\u0670\u0591-\u05bd\u05bf\u05c1\u05c2\u05c4\u05c5"
                     "\u05c7\u200c\u200d]")
# Scripts written without spaces between words: Han, Hiragana, Katakana, and Thai, Lao, Myanmar,
# Khmer; a run of them is one "word" to WORD. It is matched in overlapping pieces of two letters,
# each with its marks ("営業時間" -> 営業 業時 時間; "เปิด" -> เปิ ปิด), as search engines index
# such text without a dictionary.
UNSPACED = re.compile("([\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u31f0-\u31ff"
                      "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f]+)")
LETTER = re.compile(f".[{MARKS}]*", re.S)  # a letter and the marks after it
STOPWORDS = set(
    "a an and are as at be but by can do does for from have how i in is it me my of on or our "
    "the to we what when where which who why will with you your".split()
)
CHUNK_CHARS = 600


def folded(text: str) -> str:
    """The text as it is matched against other text: lower case, runs of spaces and line breaks
    as one space ("Do you sell  HELMETS?" is "do you sell helmets?")."""
    return " ".join(text.lower().split())


def tokens(text):
    """The terms ``text`` is matched by: its words (with their marks) case- and accent-folded (NFKD
    also turns full-width "ＡＢＣ" into "abc"), English stopwords left out, runs of scripts without
    spaces (CJK, Thai) in two-letter pieces."""
    plain = unicodedata.normalize("NFC", ACCENTS.sub("", unicodedata.normalize("NFKD", text.casefold())))
    out = []
    for word in WORD.findall(plain):
        for n, part in enumerate(UNSPACED.split(word)):  # odd parts: runs without spaces
            if n % 2 == 0:
                if part and part not in STOPWORDS:
                    out.append(part)
            else:
                letters = LETTER.findall(part)
                out.extend(["".join(letters[i:i + 2]) for i in range(len(letters) - 1)] or [part])
    return out


SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _bounded(text: str, limit: int = CHUNK_CHARS):
    """``text`` in pieces of at most ``limit`` characters: whole if it fits, else by lines, then
    by sentences, then at spaces (a line without any: cut)."""
    if len(text) <= limit:
        yield text
        return
    for splitter, joint in ((re.compile(r"\n"), "\n"), (SENTENCE_END, " "), (re.compile(r" "), " ")):
        parts = [p for p in splitter.split(text) if p.strip()]
        if len(parts) > 1:
            buf = ""
            for part in parts:
                for piece in _bounded(part, limit):
                    if buf and len(buf) + 1 + len(piece) > limit:
                        yield buf
                        buf = ""
                    buf = f"{buf}{joint}{piece}" if buf else piece
            if buf:
                yield buf
            return
    for start in range(0, len(text), limit):
        yield text[start:start + limit]


def chunks(config):
    """Split the bot's knowledge into retrievable pieces of about CHUNK_CHARS: FAQ pairs whole (a
    long answer in pieces, each under its question), documents by paragraph (a paragraph longer
    than that by lines, then sentences). Before, a document whose lines were never separated by a
    blank line was one piece, however long — put whole into the prompt, past the model's context."""
    out = []
    for item in config.get("knowledge", []):
        if item["kind"] == "faq":
            for answer in _bounded(item["body"]):
                out.append({"source": item["id"], "title": item["title"], "text": f"Q: {item['title']}\nA: {answer}"})
            continue
        buf = ""
        for para in re.split(r"\n\s*\n", item["body"]):
            for piece in _bounded(para.strip()):
                if buf and len(buf) + len(piece) > CHUNK_CHARS:
                    out.append({"source": item["id"], "title": item["title"], "text": buf.strip()})
                    buf = ""
                buf += piece + "\n\n"
        if buf.strip():
            out.append({"source": item["id"], "title": item["title"], "text": buf.strip()})
    return out


def retrieve(config, question, k=3, k1=1.5, b=0.75):
    """Top-``k`` chunks of ``config``'s knowledge for ``question`` by BM25 (score > 0 only)."""
    pieces = chunks(config)
    query = tokens(question)
    if not pieces or not query:
        return []
    docs = [tokens(p["title"] + " " + p["text"]) for p in pieces]
    avg = sum(len(d) for d in docs) / len(docs) or 1.0
    df = Counter(term for d in docs for term in set(d))
    scored = []
    for piece, doc in zip(pieces, docs):
        tf = Counter(doc)
        score = 0.0
        for term in set(query):
            if term not in tf:
                continue
            idf = math.log(1 + (len(docs) - df[term] + 0.5) / (df[term] + 0.5))
            score += idf * tf[term] * (k1 + 1) / (tf[term] + k1 * (1 - b + b * len(doc) / avg))
        if score > 0:
            scored.append((score, piece))
    scored.sort(key=lambda pair: -pair[0])
    return [piece for _, piece in scored[:k]]
