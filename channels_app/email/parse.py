"""Read real-world mail with the stdlib ``email`` package (``policy=default``).

``parse(raw)`` returns a :class:`ParsedMail`: addresses, threading headers, the body
as text (the plain part, else the HTML part converted with ``html.parser``), decoded
whatever the declared charset or transfer encoding, attachment names, and
``reply_text``: the body with quoted history and the signature removed (what the
model sees). Anything the parser cannot make sense of raises :class:`Unparseable`.
"""
import bisect
import re
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.header import decode_header, make_header
from email.utils import getaddresses, parseaddr
from html.parser import HTMLParser

from bots.services import storable

MAX_ATTACHMENTS_LISTED = 50


class Unparseable(ValueError):
    """The bytes are not a usable email (no sender, or the parser gave up)."""


@dataclass
class ParsedMail:
    message_id: str  # without angle brackets; "" if the mail has none
    from_address: str  # lower-cased as ``mailbox`` does
    from_name: str
    reply_to_address: str  # the same
    to_addresses: list
    subject: str
    in_reply_to: str
    references: list  # message ids, oldest first, without angle brackets
    text: str  # the whole body as text
    reply_text: str  # body without quoted history and signature
    attachments: list = field(default_factory=list)  # [{"filename", "content_type", "size"}]
    files: list = field(default_factory=list)  # [(filename, content type, bytes)], one per listed attachment
    headers: dict = field(default_factory=dict)  # the headers the filters look at, lower-case names
    content_type: str = ""
    report_type: str = ""  # multipart/report's report-type (delivery-status for bounces)
    message: object = None  # the email.message.EmailMessage


FILTER_HEADERS = (
    "auto-submitted", "precedence", "list-id", "list-unsubscribe", "return-path", "x-auto-response-suppress",
    "x-autoreply", "x-autorespond", "x-failed-recipients", "date",
)  # fmt: skip


def parse(raw: bytes) -> ParsedMail:
    if not raw or not raw.strip():
        raise Unparseable("empty message")
    try:
        msg = message_from_bytes(raw, policy=policy.default)
        return _read(msg)
    except Unparseable:
        raise
    except Exception as error:  # the stdlib raises many kinds on hostile input
        raise Unparseable(f"{type(error).__name__}: {error}") from error


def _header(msg, name):
    try:
        value = msg.get(name)
    except Exception:  # a header the policy cannot parse: fall back to its raw text
        value = next((v for k, v in msg.raw_items() if k.lower() == name.lower()), None)
    return "" if value is None else " ".join(str(value).split())


def _raw_header(msg, name) -> str:
    """The first ``name`` header as the mail wrote it, unfolded: bytes beyond ASCII read as UTF-8
    (RFC 6532), encoded words left as they are. The parsed header decodes ``=?...?=`` in
    In-Reply-To and References (unstructured to the email package) but not in Message-ID, so the
    same id read two ways did not match and a customer's answer to their own mail began a new
    conversation; a mail with the Message-ID twice is read by the first, as the parsed header."""
    value = next((v for k, v in msg.raw_items() if k.lower() == name.lower()), "")
    value = value if isinstance(value, str) else str(value)
    return re.sub(r"[\r\n]", "", value).encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _ids(value):
    """The message ids of a Message-ID, In-Reply-To or References value, without angle brackets,
    each as written: the customer's mail client remembers its id byte for byte, and our reply
    threads only by the same bytes. Whatever lies between angle brackets counts, spaces and letters
    beyond ASCII included (RFC 2047 section 5: an encoded word inside an id is part of its text).
    A value without brackets is read as some mailers write it: the whole field one encoded word
    (``=?utf-8?b?PHBtMUBleMOkbXBsZS5jb20+?=``, as Django writes a Message-ID beyond ASCII), or a
    bare ``id@host``. Ids with control characters are no ids."""
    value = (value or "").replace("\t", " ")
    found = re.findall(r"<([^<>]*)>", value)
    if not found and "=?" in value:
        try:
            value = str(make_header(decode_header(value)))
        except Exception:  # noqa: BLE001 - a broken encoded word: read as it stands
            pass
        found = re.findall(r"<([^<>]*)>", value)
    if not found:
        found = [token.strip(",;") for token in value.split() if "@" in token]
    ids = (item.strip() for item in found)
    return [item for item in ids if item and item.isprintable()]


def _sender(value):
    """(name, address) of a From header. A display name with a comma that lost its quotes
    ("Ruiz, José <j@example.com>", as some mailers write it) reads as two addresses, the first
    without an @: the first one with an @ is the sender."""
    name, address = parseaddr(value)
    if "@" not in address:
        name, address = next(((n, a) for n, a in getaddresses([value]) if "@" in a), (name, address))
    return name, address


def mailbox(address: str) -> str:
    """``address`` as it is stored and answered: the domain lower-cased, the local part too when
    it is ASCII (every server matches those without case). A local part beyond ASCII (RFC 6531,
    ``José@example.com``) is kept as written: a server need not fold its case, so ``josé@`` may be
    nobody's mailbox, and the reply goes to the very address the customer wrote from."""
    local, at, domain = address.rpartition("@")
    return f"{local.lower() if local.isascii() else local}{at}{domain.lower()}" if at else address.lower()


def _read(msg) -> ParsedMail:
    # addresses as PostgreSQL keeps them: the filters query stored mail by them (a NUL would be a DataError)
    from_name, from_address = storable(_sender(_header(msg, "From")))
    if "@" not in from_address and from_address.upper() != "MAILER-DAEMON":
        raise Unparseable("no sender address (From)")
    _, reply_to = storable(parseaddr(_header(msg, "Reply-To")))
    to = [address.lower() for _, address in storable(getaddresses([_header(msg, "To"), _header(msg, "Cc")])) if address]
    message_ids = _ids(_raw_header(msg, "Message-ID"))
    text, attachments, files = _body(msg)
    headers = {name: _header(msg, name) for name in FILTER_HEADERS if msg.get(name) is not None}
    return ParsedMail(
        message_id=message_ids[0] if message_ids else "",
        from_address=mailbox(from_address),
        from_name=from_name,
        reply_to_address=mailbox(reply_to) if "@" in reply_to else "",
        to_addresses=to,
        subject=_header(msg, "Subject"),
        in_reply_to=(_ids(_raw_header(msg, "In-Reply-To")) or [""])[0],
        references=_ids(_raw_header(msg, "References")),
        text=text,
        reply_text=strip_reply(text),
        attachments=attachments,
        files=files,
        headers=headers,
        content_type=msg.get_content_type(),
        report_type=(msg.get_param("report-type") or "").lower() if msg.get_content_type() == "multipart/report" else "",
        message=msg,
    )


# ---------------------------------------------------------------------------
# Body


def _body(msg):
    """(text, attachments, files): the best text part, and every other named/attached part
    (its description, and its name, type and decoded bytes)."""
    body_part = None
    try:
        body_part = msg.get_body(preferencelist=("plain", "html"))
    except Exception:
        body_part = None
    if body_part is None and msg.get_content_maintype() == "text":
        body_part = msg
    attachments, files = [], []
    for part in msg.walk():
        if part is body_part or part.is_multipart():
            continue
        disposition = part.get_content_disposition()
        filename = part.get_filename()
        if disposition == "attachment" or filename or part.get_content_maintype() not in ("text", "message"):
            if len(attachments) < MAX_ATTACHMENTS_LISTED:
                payload = part.get_payload(decode=True) or b""
                attachments.append(
                    {"filename": str(filename or ""), "content_type": part.get_content_type(), "size": len(payload)}
                )
                files.append((str(filename or ""), part.get_content_type(), payload))
    if body_part is None:
        return "", attachments, files
    text = decode_part(body_part)
    if body_part.get_content_subtype() == "html":
        text = html_to_text(text)
    return normalize(text), attachments, files


def decode_part(part) -> str:
    """A text part's content as str: transfer encoding undone, declared charset tried,
    then UTF-8, then cp1252 with replacement — never an exception."""
    payload = part.get_payload(decode=True)
    if payload is None:
        payload = str(part.get_payload()).encode("utf-8", "replace")
    charset = (part.get_content_charset() or "utf-8").strip().strip('"').lower()
    for candidate in (charset, "utf-8"):
        try:
            return payload.decode(candidate)
        except (LookupError, UnicodeDecodeError):
            continue
    return payload.decode("cp1252", errors="replace")


def normalize(text):
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\xa0", " ")
    lines = [line.rstrip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


class _HTMLText(HTMLParser):
    """HTML to readable text: blocks become lines, quotes become '> ' lines, scripts vanish."""

    BLOCKS = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol", "hr", "pre"}
    # Not "head": its </head> is optional in HTML5, and skipping until one that never comes lost
    # the whole body; what a head holds with text (title, script, style) is skipped on its own.
    SKIP = {"script", "style", "title"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.out = []
        self.skip = 0
        self.quote = 0

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self.skip += 1
        elif tag == "blockquote" or (tag == "div" and "gmail_quote" in (dict(attrs).get("class") or "")):
            self.quote += 1
            self.out.append("\n")
        elif tag in self.BLOCKS:
            self.out.append("\n")
        if tag == "li":
            self.out.append("- ")

    def handle_endtag(self, tag):
        if tag in self.SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag == "blockquote":
            self.quote = max(0, self.quote - 1)
            self.out.append("\n")
        elif tag in self.BLOCKS:
            self.out.append("\n")

    def handle_data(self, data):
        if self.skip:
            return
        data = re.sub(r"\s+", " ", data)
        if self.quote:
            data = data.replace("\n", "\n> ")
            if not self.out or self.out[-1].endswith("\n"):
                data = "> " * self.quote + data.lstrip()
        self.out.append(data)


TAG_REACH = 4096  # a "<" with no ">" this far on is no tag


def tamed(html: str) -> str:
    """``html`` with every "<" that no ">" follows within TAG_REACH characters written as "&lt;".
    html.parser rescans an unclosed tag to the end of the input each time it meets one, so
    "<x " repeated is quadratic (30 KB: 8 s on Python 3.11.7; a 512 KB upload: most of an hour).
    Linear here: each "<" looks up the next ">" among their sorted positions."""
    closes = [m.start() for m in re.finditer(">", html)]
    out, last = [], 0
    for m in re.finditer("<", html):
        i = bisect.bisect_left(closes, m.start())
        if i == len(closes) or closes[i] - m.start() > TAG_REACH:
            out.append(html[last:m.start()])
            out.append("&lt;")
            last = m.start() + 1
    if not out:
        return html
    out.append(html[last:])
    return "".join(out)


def html_to_text(html: str, reader: type[_HTMLText] = _HTMLText) -> str:
    """HTML's readable text, line by line (``reader``: the parser, e.g. one that skips more tags)."""
    parser = reader()
    try:
        parser.feed(tamed(html))
        parser.close()
    except Exception:  # html.parser is lenient; this is belt and braces
        return re.sub(r"<[^>]*>", " ", html)
    return "\n".join(line.strip() for line in "".join(parser.out).split("\n"))


# ---------------------------------------------------------------------------
# Quoted history and signatures

_CUTS = [
    re.compile(r"^(On|Am|Le|El|Il|Op)\s.{0,300}(wrote|schrieb|a écrit|escribió|ha scritto|schreef)\b.{0,200}:\s*$", re.I | re.S),
    re.compile(r"^-{2,}\s*(Original Message|Forwarded message|Ursprüngliche Nachricht)\s*-{2,}", re.I),
    re.compile(r"^_{10,}\s*$"),
    re.compile(r"^Sent from my \w+", re.I),
]
_OUTLOOK_FROM = re.compile(r"^\*?(From|Von|De)\s*:\*?\s", re.I)
_OUTLOOK_NEXT = re.compile(r"^\*?(Sent|Date|Gesendet|Datum|Envoyé|To|Subject)\s*:", re.I)


def strip_reply(text: str) -> str:
    """The new part of a reply: cut at the first quote header, Outlook block or signature
    separator, and drop '>' quoted lines. Falls back to the whole text if nothing is left."""
    lines = text.split("\n")
    kept = []
    for index, line in enumerate(lines):
        stripped = line.strip()
        if line in ("-- ", "--") or stripped == "-- ":
            break
        two_lines = stripped + " " + (lines[index + 1].strip() if index + 1 < len(lines) else "")
        if any(cut.match(stripped) for cut in _CUTS) or (_CUTS[0].match(two_lines) and not stripped.endswith(".")):
            break
        if _OUTLOOK_FROM.match(stripped) and any(_OUTLOOK_NEXT.match(l.strip()) for l in lines[index + 1 : index + 4]):
            break
        if stripped.startswith(">"):
            continue
        kept.append(line)
    result = normalize("\n".join(kept))
    return result or normalize(text)
