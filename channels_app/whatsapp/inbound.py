"""WhatsApp's inbound logic, behind the thin views: check a Twilio request, store a
message, move a reply's delivery state forward.

Order of checks: the channel (by URL key) → the signature (``X-Twilio-Signature``
over ``PUBLIC_URL`` + path, because proxies and TLS terminators change the URL
Django sees) → the receiving number or Messaging Service SID → the fields.
"""
import logging
import math
import unicodedata
from dataclasses import dataclass
from urllib.parse import quote

from django.conf import settings
from django.db import transaction
from twilio.request_validator import RequestValidator, get_signature_algorithm

from bots import services
from bots.files import readable
from bots.models import Message

from ..models import ChannelConfig
from ..tasks import flag_for_the_team, store_whatsapp_media
from . import window
from .adapter import KNOWN_ERRORS

log = logging.getLogger(__name__)

MAX_MEDIA = 10  # Twilio sends at most 10 media per message


class Rejected(Exception):
    """The request is refused with ``status`` and a short reason."""

    def __init__(self, status, reason):
        super().__init__(reason)
        self.status = status
        self.reason = reason


def channel_for(key) -> ChannelConfig:
    config = ChannelConfig.objects.select_related("bot").filter(key=key, kind="whatsapp", enabled=True).first()
    if config is None:
        raise Rejected(404, "unknown WhatsApp channel")
    return config


def check_signature(config, request):
    """403 unless the request is signed over the public URL with the channel's Auth Token, or, when Twilio
    says it signed with a SharedKey (``X-Twilio-Webhooks-Signature-Settings``: a Webhook Rule matched the URL),
    with that key's secret, stored as the channel's webhook signing key. A SharedKey signature is never
    checked against the Auth Token: it cannot match, and the reason is logged for whoever set the rule up."""
    signature = request.headers.get("X-Twilio-Signature", "")
    signed_with = request.headers.get("X-Twilio-Webhooks-Signature-Settings", "")
    secret = config.secrets.get("webhook_signing_key" if signed_with else "auth_token", "")
    if signed_with and not secret:
        log.warning("WhatsApp channel %s: Twilio signed with a SharedKey (%s) but the channel has no webhook "
                    "signing key; add the key's secret on the Channels page", config.key, signed_with[:200])
        raise Rejected(403, "signed with a Twilio SharedKey, but this channel has no webhook signing key")
    if not signature or not secret:
        raise Rejected(403, "missing Twilio signature")
    url = settings.PUBLIC_URL + request.get_full_path()
    if not RequestValidator(secret).validate(url, request.POST, signature, algorithm=get_signature_algorithm(signed_with)):
        if signed_with:
            log.warning("WhatsApp channel %s: the SharedKey signature (%s) does not match the stored webhook "
                        "signing key", config.key, signed_with[:200])
        raise Rejected(403, "invalid Twilio signature")


def _number(value):
    return value.strip().removeprefix("whatsapp:").strip()


def check_recipient(config, params):
    """The message must be addressed to this channel's number or Messaging Service."""
    number = _number(config.settings.get("phone_number", ""))
    service = config.settings.get("messaging_service_sid", "").strip()
    if number and _number(params.get("To", "")) == number:
        return
    if service and params.get("MessagingServiceSid", "").strip() == service:
        return
    raise Rejected(404, "this webhook is not configured for that number or Messaging Service")


@dataclass
class Inbound:
    sid: str
    sender: str
    body: str
    profile_name: str
    media: list
    to: str = ""  # the number the customer wrote to (one of a Messaging Service's): replies go from it
    location: dict | None = None  # a shared location: latitude, longitude, address, label


def parse_message(params) -> Inbound:
    sid = params.get("MessageSid", "").strip() or params.get("SmsMessageSid", "").strip()
    sender = params.get("From", "").strip()
    if not sid or not sender:
        raise Rejected(400, "MessageSid and From are required")
    if len(sid) > 64 or len(sender) > 64:
        raise Rejected(400, "MessageSid or From is too long")
    try:
        num_media = int(params.get("NumMedia", "0") or 0)
    except ValueError:
        raise Rejected(400, "NumMedia must be a number") from None
    if not 0 <= num_media <= MAX_MEDIA:
        raise Rejected(400, f"NumMedia must be between 0 and {MAX_MEDIA}")
    media = [
        {"url": params.get(f"MediaUrl{i}", ""), "content_type": params.get(f"MediaContentType{i}", "")}
        for i in range(num_media)
    ]
    if "\x00" in sid + sender:
        raise Rejected(400, "MessageSid or From contains a NUL character")
    body = params.get("Body", "").replace("\x00", "\ufffd")  # PostgreSQL text cannot hold NUL
    name = params.get("ProfileName", "")[:200].replace("\x00", "\ufffd")
    media = [{key: value.replace("\x00", "") for key, value in item.items()} for item in media]
    to = _number(params.get("To", ""))[:64].replace("\x00", "")
    return Inbound(sid, sender, body, name, media, to, _location(params))


def _location(params) -> dict | None:
    """A location the customer shared (no text, no media: Latitude, Longitude, and Address and Label
    when they picked a place), or None."""
    latitude, longitude = params.get("Latitude", "").strip(), params.get("Longitude", "").strip()
    if not latitude and not longitude:
        return None
    try:
        lat, lon = float(latitude), float(longitude)
    except ValueError:
        raise Rejected(400, "Latitude and Longitude must be numbers") from None
    if not (math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180):
        raise Rejected(400, "Latitude and Longitude are out of range")
    place = {"latitude": latitude[:32], "longitude": longitude[:32]}
    for key in ("Address", "Label"):
        if params.get(key, "").strip():
            place[key.lower()] = params[key].strip()[:500].replace("\x00", "\ufffd")
    return place


def location_text(place) -> str:
    """A shared location in words the agent and the model read: "📍 Label, Address (lat, lon)" and a map link."""
    where = ", ".join(dict.fromkeys(place[key] for key in ("label", "address") if place.get(key)))
    coordinates = f"{place['latitude']}, {place['longitude']}"
    link = "https://www.google.com/maps/search/?api=1&query=" + quote(f"{place['latitude']},{place['longitude']}", safe=",")
    return f"📍 {where} ({coordinates})\n{link}" if where else f"📍 {coordinates}\n{link}"


# A message that is nothing but one of these (case, accents, spaces and punctuation aside: "Stop!",
# "STOP ALL", "opt-out", "Arrêt") opts the customer out of the business's WhatsApp messages. Twilio's
# own opt-out words (it acts on them for SMS only), "arret" (French; on Canadian carriers' required
# list) and "baja" (Spanish). START, or any other message, ends the opt-out (window.follow_customer).
OPT_OUT_WORDS = frozenset({"stop", "stopall", "unsubscribe", "cancel", "end", "quit", "optout", "revoke",
                           "arret", "baja"})


def is_opt_out(text) -> bool:
    """Whether ``text`` is just an opt-out word: its letters and digits, case- and accent-folded."""
    plain = unicodedata.normalize("NFKD", text.casefold())
    return "".join(char for char in plain if char.isalnum()) in OPT_OUT_WORDS


def store_message(config, inbound: Inbound):
    """Store the message (once per MessageSid). Media alone that the model cannot read (photos,
    voice notes, video) get a canned text answer; a document it can read (PDF, text) is answered.
    An opt-out word alone is stored, not answered, and ends what is sent to the customer until
    they write again (window.py)."""
    text = "\n".join(filter(None, [inbound.body, inbound.location and location_text(inbound.location)]))
    media_only = (bool(inbound.media) and not text.strip()
                  and not any(readable(item["content_type"]) for item in inbound.media))
    opt_out = not inbound.media and not inbound.location and is_opt_out(inbound.body)
    meta = {key: value for key, value in
            (("media", inbound.media), ("to", inbound.to), ("location", inbound.location)) if value}
    with transaction.atomic():
        received = services.receive(
            bot=config.bot,
            channel="whatsapp",
            thread_id=inbound.sender,
            text=text,
            external_id=inbound.sid,
            contact={"phone": _number(inbound.sender), "name": inbound.profile_name},
            meta=meta,
            answer=not (media_only or opt_out),
            skip_reason="opt-out" if opt_out else "media only: answered with a canned text reply" if media_only else "",
        )
        if received.created:
            window.follow_customer(received.message, opt_out)
        if media_only:
            services.canned_reply(received)
        if received.created and inbound.media:
            transaction.on_commit(lambda: store_whatsapp_media.delay(received.message.id))
    return received


# ---------------------------------------------------------------------------
# Status callbacks: forward only

# Twilio status -> our delivery state. queued/accepted/sending are "handed to Twilio".
_TWILIO_STATUS = {
    "accepted": Message.Delivery.SENT,
    "scheduled": Message.Delivery.SENT,
    "queued": Message.Delivery.SENT,
    "sending": Message.Delivery.SENT,
    "sent": Message.Delivery.SENT,
    "delivered": Message.Delivery.DELIVERED,
    "read": Message.Delivery.READ,
    "failed": Message.Delivery.FAILED,
    "undelivered": Message.Delivery.FAILED,
}
_RANK = {
    Message.Delivery.PENDING: 0,
    Message.Delivery.SENDING: 0,
    Message.Delivery.SENT: 1,
    Message.Delivery.DELIVERED: 2,
    Message.Delivery.FAILED: 2,  # a message fails after being sent, never after being delivered
    Message.Delivery.READ: 3,
}


def apply_status(config, message_id, params):
    """Record one part's status; the message's state is its least advanced part, never going back."""
    sid = params.get("MessageSid", "").strip()
    status = _TWILIO_STATUS.get(params.get("MessageStatus", "").strip().lower())
    if not sid or status is None:
        raise Rejected(400, "MessageSid and a known MessageStatus are required")
    try:
        message_id = int(message_id)
    except (TypeError, ValueError):
        raise Rejected(400, "the status callback URL lacks its message id") from None
    with transaction.atomic():
        message = (
            Message.objects.select_for_update()
            .filter(id=message_id, bot_id=config.bot_id, channel="whatsapp", direction=Message.Direction.OUTBOUND)
            .first()
        )
        sids = (message.meta or {}).get("twilio_sids", []) if message else []
        if message is None:
            raise Rejected(404, "no such outbound message")
        if sid not in sids:
            if message.delivery_status not in (Message.Delivery.PENDING, Message.Delivery.SENDING):
                raise Rejected(404, "no such outbound message")
            # Twilio called back before our send recorded this part's sid (it does not retry a refused
            # callback): kept, and applied by the send once it has (WhatsAppAdapter.settle)
            meta = dict(message.meta or {})
            early = dict(meta.get("twilio_early", {}))
            known = _TWILIO_STATUS.get(early.get(sid, {}).get("MessageStatus", "").strip().lower())
            if known is None or _RANK[status] > _RANK[known]:
                early[sid] = {key: params.get(key, "") for key in ("MessageSid", "MessageStatus", "ErrorCode")}
            meta["twilio_early"] = early
            Message.objects.filter(id=message.id).update(meta=meta)
            return message.delivery_status
        meta = dict(message.meta)
        parts = dict(meta.get("twilio_status", {}))
        current = parts.get(sid)
        if current is None or _RANK[status] > _RANK[current]:
            parts[sid] = status
        meta["twilio_status"] = parts
        updates = {"meta": meta}
        if status == Message.Delivery.FAILED and parts[sid] == Message.Delivery.FAILED:
            code = params.get("ErrorCode", "").replace("\x00", "").strip()[:10]
            meta.setdefault("twilio_errors", {})[sid] = code
            updates["delivery_error"] = _error_text(code, params.get("MessageStatus", ""))
        # Parts still to send (a retry of the rest is waiting, or its worker died mid-send): the
        # deliver task owns the state until every part is accepted. Moving it to "sent" here would
        # make that retry find nothing to claim, and the rest would never go out. (settle_parts
        # applies what came meanwhile once it has sent them.)
        unsent = len(sids) < meta.get("twilio_parts", len(sids)) and message.delivery_status in (
            Message.Delivery.PENDING, Message.Delivery.SENDING)
        if not unsent:
            updates = {**_advance(message, meta, parts, sids), **updates}
            if "delivery_status" in updates and not message.external_id:
                # The callback overtook the deliver task's final write: keep the sid here.
                updates["external_id"] = sids[0]
        Message.objects.filter(id=message.id).update(**updates)
        _flag_when_failed(message, updates)
    return updates.get("delivery_status", message.delivery_status)


def _flag_when_failed(message, updates):
    """Twilio reported, after accepting it, that the reply never reached the customer (63016: their
    24-hour window closed): the team is told, as when the send itself fails for good."""
    if updates.get("delivery_status") == Message.Delivery.FAILED:
        transaction.on_commit(lambda: flag_for_the_team(message), robust=True)


def settle_parts(message_id):
    """After the deliver task sent the last part: the state the parts' callbacks reported while it
    still owned the message (apply_status leaves it alone then) — a part that failed meanwhile makes
    the reply failed, with Twilio's error, even though the task has just written "sent"."""
    with transaction.atomic():
        message = Message.objects.select_for_update().filter(id=message_id).first()
        if message is None or message.delivery_status in (Message.Delivery.PENDING, Message.Delivery.SENDING):
            return
        meta = message.meta or {}
        updates = _advance(message, meta, meta.get("twilio_status", {}), meta.get("twilio_sids", []))
        if updates:
            Message.objects.filter(id=message.id).update(**updates)
            _flag_when_failed(message, updates)


def _advance(message, meta, parts, sids) -> dict:
    """The message's new state from its parts' (``{}`` when that is no step forward). Failed: with the
    parts' Twilio errors, kept in ``meta["twilio_errors"]`` (the deliver task's last write clears the
    message's error)."""
    overall = _overall(parts, meta.get("twilio_parts", len(sids)))
    if _RANK[overall] <= _RANK.get(message.delivery_status, 0):
        return {}
    if overall != Message.Delivery.FAILED:
        return {"delivery_status": overall}
    errors = dict.fromkeys(_error_text(code, "failed") for code in (meta.get("twilio_errors") or {}).values())
    return {"delivery_status": overall, "delivery_error": "; ".join(errors) or "Twilio: message failed"}


def _error_text(code, twilio_status):
    explanation = KNOWN_ERRORS.get(int(code)) if code.isdigit() else None
    return f"{code} Twilio: {explanation or 'message ' + twilio_status}".strip()


def _overall(parts, expected):
    states = list(parts.values())
    if Message.Delivery.FAILED in states:
        return Message.Delivery.FAILED
    states += [Message.Delivery.SENT] * max(0, expected - len(states))
    return min(states, key=lambda state: _RANK[state])
