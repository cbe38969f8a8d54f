"""The API channel's reply webhook: every message we send on an ``api`` conversation (the bot's
reply, an agent's answer) is POSTed as JSON to the URL the bot's API channel names, signed so
the receiver can tell it came from us.

    POST <webhook_url>
    Content-Type: application/json
    X-ChatNexus-Event: message            ("ping" for the Channels page's test event)
    X-ChatNexus-Delivery: <message id>    (delivery is at least once: dedupe on it)
    X-ChatNexus-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>

A 2xx answer delivers it. 408, 429, 5xx, timeouts and refused connections are retried with
backoff (channels_app/tasks.py); other answers (4xx, and 3xx: redirects are not followed) fail
the message for good with the status on it, shown in the inbox. The whole call, the answer's
body included (read up to MAX_ANSWER_BYTES, for its first words), ends after
CHATNEXUS_WEBHOOK_TIMEOUT_S: a backend that answers a byte now and then is a timeout, retried,
and never holds the worker that delivers every organisation's replies.

The URL may not lead to a loopback, private, link-local or otherwise reserved address (the
worker's own network) unless ``CHATNEXUS_WEBHOOK_ALLOW_PRIVATE`` is on — a self-hosted
deployment whose backend sits on its own LAN. Names are resolved and checked just before each
send; redirects are never followed.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import time

import requests
from django.conf import settings

from channels_app.base import DeliveryError, one_line

from .. import egress

TIMEOUT_S = (5, 15)  # connect, read; the whole call: CHATNEXUS_WEBHOOK_TIMEOUT_S
MAX_ANSWER_BYTES = 64 * 1024  # of the answer's body, read for its first words: the status is what counts
TRANSIENT_STATUSES = {408, 425, 429}  # and every 5xx


def signature(secret: str, body: bytes, timestamp: int) -> str:
    """The ``X-ChatNexus-Signature`` header value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: str, body: bytes, header: str, tolerance_s: int = 300, now: float | None = None) -> bool:
    """What a receiver does (the README shows it): the signature matches and is recent."""
    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(signature(secret, body, timestamp), f"t={timestamp},v1={parts.get('v1', '')}")


def refused_address(url: str, deadline: egress.Deadline | None = None) -> str:
    """Why the webhook ``url`` may not be called ('' when it may): bots/egress.py."""
    return egress.refused_address(url, settings.CHATNEXUS_WEBHOOK_ALLOW_PRIVATE, "CHATNEXUS_WEBHOOK_ALLOW_PRIVATE",
                                  "the webhook URL", deadline)


def post(config, event: str, payload: dict, delivery: str) -> requests.Response:
    """Sign and POST ``payload`` to the config's webhook; DeliveryError unless it answered 2xx."""
    url, secret = config.settings.get("webhook_url", ""), config.secrets.get("webhook_secret", "")
    if not url or not secret:
        raise DeliveryError("the API channel has no webhook URL and secret", transient=False, code="config")
    deadline = egress.Deadline(settings.CHATNEXUS_WEBHOOK_TIMEOUT_S, _too_slow)  # the URL's look-up counts too
    try:
        refused = refused_address(url, deadline)
    except OSError as error:  # DNS trouble may pass
        raise DeliveryError(f"webhook host not found: {one_line(error)}", transient=True, code="webhook") from None
    if refused:
        raise DeliveryError(refused, transient=False, code="webhook")
    body = json.dumps(payload, separators=(",", ":"), default=str).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "ChatNexus-Webhook/1",
        "X-ChatNexus-Event": event,
        "X-ChatNexus-Delivery": delivery,
        "X-ChatNexus-Signature": signature(secret, body, int(time.time())),
    }
    try:
        with (deadline, deadline.watching(egress.session(settings.CHATNEXUS_WEBHOOK_ALLOW_PRIVATE)) as http):
            with deadline.kept():
                response = http.post(url, data=body, headers=headers, timeout=deadline.timeout(TIMEOUT_S),
                                     allow_redirects=False, stream=True)
            with response:
                answer = deadline.read(response, MAX_ANSWER_BYTES)
    except egress.Refused as error:  # the name answered differently when connecting (DNS rebinding)
        raise DeliveryError(egress.refusal(error, url, "CHATNEXUS_WEBHOOK_ALLOW_PRIVATE"), transient=False,
                            code="webhook") from None
    except egress.CutShort as error:
        raise DeliveryError(f"webhook {error}", transient=True, code="webhook") from None
    except requests.RequestException as error:
        raise DeliveryError(f"webhook not reached: {one_line(error)}", transient=True, code="webhook") from None
    if 200 <= response.status_code < 300:
        return response
    transient = response.status_code >= 500 or response.status_code in TRANSIENT_STATUSES
    said = one_line(answer, 200)
    words = f"webhook answered {response.status_code}" + (f": {said}" if said else "")
    if 300 <= response.status_code < 400:
        words += " (redirects are not followed: set the URL it redirects to)"
    raise DeliveryError(words, transient=transient, code=f"http-{response.status_code}")


def _too_slow() -> DeliveryError:
    """A backend that has not answered in full within CHATNEXUS_WEBHOOK_TIMEOUT_S: tried again later."""
    return DeliveryError(f"webhook took longer than {settings.CHATNEXUS_WEBHOOK_TIMEOUT_S} s to answer",
                         transient=True, code="webhook")


def message_payload(message) -> dict:
    """The body of a ``message`` event: the message as ``GET /api/messages/<id>/`` shows it, and
    the conversation with your ``thread`` id (``conversations/inbound``'s ``thread``)."""
    from .serializers import MessageSerializer

    conversation = message.conversation
    return {
        "event": "message",
        "bot": message.bot_id,
        "conversation": {"id": conversation.id, "thread": conversation.external_id},
        "message": MessageSerializer(message).data,
    }


def check(config) -> list[tuple[bool, str]]:
    """"Send a test event" on the Channels page: a signed ``ping`` to the saved webhook."""
    url = config.settings.get("webhook_url", "")
    payload = {"event": "ping", "bot": config.bot_id, "conversation": None, "message": None}
    try:
        response = post(config, "ping", payload, delivery=f"ping-{int(time.time())}")
    except DeliveryError as error:
        return [(False, f"The test event to {url} failed: {error}.")]
    return [(True, f"{url} answered {response.status_code} to a signed test event.")]
