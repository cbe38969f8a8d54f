"""WhatsApp's send face: deliver a stored reply through Twilio's Messages API.

One Twilio message per part (replies over 1,600 characters are split on sentence
boundaries). The sids of parts already accepted are kept on the message, so a retry
after a 429/5xx sends only what is still missing. 429, 5xx and network errors are
transient (the deliver task retries with backoff); other 4xx errors are permanent and
stored with Twilio's code and a readable explanation.
"""
import logging

import requests
from django.conf import settings
from django.db import transaction
from django.urls import NoReverseMatch, reverse
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from bots.models import Message

from ..base import Adapter, DeliveryError
from ..models import ChannelConfig
from .split import split_text

log = logging.getLogger(__name__)

# Twilio error codes worth a sentence in the inbox.
KNOWN_ERRORS = {
    63016: "outside the 24-hour WhatsApp window: the customer has not written in the last 24 hours, "
    "so only an approved template message can be sent",
    63003: "the recipient's number is not a valid WhatsApp number",
    21211: "the 'To' number is not a valid phone number",
    21408: "sending to this region is not enabled on the Twilio account",
    21610: "the recipient has opted out (STOP)",
    20003: "Twilio rejected the credentials: check the Account SID and Auth Token",
}


def route(name, key):
    """Path of one of our WhatsApp routes (with or without a URL namespace)."""
    for candidate in (name, f"channels:{name}"):
        try:
            return reverse(candidate, kwargs={"key": key})
        except NoReverseMatch:
            continue
    raise NoReverseMatch(name)


def twilio_client(config: ChannelConfig) -> Client:
    """A twilio Client for ``config``; pointed at ``TWILIO_API_BASE_URL`` when set (tests, proxies)."""
    account_sid = config.settings.get("account_sid", "")
    auth_token = config.secrets.get("auth_token", "")
    if not account_sid or not auth_token:
        raise DeliveryError("the WhatsApp channel has no Account SID or Auth Token", transient=False, code="config")
    client = Client(account_sid, auth_token, http_client=TwilioHttpClient(timeout=settings.TWILIO_TIMEOUT_S))
    if settings.TWILIO_API_BASE_URL:
        client.api.base_url = settings.TWILIO_API_BASE_URL.rstrip("/")
    return client


class WhatsAppAdapter(Adapter):
    name = "whatsapp"
    label = "WhatsApp"

    def send(self, message):
        config = self.connected_config(message)
        client = twilio_client(config)
        sender = _sender(config)
        to = message.conversation.external_id
        status_callback = settings.PUBLIC_URL + route("whatsapp-status", config.key) + f"?m={message.id}"
        sids = list((message.meta or {}).get("twilio_sids", []))
        parts = split_text(message.text) or [" "]
        for index, body in enumerate(parts):
            if index < len(sids):
                continue  # accepted by Twilio on an earlier attempt
            try:
                created = client.messages.create(to=to, body=body, status_callback=status_callback, **sender)
            except TwilioRestException as error:
                raise _delivery_error(error) from error
            except (requests.RequestException, TwilioException) as error:
                raise DeliveryError(f"Twilio unreachable: {error}", transient=True, code="network") from error
            sids.append(created.sid)
            _remember_sids(message, sids)
        return sids[0]


def _sender(config):
    number = config.settings.get("phone_number", "").strip()
    if number:
        if not number.startswith("whatsapp:"):
            number = "whatsapp:" + number
        return {"from_": number}
    service = config.settings.get("messaging_service_sid", "").strip()
    if service:
        return {"messaging_service_sid": service}
    raise DeliveryError("the WhatsApp channel has neither a phone number nor a Messaging Service SID", transient=False, code="config")


def _remember_sids(message, sids):
    """Keep the accepted parts' sids (a retry skips them); status callbacks write beside us."""
    with transaction.atomic():
        meta = dict(Message.objects.select_for_update().get(id=message.id).meta or {})
        meta["twilio_sids"] = list(sids)
        meta["twilio_parts"] = len(split_text(message.text) or [" "])
        Message.objects.filter(id=message.id).update(meta=meta)
    message.meta = meta


def _delivery_error(error: TwilioRestException) -> DeliveryError:
    transient = error.status == 429 or error.status >= 500
    code = str(error.code or error.status)
    explanation = KNOWN_ERRORS.get(error.code) or (error.msg or "").strip() or f"HTTP {error.status}"
    return DeliveryError(f"Twilio: {explanation}", transient=transient, code=code)
