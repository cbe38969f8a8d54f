"""Email's inbound webhook: the mail, as inbound-parse services forward it.

``POST /channels/email/<key>/inbound/`` with the raw message as the body
(``Content-Type: message/rfc822`` or any non-form, non-JSON type), a multipart/urlencoded
form whose ``email`` / ``mime`` / ``body-mime`` / ``raw`` field holds it (SendGrid's "raw"
mode, Mailgun's ``body-mime``), or Postmark's inbound JSON (``application/json``, rebuilt
as MIME by ``postmark.to_mime``). Authenticated with the channel's ``inbound_secret``:
``X-ChatNexus-Secret: <secret>``, ``Authorization: Bearer <secret>`` or HTTP basic auth
with the secret as password (Postmark: ``https://inbound:<secret>@host/...``). Too large →
413; bad secret → 403; no message or JSON that is not Postmark's → 400; anything else is
stored (unparseable mail included) and answered 202 — 200 to Postmark, which retries any
other status.
"""
import base64
import hmac
import logging

from django.conf import settings
from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST

from bots import audit

from ..models import ChannelConfig
from . import inbound as email_inbound
from . import postmark, sender

log = logging.getLogger(__name__)

FORM_FIELDS = ("email", "mime", "body-mime", "raw")
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


def _error(status, reason):
    return JsonResponse({"error": reason}, status=status)


def _presented_secret(request):
    if request.headers.get("X-ChatNexus-Secret"):
        return request.headers["X-ChatNexus-Secret"]
    auth = request.headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")[2]
        except (ValueError, UnicodeDecodeError):
            return ""
    return ""


def _raw_message(request, limit):
    """The raw MIME bytes from the body or a form field; None if absent."""
    content_type = request.content_type or ""
    if content_type in FORM_TYPES:
        for name in FORM_FIELDS:
            upload = request.FILES.get(name)
            if upload is not None:
                return upload.read(limit + 1)
            value = request.POST.get(name)
            if value:
                return value.encode("utf-8", errors="surrogateescape")
        return None
    body = request.read(limit + 1)
    return body or None


@csrf_exempt  # authenticated by the per-channel secret instead
@require_POST
def inbound(request, key):
    config = ChannelConfig.objects.select_related("bot").filter(key=key, kind="email", enabled=True).first()
    if config is None:
        return _error(404, "unknown email channel")
    expected = config.secrets.get("inbound_secret", "")
    presented = _presented_secret(request)
    if not expected or not presented or not hmac.compare_digest(presented.encode(), expected.encode()):
        return _error(403, "missing or wrong inbound secret")
    limit = settings.CHATNEXUS_EMAIL_MAX_BYTES
    try:
        length = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        return _error(400, "bad Content-Length")
    is_json = (request.content_type or "") == "application/json"
    # form framing adds a little; Postmark's JSON carries attachments in base64 (4/3) and escapes text
    body_limit = 2 * limit if is_json else limit + 64 * 1024
    if length > body_limit:
        return _error(413, f"message larger than {limit} bytes")
    if is_json:
        body = request.read(body_limit + 1)
        try:
            raw = postmark.to_mime(body)
        except postmark.PostmarkError as exc:
            return _error(400, str(exc))
        except postmark.Unbuildable as exc:  # kept as it came, the JSON, rather than lost
            return _stored(email_inbound.store_unparseable(config, body, "webhook", str(exc)), is_json)
    else:
        raw = _raw_message(request, limit)
    if raw is None:
        return _error(400, f"no message: send the raw MIME as the body or in a form field ({', '.join(FORM_FIELDS)})")
    if len(raw) > limit:
        return _error(413, f"message larger than {limit} bytes")
    return _stored(email_inbound.ingest(config, raw, source="webhook"), is_json)


def _stored(received, is_json):
    """The answer for a mail stored now or before (a redelivery)."""
    message = received.message
    return JsonResponse(
        {
            "id": message.id,
            "duplicate": not received.created,
            "answered": message.reply_state != message.ReplyState.SKIPPED,
            "skip_reason": (message.meta or {}).get("skip_reason", ""),
        },
        status=200 if is_json else 202,  # Postmark retries every status but 200 (and 403)
    )


@require_http_methods(["GET", "POST"])
def confirm(request, token):
    """The link of the confirmation email (``sender.send_confirmation``), followed by whoever reads the
    bot's address, signed in or not: the mail reached them. The page asks, a POST confirms: a mail
    scanner that opens every link confirms nothing."""
    try:
        if request.method == "POST":
            config, address, newly = sender.confirm(token)
            if newly:
                audit.record(config.organization, None, "channel.confirmed",
                             f"{address} confirmed by the link mailed to it: {config.bot.name}'s replies go from it")
        else:
            config, address = sender.pending(token)
    except sender.Unconfirmable as why:
        return render(request, "channels/email_confirm.html", {"problem": str(why)}, status=400)
    return render(request, "channels/email_confirm.html",
                  {"config": config, "address": address, "done": request.method == "POST"})
