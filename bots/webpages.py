"""Knowledge from a web page: the builder's "fetch a web page" (and its "Fetch again").

    title, text = fetch("https://shop.example/delivery")   # or DocumentError, with a sentence

HTML becomes readable text (scripts, styles, navigation, footers and form controls left out:
``documents.page_text``, as for an uploaded .html file), plain text and markdown stay as they
are, a PDF goes through pypdf (bots/documents.py). Calls go out
only to public addresses unless ``CHATNEXUS_FETCH_ALLOW_PRIVATE`` is on (bots/egress.py: the
connection goes to the address that was checked) — checked again for every redirect, followed by
hand, at most five. At most MAX_PAGE_BYTES are
read, within CHATNEXUS_FETCH_TIMEOUT_S in all (redirects, looking up the host's address and a slow
trickle of bytes included, in the headers too: the connection is shut at the deadline; the builder's
request waits for it); anything slower, larger, of another type, or answering other
than 2xx is refused with a sentence saying which.
"""
from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import requests
from django.conf import settings
from django.utils import timezone

from channels_app.email.parse import tamed

from . import egress
from .documents import MAX_DOC_CHARS, DocumentError, charset, page_text, text_of, unix_lines
from .services import storable

MAX_PAGE_BYTES = 2 * 1024 * 1024
MAX_REDIRECTS = 5
TIMEOUT_S = (5, 15)  # connect, read
HTML_TYPES = ("text/html", "application/xhtml+xml")
TEXT_TYPES = ("text/plain", "text/markdown")
PDF_TYPES = ("application/pdf",)


class _Title(HTMLParser):
    """The page's title: its first <title> outside inline SVG (an icon's <title> names the icon:
    "Cart", "Search")."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.inside, self.done, self.svg, self.parts = False, False, 0, []

    def handle_starttag(self, tag, attrs):
        if tag == "svg":
            self.svg += 1
        elif tag == "title" and not self.svg and not self.done:
            self.inside = True

    def handle_endtag(self, tag):
        if tag == "svg":
            self.svg = max(0, self.svg - 1)
        elif tag == "title" and self.inside:
            self.inside, self.done = False, True

    def handle_data(self, data):
        if self.inside:
            self.parts.append(data)


def _html_title(html: str) -> str:
    parser = _Title()
    try:
        parser.feed(tamed(html[:200_000]))
    except Exception:  # noqa: BLE001 - lenient parser; no title then
        return ""
    return " ".join("".join(parser.parts).split())


def _deadline() -> egress.Deadline:
    """CHATNEXUS_FETCH_TIMEOUT_S for a whole fetch, redirects, look-ups and a trickle of bytes included."""
    return egress.Deadline(settings.CHATNEXUS_FETCH_TIMEOUT_S,
                           lambda: DocumentError("The page took too long to answer."))


def _request(http: requests.Session, url: str, deadline: egress.Deadline) -> requests.Response:
    """One GET, redirects not followed; its failures in words."""
    try:
        return http.get(url, stream=True, timeout=deadline.timeout(TIMEOUT_S), allow_redirects=False, headers={
            "User-Agent": f"ChatNexus-Knowledge/1 (+{settings.PUBLIC_URL})",
            "Accept": "text/html,application/xhtml+xml,text/plain;q=0.9,application/pdf;q=0.8,*/*;q=0.1"})
    except egress.Refused as error:  # the name answered differently when connecting (DNS rebinding)
        refused = egress.refusal(error, url, "CHATNEXUS_FETCH_ALLOW_PRIVATE")
        raise DocumentError(f"That page cannot be fetched: {refused}.") from None
    except requests.Timeout:
        raise deadline.late() from None
    except requests.RequestException:
        raise DocumentError("The page could not be reached.") from None


def _get(http: requests.Session, url: str, deadline: egress.Deadline) -> requests.Response:
    """GET ``url``, following redirects by hand so each hop is checked; the last response, streamed."""
    for _ in range(MAX_REDIRECTS + 1):
        deadline.check()
        try:
            refused = egress.refused_address(url, settings.CHATNEXUS_FETCH_ALLOW_PRIVATE,
                                             "CHATNEXUS_FETCH_ALLOW_PRIVATE", "the page's address", deadline)
        except OSError:
            raise DocumentError(f"{urlsplit(url).hostname or url} was not found (no such host).") from None
        if refused:
            raise DocumentError(f"That page cannot be fetched: {refused}.")
        with deadline.kept():
            response = _request(http, url, deadline)
        if response.is_redirect and response.headers.get("location"):
            response.close()
            try:
                url = urljoin(url, response.headers["location"])
            except ValueError:  # "http://[x/"
                raise DocumentError("The page redirected to something that is not a web address.") from None
            continue
        return response
    raise DocumentError(f"The page redirected more than {MAX_REDIRECTS} times.")


def fetch(url: str) -> tuple[str, str]:
    """(title, text) of the page at ``url``; DocumentError with a sentence for the form otherwise."""
    with (_deadline() as deadline, deadline.watching(egress.session(settings.CHATNEXUS_FETCH_ALLOW_PRIVATE)) as http,
          _get(http, url.strip(), deadline) as response):
        if not 200 <= response.status_code < 300:
            raise DocumentError(f"The page answered {response.status_code} {response.reason or ''}".rstrip() + ".")
        content_type = response.headers.get("content-type", "")
        kind = content_type.split(";")[0].strip().lower()
        if kind not in HTML_TYPES + TEXT_TYPES + PDF_TYPES:
            raise DocumentError(f"That address gives {kind or 'something of no stated type'}, "
                                "not a web page, a text file or a PDF.")
        try:
            raw = deadline.read(response, MAX_PAGE_BYTES)
        except egress.CutShort:
            raise DocumentError("The page stopped halfway; try again.") from None
        if len(raw) > MAX_PAGE_BYTES:
            raise DocumentError(f"That page is larger than {MAX_PAGE_BYTES // (1024 * 1024)} MB.")
    fallback_title = (urlsplit(response.url).hostname or "") + urlsplit(response.url).path.rstrip("/")
    if kind in PDF_TYPES:
        return fallback_title, text_of("page.pdf", raw)
    try:
        text = raw.decode(charset(content_type, raw), errors="replace")
    except UnicodeError:  # a codec that fails whatever the handler (utf-7's edge cases)
        text = raw.decode("utf-8", errors="replace")
    if "\x00" in text:
        raise DocumentError("That page is not text.")
    text = storable(text)  # charset=utf-7 can decode to a lone surrogate, which PostgreSQL refuses
    if kind in TEXT_TYPES:  # LF, as the form keeps it: else "Fetch again" of a CRLF file always changes it
        return fallback_title, unix_lines(text).strip()
    return storable(_html_title(text) or fallback_title)[:200], page_text(text)


def fetch_document(url: str, again: bool = False) -> tuple[str, str]:
    """``fetch``, and a DocumentError too when the page has no text or more than a document takes."""
    title, text = fetch(url)
    has = "now has" if again else "has"
    if not text:
        raise DocumentError(f"The page {has} no text to read.")
    if len(text) > MAX_DOC_CHARS:
        raise DocumentError(f"The page {has} more than {MAX_DOC_CHARS:,} characters.")
    return title, text


def read_again(item) -> bool:
    """Fetch a document's page (``item.source_url``) again: its text becomes the page's text now.
    True when the text changed; DocumentError, the document untouched, when the page could not be
    read or has no text, or too much — or when the document was deleted while the page was read
    (a colleague, a version restore): an UPDATE that must find its row, not a save that raises."""
    _, text = fetch_document(item.source_url, again=True)
    changed = text != item.body
    now = timezone.now()
    fields = {"body": text, "fetched_at": now, "updated": now} if changed else {"fetched_at": now}
    if not type(item).objects.filter(id=item.id).update(**fields):
        raise DocumentError("This document was deleted meanwhile.")
    for field, value in fields.items():
        setattr(item, field, value)
    return changed
