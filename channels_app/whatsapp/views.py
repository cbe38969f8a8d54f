"""WhatsApp's inbound face: Twilio's incoming-message webhook and status callback; and the
inbox's link to a customer's attachment (``media_view``: the stored copy, fetched from Twilio first
if it is not stored yet).

Both answer at once: the message is stored and the reply queued (never generated
here), then Twilio gets an empty TwiML ``<Response/>``. Bad or missing signatures are
403 and store nothing; malformed requests are 4xx, never 500.
"""
import logging

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from bots import services
from bots.files import attachment_response
from bots.models import Conversation, Message
from bots.tenancy import get_scoped_or_404
from bots.views.decorators import member_required

from . import inbound, media, window
from .inbound import Rejected

log = logging.getLogger(__name__)

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
MAX_WEBHOOK_BYTES = 64 * 1024  # Twilio's webhooks are a few KB


def _refuse(error: Rejected):
    return HttpResponse(error.reason + "\n", status=error.status, content_type="text/plain; charset=utf-8")


def _checked(request, key):
    """The channel config for a signed request of a sane size, or Rejected."""
    try:
        length = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        raise Rejected(400, "bad Content-Length") from None
    if length > MAX_WEBHOOK_BYTES:
        raise Rejected(413, "request too large")
    config = inbound.channel_for(key)
    inbound.check_signature(config, request)
    return config


@csrf_exempt  # authenticated by Twilio's signature instead
@require_POST
def incoming(request, key):
    try:
        config = _checked(request, key)
        inbound.check_recipient(config, request.POST)
        message = inbound.parse_message(request.POST)
        inbound.store_message(config, message)
    except Rejected as error:
        return _refuse(error)
    return HttpResponse(EMPTY_TWIML, content_type="text/xml; charset=utf-8")


@csrf_exempt
@require_POST
def status(request, key):
    try:
        config = _checked(request, key)
        inbound.apply_status(config, request.GET.get("m"), request.POST)
    except Rejected as error:
        return _refuse(error)
    return HttpResponse(status=204)


@member_required
@require_GET
def media_view(request, message_id, index):
    """A WhatsApp attachment of a message in the member's organisation: the stored copy, else
    fetched from Twilio now and stored (media.py)."""
    message = get_scoped_or_404(request, Message, id=message_id)
    try:
        attachment = media.stored(message, index)
    except media.MediaError as error:
        return HttpResponse(error.reason + "\n", status=error.status, content_type="text/plain; charset=utf-8")
    return attachment_response(attachment)


@member_required
@require_POST
def reengage(request, conversation_id):
    """An agent sends the channel's re-engagement template to a customer whose window closed (window.py),
    never to one who opted out (STOP). Once per rendered button (its one-time token): a second click sends
    the customer nothing more."""
    conversation = get_scoped_or_404(request, Conversation, id=conversation_id, channel="whatsapp")
    refused = window.refusal(conversation)
    if refused:
        messages.error(request, f"Not sent: {refused}.")
        return redirect("inbox:thread", conversation.id)
    sent_before, message = services.store_once(conversation, request.POST.get("form_token", ""),
                                               lambda: window.reengage(conversation, request.user))
    if message is not None:
        messages.success(request, "Re-engagement template queued; the customer's answer re-opens the window.")
    elif not sent_before:  # (sent before: the first click said what happened)
        messages.error(request, "This bot's WhatsApp channel has no re-engagement template.")
    return redirect("inbox:thread", conversation.id)
