"""A PDF's text, read in a process of its own (bots/documents.py starts it):

    python -m bots.pdftext 200000 < file.pdf    # {"text": "..."} or {"error": "a sentence"} as JSON

Why a process: pypdf can be kept busy for hours, writing gigabytes of text, by a 1 KB file (a form
XObject drawn thousands of times a page; many font names sharing one huge ToUnicode CMap, read
again for each name), and it catches every Exception on its way, Celery's SoftTimeLimitExceeded
among them. A process can be stopped from outside: the parent kills it after TIMEOUT_S, and it
limits its own CPU time and memory before reading, so that one left behind by a worker killed
meanwhile stops too. Reading stops at the first page that takes the text past the character cap
given (the document limit): what lies past it is never used. Importing this module imports
neither Django nor pypdf.
"""
import io
import json
import logging
import resource
import sys
import warnings

MAX_PDF_PAGES = 300
# page content (decompressed drawing instructions) read from one PDF: pypdf's text extraction
# takes ~1.8 s per MB of it, and a 230 KB file can hold 300 pages sharing one 70 MB stream
# (hours of CPU). Text-heavy real PDFs carry a few KB to a few tens of KB a page.
MAX_PDF_CONTENT_BYTES = 8 * 1024 * 1024
TIMEOUT_S = 30  # wall time (the parent's) and CPU time (the child's own) for one PDF
MAX_MEMORY_BYTES = 1024 * 1024 * 1024  # address space: pypdf peaks near 250 MB on 8 MB of page content


def unix_lines(text: str) -> str:
    """``text`` with LF line breaks: a browser's textarea sends CRLF, and a file, page or PDF written on
    Windows has them (bots/forms.py: a form saved unchanged must equal what was stored). Here, without
    Django, because the PDF's text is measured against the cap in these line breaks."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


class Unreadable(Exception):
    """Why the PDF gives no text, in a sentence for the form."""


def read(raw: bytes, max_chars: int) -> str:
    """The text of the PDF ``raw``, its pages' text apart by a blank line, at most ``max_chars`` + 1
    characters (one more than a document may hold, so that the caller can tell it is too long;
    the beginning of a long PDF is what a prompt shows of a customer's file)."""
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(raw))
        if reader.is_encrypted and not reader.decrypt(""):
            raise Unreadable("That PDF is protected by a password; upload an unprotected copy.")
        if len(reader.pages) > MAX_PDF_PAGES:
            raise Unreadable(f"That PDF has {len(reader.pages)} pages; the limit is {MAX_PDF_PAGES}.")
        pages, content, chars = [], 0, 0
        for page in reader.pages:
            stream = page.get_contents()
            content += len(stream.get_data()) if stream is not None else 0
            if content > MAX_PDF_CONTENT_BYTES:
                raise Unreadable(f"That PDF has more page content than can be read here (over "
                                 f"{MAX_PDF_CONTENT_BYTES // (1024 * 1024)} MB); paste its text instead.")
            text = unix_lines(page.extract_text() or "").strip()  # counted as stored
            if text:
                chars += len(text) + (2 if pages else 0)  # the text as joined below: a blank line between pages
                pages.append(text)
            if chars > max_chars:
                break
    except Unreadable:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, OSError, RecursionError,
            NotImplementedError) as error:  # a broken file, or an encryption pypdf cannot open
        raise Unreadable("That PDF could not be read (it may be damaged).") from error
    text = "\n\n".join(pages)
    return text[:max_chars] + text[max_chars:].lstrip()[:1]  # one over that a caller's strip() keeps


def _limit(kind, most):
    """Lower this process's ``kind`` limit to ``most`` (or to the lower limit it already has). Where the
    system refuses (macOS refuses RLIMIT_AS), the parent's timeout still stops the child."""
    _soft, hard = resource.getrlimit(kind)
    most = most if hard == resource.RLIM_INFINITY else min(most, hard)
    try:
        resource.setrlimit(kind, (most, most))
    except (ValueError, OSError):
        pass


def main():
    _limit(resource.RLIMIT_CPU, TIMEOUT_S)
    _limit(resource.RLIMIT_AS, MAX_MEMORY_BYTES)
    _limit(resource.RLIMIT_CORE, 0)  # killed at its CPU limit: no core file of it
    logging.disable(logging.CRITICAL)  # pypdf warns once per oddity: a hostile file, megabytes of them
    warnings.simplefilter("ignore")
    try:
        answer = {"text": read(sys.stdin.buffer.read(), int(sys.argv[1]))}
    except Unreadable as error:
        answer = {"error": str(error), "detail": repr(error.__cause__) if error.__cause__ else ""}
    except MemoryError:
        answer = {"error": "That PDF needs more memory to read than can be spent here; paste its text instead.",
                  "detail": ""}
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    main()
