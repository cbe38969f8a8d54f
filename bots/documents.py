"""Text out of an uploaded knowledge document: plain text and markdown as they are, HTML
through the standard library's parser (the email channel's ``html_to_text``), PDF through
pypdf (text only: a scanned PDF has none, and says so). Every failure is a
``DocumentError`` with a sentence for the form; nothing here raises anything else."""
import io
import logging
from pathlib import PurePath

from channels_app.email.parse import html_to_text

from .services import storable

log = logging.getLogger(__name__)

TEXT_EXTENSIONS = (".txt", ".md", ".markdown")
HTML_EXTENSIONS = (".html", ".htm")
PDF_EXTENSIONS = (".pdf",)
EXTENSIONS = TEXT_EXTENSIONS + HTML_EXTENSIONS + PDF_EXTENSIONS
MAX_PDF_PAGES = 300
# page content (decompressed drawing instructions) read from one PDF: pypdf's text extraction
# takes ~1.8 s per MB of it, and a 230 KB file can hold 300 pages sharing one 70 MB stream
# (hours of CPU). Text-heavy real PDFs carry a few KB to a few tens of KB a page.
MAX_PDF_CONTENT_BYTES = 8 * 1024 * 1024
MAX_DOC_CHARS = 200_000  # a document's text, however it came (pasted, a file, a web page)


class DocumentError(ValueError):
    pass


def text_of(name: str, raw: bytes) -> str:
    suffix = PurePath(name).suffix.lower()
    if suffix in PDF_EXTENSIONS:
        return _pdf(raw)
    if suffix not in TEXT_EXTENSIONS + HTML_EXTENSIONS:
        raise DocumentError("Only .txt, .md, .html and .pdf files can be uploaded.")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DocumentError("That file is not UTF-8 text.") from None
    if "\x00" in text:
        raise DocumentError("That file is not a text file.")
    return storable(html_to_text(text)) if suffix in HTML_EXTENSIONS else text


def _pdf(raw: bytes) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(raw))
        if reader.is_encrypted and not reader.decrypt(""):
            raise DocumentError("That PDF is protected by a password; upload an unprotected copy.")
        if len(reader.pages) > MAX_PDF_PAGES:
            raise DocumentError(f"That PDF has {len(reader.pages)} pages; the limit is {MAX_PDF_PAGES}.")
        pages, content = [], 0
        for page in reader.pages:
            stream = page.get_contents()
            content += len(stream.get_data()) if stream is not None else 0
            if content > MAX_PDF_CONTENT_BYTES:
                raise DocumentError(f"That PDF has more page content than can be read here (over "
                                    f"{MAX_PDF_CONTENT_BYTES // (1024 * 1024)} MB); paste its text instead.")
            pages.append((page.extract_text() or "").strip())
    except DocumentError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, OSError, RecursionError,
            NotImplementedError) as error:  # a broken file, or an encryption pypdf cannot open
        log.info("unreadable PDF upload: %r", error)
        raise DocumentError("That PDF could not be read (it may be damaged).") from None
    text = storable("\n\n".join(page for page in pages if page))  # "(a\\000b) Tj" extracts as a NUL
    if not text:
        raise DocumentError("That PDF has no text to read (a scan?). Paste its text instead.")
    return text
