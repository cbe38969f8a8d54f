"""The widget's inbound logic, kept out of the consumer: open a visitor session,
validate a frame, hand a message to ``bots.services.receive()``, read history.

Every function here is synchronous (ORM, cache); the consumer wraps them with
``database_sync_to_async``. Problems come back as ``Refusal`` values carrying the
clear message the visitor sees — never as exceptions that would drop the socket.
"""
import json
import re
import time
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from bots import services
from bots.models import Bot, Conversation, Message

from . import options as widget_options
from . import ratelimit, tokens

CHANNEL = "widget"
HISTORY_LIMIT = 100
CLIENT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
HANDOFF_TEXT = "I'd like to talk to a human, please."
# what an address may be: Conversation.contact_email's column (RFC 5321's path limit); the validator lets 320 through
MAX_EMAIL = Conversation._meta.get_field("contact_email").max_length
# An open socket re-reads its widget's settings at most this often: a manager who turns the widget
# off or removes a site stops it within seconds, and a stream of frames costs no query each.
OPTIONS_FRESH_S = 2.0


@dataclass
class Refusal:
    code: str  # machine-readable: forbidden_origin, rate_limited, bad_token, bad_frame, too_long...
    message: str  # what the visitor is told
    close_code: int | None = None  # close the socket with this code after telling
    retry_after: int | None = None
    client_id: str | None = None  # the refused message's id: the widget marks it failed, not sent

    def frame(self):
        frame = {"type": "error", "code": self.code, "message": self.message}
        if self.retry_after is not None:
            frame["retry_after"] = self.retry_after
        if self.client_id is not None:
            frame["client_id"] = self.client_id
        return frame


@dataclass
class Session:
    bot_id: int
    public_key: str
    options: dict
    visitor_id: str
    token: str
    conversation_id: int | None  # None until the visitor's first message
    client_ip: str = "?"  # connections and messages from one address share limits (ratelimit.py)
    origin: str = ""  # the page's origin, checked again against the allow-list (recheck)
    checked: float = 0.0  # time.monotonic() when `options` were last read
    own_origin: str = ""  # the platform's origin as the socket reached it (options.own_origin): allowed too


def forbidden_origin() -> Refusal:
    return Refusal("forbidden_origin", "This website is not allowed to use this chat.", close_code=4403)


def open_session(public_key: str, origin: str, token: str, client_ip: str, own_origin: str = "") -> Session | Refusal:
    loaded = widget_options.load(public_key)
    if loaded is None or not widget_options.origin_allowed(loaded[2], origin, own_origin):
        return forbidden_origin()
    bot, _config, opts = loaded
    visitor_id = tokens.verify(public_key, token) if token else None
    if token and visitor_id is None:
        return Refusal("bad_token", "Your chat session is not valid; starting a new one.", close_code=4401)
    verdict = ratelimit.check_connection(public_key, visitor_id, opts, client_ip)
    if verdict is not None:
        return Refusal(
            "rate_limited",
            f"Too many connections. Please wait {verdict.retry_after} seconds and try again.",
            close_code=4429,
            retry_after=verdict.retry_after,
        )
    if visitor_id is None:
        visitor_id, token = tokens.issue(public_key)
    return Session(bot.id, public_key, opts, visitor_id, token, conversation_of(bot.id, visitor_id), client_ip,
                   origin, time.monotonic(), own_origin)


def recheck(session: Session) -> Refusal | None:
    """Before an open socket's frame: the widget's settings as they are now (at most
    ``OPTIONS_FRESH_S`` old). Turned off, or the page's site no longer allowed: the forbidden-origin
    refusal, and the socket closes; otherwise the frame is judged by the current limits."""
    if time.monotonic() - session.checked < OPTIONS_FRESH_S:
        return None
    loaded = widget_options.load(session.public_key)
    allowed = loaded is not None and widget_options.origin_allowed(loaded[2], session.origin, session.own_origin)
    if not allowed or loaded[0].id != session.bot_id:
        return forbidden_origin()
    session.options, session.checked = loaded[2], time.monotonic()
    return None


def conversation_of(bot_id: int, visitor_id: str) -> int | None:
    """The visitor's conversation with the bot, if they have written (or sent a file) yet."""
    return Conversation.objects.filter(bot_id=bot_id, channel=CHANNEL, external_id=visitor_id).values_list(
        "id", flat=True).first()


def public_message(message: Message) -> dict:
    """A message as the visitor may see it (no decoding stats or delivery internals)."""
    data = services.serialize_message(message)
    return {k: data[k] for k in ("id", "direction", "sender", "text", "created", "reply_to", "rating", "attachments")}


def history(conversation_id: int | None) -> dict:
    """The ``history`` frame: the conversation's latest messages and whether a reply is pending."""
    if conversation_id is None:
        return {"type": "history", "messages": [], "pending": None}
    recent = services.recent_turns(conversation_id, HISTORY_LIMIT)
    pending = next(
        (m.id for m in reversed(recent) if m.direction == Message.Direction.INBOUND and m.reply_state == Message.ReplyState.PENDING),
        None,
    )
    return {"type": "history", "messages": [public_message(m) for m in recent], "pending": pending}


BAD_HELLO = Refusal("bad_frame", 'The first frame must be {"type": "hello", "token": ...}.', close_code=4400)


def parse_hello(raw: str | None) -> str | Refusal:
    """The visitor token in the socket's first frame, ``{"type": "hello", "token": "..."}``
    (``""`` for a new visitor). The token travels in a frame, not in the URL, so it stays
    out of proxy and server access logs."""
    if raw is None or len(raw) > 2048:
        return BAD_HELLO
    try:
        frame = json.loads(raw)
    except ValueError:
        frame = None
    if not isinstance(frame, dict) or frame.get("type") != "hello":
        return BAD_HELLO
    token = frame.get("token") or ""
    if not isinstance(token, str):
        return Refusal("bad_token", "Your chat session is not valid; starting a new one.", close_code=4401)
    return token


def longest_frame(max_chars: int) -> int:
    """The longest frame a message of ``max_chars`` characters makes: JSON escaping (``\\u0001``) can at
    most ~6x a text, and the other fields take less than 1 kB; a longer frame is too long anyway."""
    return max_chars * 6 + 1024


def parse_frame(raw: str | None, opts: dict) -> dict | Refusal:
    """A visitor frame, validated: ``{"type": "message"|"handoff", "text", "id", "email"}``, a rating
    ``{"type": "rate", "message", "rating"}`` or a ping."""
    limit = int(opts["max_message_chars"])
    if raw is None:
        return Refusal("bad_frame", "Messages must be JSON text frames.")
    if len(raw) > longest_frame(limit):
        return Refusal("too_long", f"Messages are limited to {limit} characters.")
    try:
        frame = json.loads(raw)
    except ValueError:
        return Refusal("bad_frame", "Messages must be JSON objects.")
    if not isinstance(frame, dict):
        return Refusal("bad_frame", "Messages must be JSON objects.")
    kind = frame.get("type")
    if kind in ("ping", "sync"):  # sync: after an upload (uploads.py) started the conversation
        return {"type": kind}
    if kind == "rate":
        return _parse_rating(frame)
    if kind not in ("message", "handoff"):
        return Refusal("bad_frame", 'Unknown frame type; expected "message", "handoff" or "rate".')
    client_id = frame.get("id")
    if not isinstance(client_id, str) or not CLIENT_ID.match(client_id):
        return Refusal("bad_frame", 'Each message needs an "id": 1-64 letters, digits, "-" or "_".')
    parsed = _message(frame, kind, limit)
    if isinstance(parsed, Refusal):
        parsed.client_id = client_id  # the widget marks that message failed and puts its words back
        return parsed
    return {**parsed, "id": client_id}


def _message(frame: dict, kind: str, limit: int) -> dict | Refusal:
    """A message or handoff frame's ``{"type", "text", "email"}``, or why it is refused."""
    email = frame.get("email") or ""
    if not isinstance(email, str):
        return Refusal("bad_frame", '"email" must be a string.')
    if email:
        try:
            if len(email) > MAX_EMAIL:
                raise ValidationError("too long")
            validate_email(email)
        except ValidationError:
            return Refusal("bad_email", "That email address does not look right.")
    text = frame.get("text") if kind == "message" else frame.get("text") or HANDOFF_TEXT  # the widget's words, in its language
    if not isinstance(text, str):
        return Refusal("bad_frame", '"text" must be a string.')
    text = text.strip()
    if not text:
        return Refusal("empty", "Please type a message.")
    if len(text) > limit:
        return Refusal("too_long", f"Messages are limited to {limit} characters; yours has {len(text)}.")
    return {"type": kind, "text": text, "email": email}


def _too_fast(session: Session) -> Refusal | None:
    """Messages and ratings share the visitor's and the bot's per-minute limits."""
    verdict = ratelimit.check_message(session.public_key, session.visitor_id, session.options, session.client_ip)
    if verdict is None:
        return None
    return Refusal(
        "rate_limited",
        f"You're sending messages too quickly. Please wait {verdict.retry_after} seconds and try again.",
        retry_after=verdict.retry_after,
    )


def _parse_rating(frame: dict) -> dict | Refusal:
    """``{"type": "rate", "message": <a bot reply's id>, "rating": 1 | -1}``."""
    message_id, rating = frame.get("message"), frame.get("rating")
    if type(message_id) is not int or type(rating) is not int or rating not in Message.Rating.values:
        return Refusal("bad_frame", 'A rating is {"type": "rate", "message": <reply id>, "rating": 1 or -1}.')
    return {"type": "rate", "message": message_id, "rating": rating}


def rate(session: Session, frame: dict) -> dict | Refusal:
    """Store the visitor's rating of a bot reply in their own conversation; the ``rated`` frame."""
    if (refusal := _too_fast(session)) is not None:
        return refusal
    if session.conversation_id is None or not services.rate_reply(session.conversation_id, frame["message"],
                                                                  frame["rating"]):
        return Refusal("not_found", "There is no such reply in this conversation.")
    return {"type": "rated", "message": frame["message"], "rating": frame["rating"]}


def external_id(visitor_id: str, client_id: str) -> str:
    """A visitor's message's external id (its socket frame's or upload's client id), namespaced by
    visitor: one visitor's client ids can never reach another's conversation."""
    return f"{visitor_id}:{client_id}"


def echo(message: Message, client_id: str) -> dict:
    """The ``message`` frame that tells the visitor their message ``client_id`` is stored."""
    return {"type": "message", "message": public_message(message), "client_id": client_id}


def sent_before(bot_id: int, visitor_id: str, client_id: str) -> Message | None:
    """The visitor's message stored under ``client_id`` already: a frame or an upload sent again (the
    widget re-sends what it has not seen echoed, after a reload; a post whose answer was lost) gets
    its echo whatever the rate, since it is no new message."""
    return Message.objects.filter(bot_id=bot_id, channel=CHANNEL,
                                  external_id=external_id(visitor_id, client_id)).first()


def take_message(session: Session, frame: dict) -> tuple[int, dict] | Refusal:
    """Rate-limit and store the visitor's message; ``(conversation_id, echo of the message)``, also for a
    message stored already (``sent_before``)."""
    stored = sent_before(session.bot_id, session.visitor_id, frame["id"])
    if stored is not None:
        return stored.conversation_id, echo(stored, frame["id"])
    if (refusal := _too_fast(session)) is not None:
        return refusal
    bot = Bot.objects.get(id=session.bot_id)
    handoff = frame["type"] == "handoff"
    received = services.receive(
        bot=bot,
        channel=CHANNEL,
        thread_id=session.visitor_id,
        text=frame["text"],
        external_id=external_id(session.visitor_id, frame["id"]),
        contact={"email": frame["email"]} if frame["email"] else {},
        meta={"widget": True},
        # A handoff request goes straight to the bot's handoff (pause + tell the team).
        answer=not handoff,
        skip_reason="handoff" if handoff else "",
    )
    return received.message.conversation_id, echo(received.message, frame["id"])

