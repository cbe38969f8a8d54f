"""Files from website visitors: ``POST /channels/widget/<public_key>/upload/``.

A ``multipart/form-data`` post from widget.js (no cookies): ``token`` (the visitor token the
socket's ``session`` frame gave), ``id`` (the widget's client id for this message), ``text``
(an optional caption) and one ``file``. The visitor token is the credential — it is signed
for this bot and names the visitor — and the page's ``Origin`` must be on the bot's
allow-list, as for the socket; CSRF protection guards cookie sessions and does not apply.

Checked before anything is stored: the widget is enabled and takes files, the origin, the
token, the client id (one stored already is a retry: its message is answered again, 200), the
per-visitor, per-address and per-bot message limits (a file counts as a message), the size
(the bot's ``max_upload_mb``) and the type: JPEG, PNG, GIF, WebP, PDF or UTF-8 text,
recognised by the file's own first bytes, not by its name or the browser's word.
A refusal is a JSON ``error`` (code + a sentence for the visitor), stores nothing, and is
readable by the page (CORS for allow-listed origins).

Accepted files go through ``bots.services.receive()`` like any message: stored with the
message in one transaction, in the attachments storage, never served publicly (the inbox
serves them to members, ``bots.files``). A caption is answered by the bot as usual, and so is a
PDF or text file alone (the model reads its text); an image alone gets a canned reply, unless
an agent has the conversation. The visitor's open sockets are told (``live.follow``): a file
may start the conversation, and every tab then listens to it.
"""
import mimetypes

from django.db import transaction

from bots import services
from bots.files import media_type, readable
from bots.models import Bot

from . import options as widget_options
from . import live, ratelimit, tokens
from .inbound import CHANNEL, CLIENT_ID, Refusal, echo, external_id, sent_before

# content type -> how its files begin (the declared type must agree with the bytes)
SIGNATURES = {
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "image/webp": (b"RIFF",),  # RIFF....WEBP, checked below
    "application/pdf": (b"%PDF-",),
}
TEXT_TYPES = ("text/plain",)
ACCEPT = ",".join([*SIGNATURES, *TEXT_TYPES, ".jpg", ".jpeg", ".png", ".gif", ".webp", ".pdf", ".txt"])
SLACK_BYTES = 64 * 1024  # multipart framing and the small fields around the file


class UploadRefusal(Refusal):
    def __init__(self, status: int, code: str, message: str, retry_after: int | None = None):
        super().__init__(code, message, retry_after=retry_after)
        self.status = status


def sniff(declared: str, filename: str, head: bytes) -> str | None:
    """The file's content type when its bytes are one we take and agree with what it claims to
    be (the declared type, else its name's), else None."""
    claimed = media_type(declared) or (mimetypes.guess_type(filename)[0] or "")
    if claimed == "application/octet-stream":  # browsers' word for "unknown": go by the name
        claimed = mimetypes.guess_type(filename)[0] or ""
    if claimed in SIGNATURES:
        if not head.startswith(SIGNATURES[claimed]):
            return None
        if claimed == "image/webp" and head[8:12] != b"WEBP":
            return None
        return claimed
    if claimed in TEXT_TYPES:
        return claimed if _is_text(head) else None
    return None


def _is_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:  # a multi-byte character cut at the end of the sample is fine
        return error.start >= len(head) - 3 and error.reason == "unexpected end of data"
    return True


def too_large(limit_mb: int) -> UploadRefusal:
    return UploadRefusal(413, "too_large", f"Files are limited to {limit_mb} MB.")


def check_request(public_key: str, origin: str, content_length: int, own_origin: str = ""):
    """What can be decided before the body is parsed: ``(bot, options)`` or a refusal. (Django's ASGI
    handler has received the body by then; chatnexus/bodylimit.py refuses one over
    ``CHATNEXUS_MAX_REQUEST_BYTES`` before it is read.)"""
    loaded = widget_options.load(public_key)
    if loaded is None:
        return UploadRefusal(404, "not_found", "No website widget is enabled for this bot.")
    bot, _config, opts = loaded
    if not origin or not widget_options.origin_allowed(opts, origin, own_origin):
        return UploadRefusal(403, "forbidden_origin", "This website is not allowed to use this chat.")
    if not opts["file_uploads"]:
        return UploadRefusal(403, "uploads_off", "This chat does not take files.")
    if content_length > int(opts["max_upload_mb"]) * 1024 * 1024 + SLACK_BYTES:
        return too_large(int(opts["max_upload_mb"]))
    return bot, opts


def take_upload(bot: Bot, opts: dict, public_key: str, fields, files, client_ip: str = "?") -> tuple[int, dict] | UploadRefusal:
    """Validate and store the visitor's file: ``(HTTP status, message frame)`` or a refusal."""
    visitor_id = tokens.verify(public_key, fields.get("token") or "")
    if visitor_id is None:
        return UploadRefusal(401, "bad_token", "Your chat session is not valid; reload the page and try again.")
    client_id = fields.get("id") or ""
    if not CLIENT_ID.match(client_id):
        return UploadRefusal(400, "bad_frame", 'Each message needs an "id": 1-64 letters, digits, "-" or "_".')
    if (stored := sent_before(bot.id, visitor_id, client_id)) is not None:  # a retry: stored once, whatever the rate
        return 200, echo(stored, client_id)
    if len(files.getlist("file")) != 1:
        return UploadRefusal(400, "no_file", "Attach one file.")
    upload = files["file"]
    text = (fields.get("text") or "").strip()
    limit = int(opts["max_message_chars"])
    if len(text) > limit:
        return UploadRefusal(400, "too_long", f"Messages are limited to {limit} characters; yours has {len(text)}.")
    if upload.size > int(opts["max_upload_mb"]) * 1024 * 1024:
        return too_large(int(opts["max_upload_mb"]))
    if upload.size == 0:
        return UploadRefusal(400, "empty_file", "That file is empty.")
    content = upload.read()
    content_type = sniff(upload.content_type, upload.name or "", content[:4096])
    if content_type is None:
        return UploadRefusal(415, "file_type", "Only images (JPEG, PNG, GIF, WebP), PDF and text files can be sent.")
    verdict = ratelimit.check_message(public_key, visitor_id, opts, client_ip)
    if verdict is not None:
        return UploadRefusal(429, "rate_limited", f"You're sending messages too quickly. Please wait "
                             f"{verdict.retry_after} seconds and try again.", retry_after=verdict.retry_after)
    name = (upload.name or "").replace("\x00", "")[-255:]
    answer = bool(text) or readable(content_type)  # a PDF or text file alone: the model reads it
    with transaction.atomic():
        received = services.receive(
            bot=bot,
            channel=CHANNEL,
            thread_id=visitor_id,
            text=text,
            external_id=external_id(visitor_id, client_id),  # as on the socket: a retried upload is stored once
            meta={"widget": True},
            answer=answer,
            skip_reason="" if answer else "image only: answered with a canned text reply",
            files=[(name, content_type, content)],
        )
        if not answer:
            services.canned_reply(received)
        # the visitor's sockets (this tab's, others') may not listen to the conversation yet: it may be new
        conversation_id = received.message.conversation_id
        transaction.on_commit(lambda: live.follow(bot.id, visitor_id, conversation_id))
    return (201 if received.created else 200), echo(received.message, client_id)
