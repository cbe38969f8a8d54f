"""WhatsApp's send face: deliver a stored reply through Twilio's Messages API.

One Twilio message per part (replies over 1,600 characters are split on sentence
boundaries). The sids of parts already accepted are kept on the message, so a retry
after a 429/5xx sends only what is still missing. 429, 5xx and network errors are
transient (the deliver task retries with backoff); other 4xx errors are permanent and
stored with Twilio's code and a readable explanation.
"""
import json
import logging
from datetime import timedelta

import requests
from django.conf import settings
from django.db import transaction
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.timesince import timesince
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from bots.files import readable
from bots.models import Message

from ..base import Adapter, DeliveryError
from ..models import ChannelConfig
from . import window
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

    def settle(self, message) -> None:
        """Apply the status callbacks that came before their part's sid was recorded (kept by
        inbound.apply_status), now that it is; then those that came while later parts were still
        to send (inbound.settle_parts)."""
        from .inbound import Rejected, apply_status, settle_parts

        meta = Message.objects.filter(id=message.id).values_list("meta", flat=True).first() or {}
        early = meta.get("twilio_early")
        try:
            config = self.connected_config(message) if early else None
        except DeliveryError:  # disconnected meanwhile: nothing to check the callbacks against
            early = None
        for params in (early or {}).values():
            try:
                apply_status(config, message.id, params)
            except Rejected:  # a sid this send never recorded: not ours
                pass
        if meta.get("twilio_status"):
            settle_parts(message.id)

    def keep_files(self, message) -> None:
        """Media are kept by a default-queue task queued with the message; a reply that would
        read one (text, HTML, PDF) must not race it, so those are kept here if not yet (photos
        and voice notes, which the model cannot read, are left to the task: no wait for them).
        A failure is only logged: the reply is written without that file."""
        from .media import MediaError, stored

        for index, item in enumerate((message.meta or {}).get("media") or []):
            if not readable(str(item.get("content_type") or "")):
                continue
            try:
                stored(message, index)
            except MediaError as error:
                log.warning("message %s: media %s not kept before the reply: %s", message.id, index, error.reason)

    def inbox_notice(self, conversation):
        stopped = window.opted_out(conversation)
        if stopped is not None:
            return {"text": f"The customer opted out of WhatsApp messages {timesince(stopped['at'])} ago (they wrote "
                            f"\"{stopped['text']}\"): nothing is sent to them, neither a reply nor the re-engagement "
                            "template, until they write again.", "action": None, "action_label": ""}
        closed = window.notice(conversation)
        if closed is None:
            return None
        text = (f"The customer's 24-hour WhatsApp window closed {timesince(closed['closes_at'])} ago: "
                "a free-text reply will not reach them (Twilio error 63016).")
        if not closed["template"]:
            return {"text": text + " Add an approved re-engagement template in the bot's WhatsApp settings "
                                   "to write to them first.", "action": None, "action_label": ""}
        return {"text": text + " Send the re-engagement template; when they answer, the window opens again.",
                "action": reverse("channels:whatsapp-reengage", args=[conversation.id]),
                "action_label": "Send the re-engagement template"}

    def refusal(self, conversation):
        return window.refusal(conversation)

    def send(self, message):
        refused = self.refusal(message.conversation)
        if refused:  # the bot's reply or an agent's: kept, shown failed with why
            raise DeliveryError(refused, transient=False, code="opt-out")
        config = self.connected_config(message)
        client = twilio_client(config)
        sender = _sender(config, message)
        to = message.conversation.external_id
        status_callback = settings.PUBLIC_URL + route("whatsapp-status", config.key) + f"?m={message.id}"
        meta = message.meta or {}
        sids = list(meta.get("twilio_sids", []))
        if meta.get("content_sid"):  # an approved template (window.py): one message, no body
            parts = [{"content_sid": meta["content_sid"],
                      "content_variables": json.dumps(meta.get("content_variables") or {})}]
        else:
            parts = [{"body": body} for body in split_text(message.text) or [" "]]
        for index, content in enumerate(parts):
            if index < len(sids):
                continue  # accepted by Twilio on an earlier attempt
            started = timezone.now()
            try:
                sid = client.messages.create(to=to, status_callback=status_callback, **content, **sender).sid
            except TwilioRestException as error:
                raise _delivery_error(error) from error
            except requests.ReadTimeout as error:
                # Twilio had the request and may have accepted it: sent again, the customer reads it twice
                sid = _accepted_meanwhile(client, message, to, sender, content, started)
                if not sid:
                    raise DeliveryError(f"Twilio did not answer in time: {error}", transient=True,
                                        code="network") from error
            except (requests.RequestException, TwilioException) as error:
                raise DeliveryError(f"Twilio unreachable: {error}", transient=True, code="network") from error
            sids.append(sid)
            _remember_sids(message, sids)
        return sids[0]


def _sender(config, message):
    """The channel's number, or, on a channel with a Messaging Service, the service's number the customer
    wrote to: a service holds several, and a reply from another one comes from a stranger whose 24-hour
    window never opened (63016)."""
    number = config.settings.get("phone_number", "").strip()
    if config.settings.get("messaging_service_sid", "").strip():
        number = _written_to(message) or number
    if number:
        if not number.startswith("whatsapp:"):
            number = "whatsapp:" + number
        return {"from_": number}
    service = config.settings.get("messaging_service_sid", "").strip()
    if service:
        return {"messaging_service_sid": service}
    raise DeliveryError("the WhatsApp channel has neither a phone number nor a Messaging Service SID", transient=False, code="config")


def _written_to(message) -> str:
    """The number the customer wrote to (inbound.store_message keeps it): of the message answered, else of
    their latest message."""
    if message.reply_to_id and (message.reply_to.meta or {}).get("to"):
        return message.reply_to.meta["to"]
    latest = (Message.objects.filter(conversation_id=message.conversation_id, direction=Message.Direction.INBOUND,
                                     meta__has_key="to").order_by("-created").values_list("meta__to", flat=True).first())
    return latest if isinstance(latest, str) else ""


CLOCK_SLACK = timedelta(minutes=1)  # our clock against Twilio's, and the time the request took to reach it


def _accepted_meanwhile(client, message, to, sender, content, started) -> str:
    """The sid of the part ``content`` if Twilio accepted it though its answer never came (a read timeout):
    a message to ``to`` from our sender since ``started`` with the part's body, that no message of the
    conversation has recorded as its own; "" when there is none, or Twilio cannot be asked. A template
    (no body to match) is not found; nor is a message Twilio still holds queued (no DateSent yet)."""
    if "body" not in content:
        return ""
    since = started - CLOCK_SLACK
    try:
        listed = client.messages.list(to=to, date_sent_after=since, limit=20,
                                      **({"from_": sender["from_"]} if "from_" in sender else {}))
    except (TwilioRestException, requests.RequestException, TwilioException) as error:
        log.warning("message %s: Twilio did not answer a send, nor the look-up of it: %s", message.id, error)
        return ""
    taken = _recorded_sids(message.conversation_id)  # the same words sent before, in another reply
    service = sender.get("messaging_service_sid")
    for found in listed:
        if (found.body == content["body"] and found.sid not in taken and (found.date_created or since) >= since
                and (not service or found.messaging_service_sid == service)):
            log.info("message %s: Twilio's answer timed out, but it had accepted the part as %s", message.id, found.sid)
            return found.sid
    return ""


def _recorded_sids(conversation_id) -> set:
    """Every Twilio sid the conversation's messages have recorded as theirs."""
    rows = (Message.objects.filter(conversation_id=conversation_id, meta__has_key="twilio_sids")
            .values_list("meta", flat=True))
    return {sid for meta in rows for sid in meta.get("twilio_sids") or []}


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
