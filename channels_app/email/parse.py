"""Read real-world mail with the stdlib ``email`` package (``policy=default``).

``parse(raw)`` returns a :class:`ParsedMail`: addresses, threading headers, the body
as text (each inline text part in order; of alternatives the plain part, else the HTML part
converted with ``html.parser``), decoded whatever the declared charset or transfer encoding,
attachments (a forwarded mail as one .eml, and its own attachments as the mail's), and
``reply_text``: the body with quoted history and the signature removed (what the
model sees). Anything the parser cannot make sense of raises :class:`Unparseable`.
"""
import base64
import bisect
import codecs
import quopri
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
    "x-autoreply", "x-autorespond", "x-failed-recipients", "date", "x-original-from",
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


def _first_raw(msg, name, default=None):
    """``msg``'s first ``name`` header as the mail wrote it (encoded words and folding kept), else ``default``."""
    return next((v for k, v in msg.raw_items() if k.lower() == name.lower()), default)


def _header(msg, name):
    raw = _first_raw(msg, name)
    try:
        value = _parsed(msg, name, raw)
    except Exception:  # a header the policy cannot parse: fall back to its raw text
        value = raw
    return "" if value is None else " ".join(str(value).split())


def _parsed(msg, name, raw):
    """``msg``'s first ``name`` header as its policy parses it, but with its encoded words in a
    charset Python reads otherwise or not at all (gb2312 with GBK characters, iso-2022-jp with
    NEC's, iso-8859-8-i) read as a body in that charset is: the email package turned such a word
    into undecodable bytes, and a subject into garbage."""
    readable = _readable_words(raw) if isinstance(raw, str) and "=?" in raw else raw
    return msg.get(name) if readable == raw else msg.policy.header_fetch_parse(name, readable)


_ENCODED_WORD = re.compile(r"=\?([^?*\s]+)(?:\*[^?\s]*)?\?[bBqQ]\?[^?\s]*\?=")


def _readable_words(value: str) -> str:
    """``value`` with each encoded word that its own charset does not read written again in UTF-8,
    as ``decode_bytes`` reads it; the others left as they are."""

    def again(word):
        try:
            [(data, _)] = decode_header(word.group(0))  # base64 or quoted-printable undone
            data.decode(word.group(1))
            return word.group(0)
        except (LookupError, UnicodeDecodeError):
            text = decode_bytes(data, word.group(1))
            return f"=?utf-8?b?{base64.b64encode(text.encode()).decode()}?="
        except Exception:  # noqa: BLE001 - a broken word: the email package reads it as it can
            return word.group(0)

    return _ENCODED_WORD.sub(again, value)


def _raw_header(msg, name) -> str:
    """The first ``name`` header as the mail wrote it, unfolded: bytes beyond ASCII read as UTF-8
    (RFC 6532), encoded words left as they are. The parsed header decodes ``=?...?=`` in
    In-Reply-To and References (unstructured to the email package) but not in Message-ID, so the
    same id read two ways did not match and a customer's answer to their own mail began a new
    conversation; a mail with the Message-ID twice is read by the first, as the parsed header."""
    value = _first_raw(msg, name, "")
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
    """(text, attachments, files): the text of every part the customer wrote, in order, and every
    other named/attached part (its description, and its name, type and decoded bytes)."""
    texts, attachments, files = [], [], []
    for is_text, part in _parts(msg, _best(msg)):
        if is_text:
            text = decode_part(part)
            texts.append(html_to_text(text) if part.get_content_subtype() == "html" else text)
        elif len(attachments) < MAX_ATTACHMENTS_LISTED:
            filename, payload = _file(part)
            attachments.append({"filename": filename, "content_type": part.get_content_type(), "size": len(payload)})
            files.append((filename, part.get_content_type(), payload))
    return normalize("\n\n".join(normalize(text) for text in texts)), attachments, files


def _best(msg):
    """The text part of ``msg`` to read among alternatives: plain, else HTML; None when it has none."""
    try:
        body = msg.get_body(preferencelist=("plain", "html"))
    except Exception:
        body = None
    if body is None and msg.get_content_maintype() == "text":
        body = msg
    return body


FORWARDED = ("message/rfc822", "message/global")  # a whole mail inside this one


def _parts(part, chosen, loose=True):
    """(is_text, part) for each part of the mail worth reading or keeping, in order. ``chosen``:
    the text to read among alternatives (``get_body``'s, then each alternative's own best);
    ``loose``: a plain or HTML part here is more of the text. In multipart/mixed it is (Apple Mail
    writes text, an inline photo, then the rest of the text: reading only the first text lost the
    question after the photo); in multipart/alternative or related it is the same text again.
    A forwarded mail is a file (an .eml), not read as text here; its own attachments are files of
    this mail too (the invoice forwarded with it: listed in the inbox, its text read by the model)."""
    if part.get_content_type() in FORWARDED:
        yield False, part
        inner = _forwarded(part)[0]
        if inner is not None:
            yield from ((False, file) for is_text, file in _parts(inner, _best(inner)) if not is_text)
    elif part.get_content_maintype() == "multipart" and part.is_multipart():
        if loose and part.get_content_subtype() in ("alternative", "related"):
            try:
                chosen = part.get_body(preferencelist=("plain", "html")) or chosen
            except Exception:  # noqa: BLE001 - a part the email package cannot rank: the mail's own choice
                pass
            loose = False
        for child in part.iter_parts():
            yield from _parts(child, chosen, loose)
    elif part.is_multipart():  # message/delivery-status and the like: header blocks, neither text nor a file
        return
    elif part is chosen or (loose and part.get_content_type() in ("text/plain", "text/html")
                            and not part.is_attachment() and not part.get_filename()):
        yield True, part
    elif part.is_attachment() or part.get_filename() or part.get_content_maintype() not in ("text", "message"):
        yield False, part


def _file(part):
    """(filename, bytes) of an attachment: a forwarded mail as its own .eml file, named by its subject."""
    try:
        filename = str(_filename(part) or "")
    except Exception:  # noqa: BLE001 - a Content-Disposition the policy cannot parse again: as the part names it
        filename = str(part.get_filename() or "")
    inner, payload = _forwarded(part)
    if inner is None:
        return filename, part.get_payload(decode=True) or b""
    subject = " ".join(re.sub(r"[\x00-\x1f\x7f/\\]", " ", _header(inner, "Subject")).split())
    return filename or f"{subject[:150] or 'forwarded mail'}.eml", payload


def _forwarded(part):
    """(the mail, its bytes) of a forwarded-mail part; (None, None) for any other part."""
    if part.get_content_type() not in FORWARDED or not part.is_multipart() or not part.get_payload():
        return None, None
    inner = part.get_payload(0)
    try:
        payload = inner.as_bytes(policy=inner.policy.clone(linesep="\r\n", refold_source="none"))
        encoding = _header(part, "Content-Transfer-Encoding").lower()
        if encoding in ("base64", "quoted-printable"):  # not for message/rfc822 (RFC 2046 5.2.1), but sent:
            # the parser read the encoded text as the mail
            payload = base64.b64decode(payload) if encoding == "base64" else quopri.decodestring(payload)
            inner = message_from_bytes(payload, policy=policy.default)
    except Exception:  # noqa: BLE001 - a mail the generator cannot write again: its text as it reads
        payload = str(inner).encode("utf-8", "replace")
    return inner, payload


def _filename(part):
    """The part's file name (``get_filename``), its encoded words read like a subject's."""
    for header, param in (("Content-Disposition", "filename"), ("Content-Type", "name")):
        raw = _first_raw(part, header)
        if isinstance(raw, str) and "=?" in raw and _readable_words(raw) != raw:
            name = part.policy.header_fetch_parse(header, _readable_words(raw)).params.get(param)
            if name:
                return name
    return part.get_filename()


# Labels mail clients write that Python's codecs lack, and charsets whose senders often write a
# superset of them (Windows' code page): the wider codec reads all of the label's own text the same
# way, and the characters beyond it too. Tried after the label itself, so nothing it read changes.
WIDER_CHARSETS = {
    "iso-8859-8-i": "iso-8859-8", "iso-8859-8-e": "iso-8859-8",  # Hebrew in logical/visual order: the same bytes
    "iso-8859-6-i": "iso-8859-6", "iso-8859-6-e": "iso-8859-6",
    "windows-874": "cp874", "x-windows-874": "cp874",
    "shift_jis": "cp932", "x-sjis": "cp932", "sjis": "cp932", "windows-31j": "cp932", "csshiftjis": "cp932",
    "gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030", "euc-cn": "gb18030", "cp936": "gb18030",
    "ks_c_5601-1987": "cp949", "euc-kr": "cp949",
    "iso-2022-jp": "cp50221",  # below: Python has no codec for it
}
# Labels that say nothing of bytes beyond ASCII: such bytes are UTF-8 or else cp1252.
UNSAID = {"utf-8", "ascii"}


def decode_bytes(payload: bytes, charset) -> str:
    """``payload`` as text in ``charset`` (a label as mail writes it), never an exception. The
    label reads the text if Python knows it; else UTF-8 (a label put on UTF-8 text by mistake,
    which the wider charset reads too, as mojibake: "订单" labelled gb2312 read as "璁㈠崟"); else the
    wider charset WIDER_CHARSETS names, or the one it names for a label Python lacks; failing all,
    that last one reads it with the few bad bytes replaced (before, one bad byte turned the whole
    part into cp1252 mojibake). UTF-8 is tried only on bytes beyond ASCII: text in a 7-bit charset
    (ISO-2022-JP's escape codes) is valid UTF-8 too. No label, UTF-8, ASCII or an unknown one:
    UTF-8, with bad bytes replaced when the rest is real UTF-8, else cp1252 (Latin-1 text labelled
    UTF-8)."""
    label = (charset or "").strip().strip('"').lower()
    readers = [name for name in (label, WIDER_CHARSETS.get(label)) if name and _codec(name)]
    if readers and _codec(readers[0]) not in UNSAID:
        own = readers[:1] if readers[0] == label else []
        utf8 = [] if payload.isascii() else ["utf-8"]
        for reader in (*own, *utf8, *readers[len(own):]):
            try:
                return _decode(payload, reader)
            except UnicodeDecodeError:
                continue
        return _decode(payload, readers[-1], "replace")
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        text = payload.decode("utf-8", "replace")
    if re.search("[^\x00-\x7f\ufffd]", text):  # real UTF-8 around the bad bytes
        return text
    return payload.decode("cp1252", "replace")


def _codec(name):
    """The codec's own name for a charset name, or "" when Python has none."""
    if name == "cp50221":
        return name
    try:
        return codecs.lookup(name).name
    except LookupError:
        return ""


def _decode(payload: bytes, codec: str, errors="strict") -> str:
    return _cp50221(payload, errors) if codec == "cp50221" else payload.decode(codec, errors)


_ISO2022JP_SHIFTS = re.compile(rb"(\x1b(?:\(B|\(J|\(I|\$@|\$B))")


def _cp50221(payload: bytes, errors="strict") -> str:
    """ISO-2022-JP as Windows writes it (code page 50221): JIS X 0208 plus NEC's row 13 (①, Ⅱ, ㈱)
    and IBM's extensions, and half-width katakana, which Python's iso2022_jp codecs refuse. Each
    two-byte JIS code becomes its Shift_JIS bytes, read as cp932, which has them all."""
    if errors == "strict" and re.search(rb"[\x80-\xff]", payload):
        raise UnicodeDecodeError("cp50221", payload, 0, len(payload), "8-bit bytes in 7-bit ISO-2022-JP")
    out, mode = [], b"\x1b(B"
    for chunk in _ISO2022JP_SHIFTS.split(payload):
        if _ISO2022JP_SHIFTS.fullmatch(chunk):
            mode = chunk
        elif mode == b"\x1b(I":  # half-width katakana: 0x21-0x5F for cp932's 0xA1-0xDF
            out.append(re.sub(rb"[\x21-\x5f]", lambda m: bytes((m[0][0] | 0x80,)), chunk))
        elif mode in (b"\x1b$@", b"\x1b$B"):  # a line end or stray byte between the pairs stays as it is
            out.append(re.sub(rb"[\x21-\x7e]{2}", lambda m: _shift_jis(*m[0]), chunk))
        else:
            out.append(chunk)
    return b"".join(out).decode("cp932", errors)


def _shift_jis(first: int, second: int) -> bytes:
    """The Shift_JIS bytes of the JIS X 0208 code (first, second), both 0x21-0x7E."""
    lead = (first + 1) // 2 + (0x70 if first <= 0x5E else 0xB0)
    trail = second + (0x1F + (second >= 0x60) if first % 2 else 0x7E)
    return bytes((lead, trail))


def decode_part(part) -> str:
    """A text part's content as str: transfer encoding undone, then ``decode_bytes``."""
    payload = part.get_payload(decode=True)
    if payload is None:
        payload = str(part.get_payload()).encode("utf-8", "replace")
    return decode_bytes(payload, part.get_content_charset())


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
                # at most three levels marked: "<blockquote>x" nested n deep wrote n² characters
                # (a 160 KB mail, 144 million)
                data = "> " * min(self.quote, 3) + data.lstrip()
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

# What a quote header has and a customer's sentence rarely does: an address, a time, a date in
# numbers, a year.
_ADDRESS = r"@|<[^<>]+>"
_TIME = r"\d{1,2}:\d{2}|\b\d{1,4}[./-]\d{1,2}[./-]\d{1,4}\b"  # a time, or a date in numbers with its year
_YEAR = r"\b(?:19|20)\d{2}\b"
_QUOTE_STAMP = re.compile(f"{_ADDRESS}|{_TIME}|{_YEAR}")
# Weekday and month names in the widget's languages (en, es, fr, de, pt, it, nl); short ones only
# with Gmail's "." or "," after them.
_DATE_WORDS = (
    "monday|tuesday|wednesday|thursday|friday|saturday|sunday|january|february|march|april|may|june|july|"
    "august|september|october|november|december|"
    "lunes|martes|miércoles|jueves|viernes|sábado|domingo|enero|febrero|marzo|abril|mayo|junio|julio|agosto|"
    "septiembre|setiembre|octubre|noviembre|diciembre|"
    "lundi|mardi|mercredi|jeudi|vendredi|samedi|dimanche|janvier|février|mars|avril|mai|juin|juillet|août|"
    "septembre|octobre|novembre|décembre|"
    "montag|dienstag|mittwoch|donnerstag|freitag|samstag|sonnabend|sonntag|januar|februar|märz|juni|juli|"
    "oktober|dezember|"
    "segunda-feira|terça-feira|quarta-feira|quinta-feira|sexta-feira|janeiro|fevereiro|março|maio|junho|"
    "julho|setembro|outubro|dezembro|"
    "lunedì|martedì|mercoledì|giovedì|venerdì|sabato|domenica|gennaio|febbraio|aprile|maggio|giugno|luglio|"
    "settembre|ottobre|dicembre|"
    "maandag|dinsdag|woensdag|donderdag|vrijdag|zaterdag|zondag|januari|februari|maart|mei|augustus|"
    "oktober"
)
_DATE_ABBREVIATIONS = (  # none that is a word of its own in these languages ("out", "set", "ago")
    "mon|tue|tues|wed|thu|thur|thurs|fri|sat|sun|jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec|"
    "lun|mié|jue|vie|sáb|ene|abr|dic|jeu|janv|févr|avr|juil|déc|mär|okt|dez|seg|fev|gio|giu|lug|ott|mrt"
)
_DATE_NAMES = re.compile(rf"\b(?:{_DATE_WORDS})\b|\b(?:{_DATE_ABBREVIATIONS})[.,]", re.I)
# "On <date>, <name> wrote:" and its translations, the verb ending the line ...
_WROTE = re.compile(
    r"^(On|Le|El|Il|Em|Op)\s.{0,300}\b(wrote|a écrit|escribió|ha scritto|escreveu|het volgende geschreven)\s*:\s*$",
    re.I | re.S,
)
# ... and the German and Dutch "Am <date> schrieb <name>:", the name after the verb.
_SCHRIEB = re.compile(r"^(Am|Op)\s.{0,300}\b(schrieb|schreef)\b.{0,200}:\s*$", re.I | re.S)
_CUTS = [
    re.compile(r"^-{2,}\s*(Original Message|Forwarded message|Ursprüngliche Nachricht|Mensaje original|"
               r"Message d['’]origine|Messaggio originale|Oorspronkelijk bericht|Mensagem original)\s*-{2,}", re.I),
    re.compile(r"^_{10,}\s*$"),
    re.compile(r"^Sent from my \w+", re.I),
]
# Outlook's block over the quoted mail, in each language: From, then Sent (or Date) and To (or Subject).
_OUTLOOK_FROM = re.compile(r"^\*?(From|Von|De|Da|Van)\s*:\*?\s", re.I)
_OUTLOOK_SENT = re.compile(
    r"^\*?(Sent|Date|Gesendet|Datum|Envoyé|Enviado|Enviada|Fecha|Data|Inviato|Verzonden)\s*:", re.I
)
_OUTLOOK_TO = re.compile(
    r"^\*?(To|An|À|A|Para|Aan|Cc|Subject|Betreff|Objet|Asunto|Assunto|Oggetto|Onderwerp)\s*:", re.I
)


def _attribution(text: str) -> bool:
    """Is ``text`` a mail client's line over a quote ("On Mon, 3 Jun 2024, Ann <a@b.c> wrote:")?
    Its shape alone is a customer's sentence too ("On Friday I wrote to you about these
    problems:", "Le technicien m'a écrit :"): an address, a time or a date must be in it. The
    German and Dutch shape ends like any sentence ("Am Montag schrieb mir der Techniker:"), and
    their clients write the date in numbers: a weekday or month name is not enough there."""
    if _WROTE.match(text):
        return bool(_QUOTE_STAMP.search(text) or _DATE_NAMES.search(text))
    return bool(_SCHRIEB.match(text) and _QUOTE_STAMP.search(text))


def _outlook_block(lines) -> bool:
    """Do ``lines`` begin with Outlook's header block: a From line, then (blank lines aside) a Sent
    or Date line and a To or Subject line, in either order? The From line has an address, or the
    Sent line a time stamp (a time, or a date with its year): Outlook writes a sender in the
    address book by name alone ("From: Acme Support" over our own answer), and a customer's own
    "From: Hamburg / To: Lisbon / Date: 12 March" has neither."""
    fields = [line.strip() for line in lines if line.strip()][:3]
    if len(fields) < 3 or not _OUTLOOK_FROM.match(fields[0]):
        return False
    kinds = ["sent" if _OUTLOOK_SENT.match(field) else "to" if _OUTLOOK_TO.match(field) else "" for field in fields[1:]]
    if sorted(kinds) != ["sent", "to"]:
        return False
    sent = fields[1 + kinds.index("sent")].partition(":")[2]
    return bool(re.search(_ADDRESS, fields[0]) or re.search(_TIME, sent)
                or (re.search(_YEAR, sent) and _DATE_NAMES.search(sent)))


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
        if any(cut.match(stripped) for cut in _CUTS) or _attribution(stripped):
            break
        if (_attribution(two_lines) and not stripped.endswith(".")) or _outlook_block(lines[index : index + 7]):
            break
        if stripped.startswith(">"):
            continue
        kept.append(line)
    result = normalize("\n".join(kept))
    return result or normalize(text)
