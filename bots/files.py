"""Customers' files: served to an agent without letting them act on our origin, and read
for the model.

Only common image, audio, video and PDF types render in the browser; anything else
(HTML, SVG, scripts, unknown types) is a download. Every response carries ``nosniff``
and a CSP that allows no script, so even a mislabelled file cannot run.

``prompt_text`` is what the model sees of a customer's message: its text, then the text of
its readable files (plain text, markdown, HTML read whole as the email channel reads a mail, PDF —
``bots.documents``; a forwarded mail, ``.eml``, as its sender, date, subject, attachments' names and text), each cut at
``MAX_FILE_PROMPT_CHARS``, and a one-line note for any other file (an image is named, not
described: the model reads text only).
"""
import logging
import threading
from collections import OrderedDict

from django.http import FileResponse
from django.utils.http import content_disposition_header

from channels_app.email.parse import Unparseable, html_to_text, parse

from .documents import DocumentError, text_of

log = logging.getLogger(__name__)

INLINE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp", "application/pdf")
INLINE_PREFIXES = ("audio/", "video/")
CSP = "default-src 'none'; img-src 'self'; media-src 'self'; style-src 'unsafe-inline'"


def media_type(content_type: str | None) -> str:
    """A content type without its parameters, lower case: "Text/Plain; charset=utf-8" -> "text/plain"."""
    return (content_type or "").split(";")[0].strip().lower()


def attachment_response(attachment):
    """The stored file of a ``bots.Attachment``; a download without a name is ``attachment-<n>``."""
    content_type = media_type(attachment.content_type or "application/octet-stream")
    inline = content_type in INLINE_TYPES or content_type.startswith(INLINE_PREFIXES)
    response = FileResponse(attachment.file.open("rb"), content_type=content_type)
    name = attachment.filename or ("" if inline else f"attachment-{attachment.index + 1}")
    response["Content-Disposition"] = content_disposition_header(not inline, name) or "inline"
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = CSP
    response["Cache-Control"] = "private, max-age=300"
    return response


READABLE_TYPES = {"text/plain": ".txt", "text/markdown": ".md", "text/html": ".html", "application/pdf": ".pdf",
                  "message/rfc822": ".eml", "message/global": ".eml"}  # global: a mail with UTF-8 headers (RFC 6532)
MAX_FILE_PROMPT_CHARS = 4000  # of a message's files' text together; ~1,000 tokens


def readable(content_type: str | None) -> bool:
    """Does prompt_text read files of this type (rather than name them)? (WhatsApp keeps these
    before a reply, channels_app.whatsapp.adapter.)"""
    return media_type(content_type) in READABLE_TYPES


_texts: OrderedDict[tuple[int, str], str | None] = OrderedDict()  # (attachment id, sha256) -> text
_texts_lock = threading.Lock()  # the embedded server runs its workers as threads


def _file_text(attachment) -> str | None:
    """The text of a readable attachment ("" when it has none), None when it cannot be read.
    Kept for the last few files (cut to what a prompt can hold): every reply re-reads the files
    of the turns in its history, and the worker's check (`has_text_to_read`) reads them before
    the prompt does; a storage error is not kept (the next call tries again)."""
    key = (attachment.id, attachment.sha256)
    with _texts_lock:
        if key in _texts:
            _texts.move_to_end(key)
            return _texts[key]
    try:
        with attachment.file.open("rb") as stored:
            content = stored.read()
        # HTML read whole, not as a web page (documents.page_text): an order form's values, an
        # invoice's <footer> and a never-closed <aside> are what the customer sent
        suffix = READABLE_TYPES[media_type(attachment.content_type)]
        text = (mail_text(content) if suffix == ".eml" else
                text_of(f"file{suffix}", content, read_html=html_to_text)).strip()
        text = text[:MAX_FILE_PROMPT_CHARS + 1]
    except (OSError, DocumentError) as error:
        log.warning("attachment %s: not read for the prompt: %s", attachment.id, error)
        if isinstance(error, OSError):
            return None  # storage trouble may pass: not kept
        text = None
    with _texts_lock:
        _texts[key] = text
        while len(_texts) > 32:
            _texts.popitem(last=False)
    return text


def mail_text(raw: bytes) -> str:
    """A forwarded mail (an order confirmation, the courier's notice) as the model reads it: who
    wrote it, when, about what, the names of its attachments (the email channel keeps them as files
    of the customer's message too: the model reads their text there), and its text as the email
    channel reads a customer's mail."""
    try:
        mail = parse(raw)
    except Unparseable as error:
        raise DocumentError(f"That mail could not be read: {error}") from None
    sender = f"{mail.from_name} <{mail.from_address}>" if mail.from_name else mail.from_address
    heading = [f"{label}: {value}" for label, value in
               (("From", sender), ("Date", mail.headers.get("date", "")), ("Subject", mail.subject),
                ("Attachments", ", ".join(a["filename"] or a["content_type"] for a in mail.attachments))) if value]
    return "\n".join(heading + ["", mail.text])


def has_text_to_read(message) -> bool:
    """Does the model get any words from this message: its text, or the text of one of its files?"""
    if message.text.strip():
        return True
    return any(readable(a.content_type) and _file_text(a) for a in message.attachments.all())


def prompt_text(message) -> str:
    """The message's text followed by what the model may know of its files (never raises)."""
    parts = [message.text] if message.text else []
    room = MAX_FILE_PROMPT_CHARS
    for attachment in message.attachments.all():
        name = attachment.filename or f"attachment {attachment.index + 1}"
        if not readable(attachment.content_type):
            parts.append(f"[The customer attached {name} ({attachment.content_type}); you cannot see it.]")
            continue
        if room <= 0:
            parts.append(f"[The customer attached {name}; its text is left out (too long).]")
            continue
        text = _file_text(attachment)
        if text is None:
            parts.append(f"[The customer attached {name}; its text could not be read.]")
            continue
        if not text:
            parts.append(f"[The customer attached {name}; it has no text.]")
            continue
        shown = text[:room]
        room -= len(shown)
        parts.append(f"[Attached file {name}{', beginning' if len(shown) < len(text) else ''}:]\n{shown}")
    return "\n\n".join(parts)
