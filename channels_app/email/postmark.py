"""Postmark's inbound webhook JSON -> the raw MIME message the rest of the email channel reads.

Postmark posts a parsed mail: ``From``/``FromFull``, ``To``, ``Cc``, ``ReplyTo``,
``Subject``, ``Date``, ``TextBody``, ``HtmlBody``, ``Headers`` (``[{"Name", "Value"}]``,
the original headers), ``Attachments`` (``[{"Name", "Content" (base64), "ContentType"}]``),
``MessageID`` (Postmark's own id, the same on every retry) and, when the inbound stream
includes it, ``RawEmail``. With ``RawEmail`` the original bytes are used as they are;
otherwise a MIME message is rebuilt with the stdlib ``email`` package from the fields and
the original headers, so everything after it — threading (Message-ID, In-Reply-To,
References), the never-answer rules (Auto-Submitted, List-Id, Precedence, bounces),
dedupe, the daily cap — works exactly as for raw MIME. A mail without its own Message-ID
gets ``<MessageID@inbound.postmarkapp.com>``: a retried post is stored once. Headers beyond
ASCII are written in UTF-8 (RFC 6532), as ``parse`` reads them.
"""
import base64
import binascii
import json
import re
from email import policy
from email.message import EmailMessage

from bots.services import storable

# Set from the payload's fields, or describing the original body we do not have.
_OWN_HEADERS = {"from", "to", "cc", "reply-to", "subject", "date", "message-id",
                "content-type", "content-transfer-encoding", "mime-version"}  # fmt: skip
# Written as Postmark gives them (``_threading``), not through the email package's header objects.
_THREADING = ("message-id", "in-reply-to", "references")
# Raw UTF-8 headers: a Message-ID beyond ASCII (RFC 6532 allows one) was refused by the ASCII
# generator, and the mail kept as unparseable, never answered.
_UTF8 = policy.default.clone(utf8=True)


class PostmarkError(ValueError):
    """The body is not a Postmark inbound payload."""


class Unbuildable(Exception):
    """A Postmark payload the email package could not write as MIME: the webhook keeps the JSON as
    an unparseable mail rather than answering 500 until Postmark gives up on it."""


def looks_like_postmark(payload) -> bool:
    return isinstance(payload, dict) and ("FromFull" in payload or "From" in payload) and (
        "TextBody" in payload or "HtmlBody" in payload or "RawEmail" in payload)


def to_mime(body: bytes) -> bytes:
    """Postmark's JSON body -> raw MIME bytes. Raises PostmarkError for anything else."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise PostmarkError("the JSON body is not valid JSON") from None
    payload = storable(payload)  # a lone "\\ud83d" in the JSON: U+FFFD, as MIME and the database can hold it
    if not looks_like_postmark(payload):
        raise PostmarkError('a JSON body must be a Postmark inbound payload ({"From", "Subject", "TextBody", '
                            '"Headers", ...}); other services: post the raw MIME')
    raw = payload.get("RawEmail")
    if isinstance(raw, str) and raw.strip():
        return raw.encode("utf-8", errors="surrogateescape")
    message = EmailMessage()
    headers = {}
    for item in _list(payload.get("Headers")):
        if isinstance(item, dict) and isinstance(item.get("Name"), str) and isinstance(item.get("Value"), str):
            headers.setdefault(item["Name"].strip().lower(), []).append((item["Name"].strip(), item["Value"]))
    sender = payload.get("FromFull") if isinstance(payload.get("FromFull"), dict) else {}
    from_value = _address(_text(sender.get("Name")), _text(sender.get("Email"))) if sender.get("Email") \
        else _text(payload.get("From"))
    message_id = next((value for _, value in headers.get("message-id", [])), "") \
        or (f"<{_text(payload.get('MessageID'))}@inbound.postmarkapp.com>" if payload.get("MessageID") else "")
    for name, value in (("From", from_value), ("To", payload.get("To")), ("Cc", payload.get("Cc")),
                        ("Reply-To", payload.get("ReplyTo")), ("Subject", payload.get("Subject")),
                        ("Date", payload.get("Date"))):
        _set(message, name, _text(value))
    threading = _threading([("Message-ID", message_id), *headers.get("in-reply-to", []), *headers.get("references", [])])
    for lower, pairs in headers.items():
        if lower not in _OWN_HEADERS and lower not in _THREADING:
            for name, value in pairs:
                _set(message, name, value)
    text, html = _text(payload.get("TextBody")), _text(payload.get("HtmlBody"))
    if text or not html:
        message.set_content(text)
        if html:
            message.add_alternative(html, subtype="html")
    else:
        message.set_content(html, subtype="html")
    for attachment in _list(payload.get("Attachments")):
        _attach(message, attachment)
    try:
        return threading + message.as_bytes(policy=_UTF8)
    except Exception as error:  # noqa: BLE001 - the stdlib raises many kinds on values it took
        raise Unbuildable(f"Postmark JSON not writable as MIME: {type(error).__name__}: {error}") from error


def _text(value) -> str:
    return value if isinstance(value, str) else ""


def _list(value) -> list:
    """A field that should be a list ("Headers", "Attachments"); anything else (1, true) as none."""
    return value if isinstance(value, list) else []


def _address(name: str, email: str) -> str:
    """``"Name" <email>``: the name always quoted, for the header parser to read like any mail.
    Not ``formataddr``: its encoded word ("=?utf-8?b?UnVpeiwgSm9zw6k=?=") is decoded and folded
    again without quotes (``From: Ruiz, =?utf-8?q?Jos=C3=A9?= <j@example.com>``, two addresses and
    no sender), and it refuses an address beyond ASCII (josé@example.com)."""
    name = " ".join(name.split())  # a newline in it would have the header refused
    quoted = name.replace("\\", "\\\\").replace('"', '\\"')  # "Ruiz, José": one name, not two addresses
    return f'"{quoted}" <{email}>' if name else email


def _threading(pairs) -> bytes:
    """Message-ID, In-Reply-To and References as header lines, their values as Postmark gives them
    (unfolded). Not through the email package: it reads In-Reply-To and References as text, so an
    encoded word in an id (``<=?utf-8?q?abc=C3=A9?=@example.com>``) came back decoded, another id
    than the customer's mail client remembers."""
    lines = []
    for name, value in pairs:
        value = re.sub(r"[\r\n]", "", _text(value)).strip()  # unfolded; a line break cannot start a header of its own
        if value:
            lines.append(f"{name}: {value}\n")
    return "".join(lines).encode("utf-8")


def _set(message: EmailMessage, name: str, value: str) -> None:
    """Add a header, on one line: the email package refuses a value with any character
    ``str.splitlines`` breaks at (a newline, and U+2028 or a vertical tab pasted into a subject,
    which lost the subject). A value it still refuses (the IndexError its address parser raises for
    ``help@acme-bikes.example, "``) is left out."""
    value = " ".join(value.splitlines())
    if not value.strip():
        return
    try:
        message[name] = value
    except Exception:  # noqa: BLE001 - the stdlib raises many kinds on hostile input
        pass


def _attach(message: EmailMessage, attachment) -> None:
    """Attach one file; an attachment that is not base64 is kept as a note of its name only."""
    if not isinstance(attachment, dict):
        return
    name = _text(attachment.get("Name")) or "attachment"
    maintype, _, subtype = (_text(attachment.get("ContentType")) or "application/octet-stream").partition("/")
    try:
        content = base64.b64decode(_text(attachment.get("Content")), validate=True)
    except (binascii.Error, ValueError):
        content = b""
    try:
        message.add_attachment(content, maintype=maintype or "application", subtype=subtype or "octet-stream",
                               filename=name)
    except Exception:  # noqa: BLE001 - the stdlib raises many kinds on hostile input
        message.add_attachment(content, maintype="application", subtype="octet-stream", filename="attachment")
