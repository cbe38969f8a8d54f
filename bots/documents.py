"""Text out of an uploaded knowledge document: plain text and markdown as they are, HTML
as a web page's readable text (``page_text``: the email channel's ``html_to_text`` without
scripts, styles, navigation, footers and form controls; bots/webpages.py reads fetched pages
with it too; a customer's attachment is read whole instead, bots/files.py; a file that is not
UTF-8 in the charset its <meta> declares, as a fetched page), PDF through pypdf in a process of
its own (bots/pdftext.py: stopped when it takes too long; text only: a scanned PDF has none, and
says so). Every failure is a ``DocumentError`` with a sentence for the form; nothing here raises anything else."""
import codecs
import json
import logging
import re
import subprocess
import sys
from collections.abc import Callable
from email.message import Message as HeaderParser
from pathlib import Path, PurePath

from channels_app.email.parse import _HTMLText, html_to_text

from . import pdftext
from .pdftext import MAX_PDF_CONTENT_BYTES, MAX_PDF_PAGES  # noqa: F401 - this module's limits too
from .pdftext import unix_lines
from .services import storable

log = logging.getLogger(__name__)

TEXT_EXTENSIONS = (".txt", ".md", ".markdown")
HTML_EXTENSIONS = (".html", ".htm")
PDF_EXTENSIONS = (".pdf",)
EXTENSIONS = TEXT_EXTENSIONS + HTML_EXTENSIONS + PDF_EXTENSIONS
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


def charset(content_type: str, head: bytes) -> str:
    """The charset a page is written in: its Content-Type's (a fetched page), else its <meta>'s,
    else UTF-8; UTF-8 too for one Python cannot decode with replacement."""
    header = HeaderParser()
    header["content-type"] = content_type
    declared = header.get_param("charset")
    if not declared:
        found = re.search(rb"""<meta[^>]+charset=["']?([\w-]+)""", head[:4096], re.I)
        declared = found.group(1).decode("ascii") if found else "utf-8"
    try:
        "".encode(declared)
        b"".decode(declared, errors="replace")  # "idna" has no such handler; "undefined" refuses everything
    except (LookupError, UnicodeError, TypeError):
        return "utf-8"
    return declared




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
        text = _declared(raw) if suffix in HTML_EXTENSIONS else None
        if text is None:
            raise DocumentError("That file is not UTF-8 text.") from None
    if "\x00" in text:
        raise DocumentError("That file is not a text file.")
    return storable(read_html(text)) if suffix in HTML_EXTENSIONS else text


def _declared(raw: bytes) -> str | None:
    """An HTML file that is not UTF-8 read in the charset its <meta> declares, as a fetched page
    is (a shop's windows-1252 page saved from the browser); None when it declares none."""
    declared = charset("", raw)
    if codecs.lookup(declared).name.startswith("utf-8"):  # tried already
        return None
    try:
        return raw.decode(declared, errors="replace")
    except UnicodeError:  # a codec that fails whatever the handler (utf-7's edge cases)
        return None


_ROOT = Path(__file__).resolve().parent.parent  # where ``python -m bots.pdftext`` finds bots


def _pdf(raw: bytes) -> str:
    """A PDF's text, read by bots/pdftext.py in a process of its own, stopped after
    pdftext.TIMEOUT_S (and by its own CPU and memory limits), its text cut past MAX_DOC_CHARS."""
    try:
        done = subprocess.run([sys.executable, "-m", "bots.pdftext", str(MAX_DOC_CHARS)], input=raw,
                              capture_output=True, timeout=pdftext.TIMEOUT_S, cwd=_ROOT)
    except subprocess.TimeoutExpired:
        raise DocumentError("That PDF takes too long to read; paste its text instead.") from None
    except OSError as error:  # no process to be had now (out of memory, of process slots)
        log.warning("PDF reader not started: %r", error)
        raise DocumentError("That PDF could not be read just now; try again.") from None
    if done.returncode:  # stopped at its CPU or memory limit, or crashed
        log.warning("PDF reader failed (exit status %s): %s", done.returncode,
                    done.stderr[-1000:].decode(errors="replace"))
        raise DocumentError("That PDF takes more than can be spent on reading it here; paste its text instead.")
    answer = json.loads(done.stdout)
    if "error" in answer:
        if answer["detail"]:
            log.info("unreadable PDF: %s", answer["detail"])
        raise DocumentError(answer["error"])
    text = storable(unix_lines(answer["text"]))  # "(a\\000b) Tj" extracts as a NUL, "(a\\rb) Tj" as a CR
    if not text:
        raise DocumentError("That PDF has no text to read (a scan?). Paste its text instead.")
    return text
