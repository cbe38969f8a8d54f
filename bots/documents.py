"""Text out of an uploaded knowledge document: plain text and markdown as they are, HTML
as a web page's readable text (``page_text``: the email channel's ``html_to_text`` without
scripts, styles, navigation, footers and form controls; bots/webpages.py reads fetched pages
with it too; a customer's attachment is read whole instead, bots/files.py), PDF through pypdf
(text only: a scanned PDF has none, and says so). Every
failure is a ``DocumentError`` with a sentence for the form; nothing here raises anything else."""
import io
import logging
import re
from collections.abc import Callable
from pathlib import PurePath

from channels_app.email.parse import _HTMLText, html_to_text

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


class _PageText(_HTMLText):
    """A page's readable text: the email channel's HTML reader, leaving out what every page of a
    site repeats (navigation, footers) and what is not prose. Form controls are left out, not
    whole forms: an ASP.NET page wraps all its content in one <form>.

    What a left-out element holds is written aside (a menu's <ul><li> leaves no "-" line either)
    and dropped at its end tag, with anything left open inside it (the <select> its </aside>
    ends). One whose end tag never comes, by </body>, </html> or the end of the page, is kept as
    if it were not there: an unclosed <aside> swallowed the rest of the page, sometimes all of it.
    Scripts and styles are skipped as the email reader does (unclosed, their "text" is markup)."""

    LEFT_OUT = {"title", "nav", "footer", "noscript", "svg", "template", "iframe", "aside",
                "button", "select", "datalist", "textarea"}

    def __init__(self):
        super().__init__()
        self.open = []  # [(tag, the output it interrupted)] of the left-out elements open now, outermost first
        self.opened = {}  # tag: how many of self.open it names, so a stray end tag costs nothing to find

    def handle_starttag(self, tag, attrs):
        if tag in self.LEFT_OUT and not self.skip:
            self.open.append((tag, self.out))
            self.opened[tag] = self.opened.get(tag, 0) + 1
            self.out = []
        else:
            super().handle_starttag(tag, attrs)

    def handle_endtag(self, tag):
        if tag in self.LEFT_OUT:
            if self.opened.get(tag):  # a stray end tag ends nothing
                # From the innermost out, each element passed is dropped with it: every open
                # element is looked at once in all, where scanning the whole list per end tag
                # made "<nav>" * 46000 + "</svg>" * 46000 (a 506 KB upload) take two minutes.
                while True:
                    name, self.out = self.open.pop()
                    self.opened[name] -= 1
                    if name == tag:
                        break
            return
        if tag in ("body", "html"):
            self._keep_unclosed()
        super().handle_endtag(tag)

    def close(self):
        super().close()
        self._keep_unclosed()

    def _keep_unclosed(self):
        """What the elements still open hold, in page order, as if they were not there. Written
        onto the outermost's output once: extending each level's by the next re-copied the text
        below it per level ("<nav>x" * 80000: 4 s)."""
        if not self.open:
            return
        outer = self.open[0][1]
        for _, inner in self.open[1:]:
            outer.extend(inner)
        outer.extend(self.out)
        self.out = outer
        self.open.clear()
        self.opened.clear()


def page_text(html: str) -> str:
    """The readable text of an HTML page, uploaded or fetched: a <select>'s 200 countries, the
    menu and the cookie banner's buttons are not knowledge, and would be retrieved as if they were."""
    return re.sub(r"\n{3,}", "\n\n", html_to_text(html, _PageText)).strip()


def text_of(name: str, raw: bytes, read_html: Callable[[str], str] = page_text) -> str:
    """The text of a file by its name's suffix; ``read_html`` reads an HTML file: a page's readable
    text for knowledge, every word (``html_to_text``) for a customer's file (bots/files.py), whose
    form values, footer and asides are the customer's order, not a site's chrome."""
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
    return storable(read_html(text)) if suffix in HTML_EXTENSIONS else text


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
