"""Fixtures for the WhatsApp and email channels.

- ``twilio_stub``: the stub Twilio API (``twilio_stub.py``) on loopback, serving from
  the moment this conftest is imported, on a port the system chose, exported as
  ``TWILIO_API_BASE_URL``: the session's Celery workers (started later by
  ``celery_workers``, whose environment copies ``os.environ``) send there too, whichever
  test starts them.
- ``whatsapp_channel`` / ``email_channel``: Acme's bot connected to each channel.
- ``signed_post``: posts a Twilio webhook signed like Twilio signs it.
- ``utf8_smtp`` / ``ascii_smtp``: aiosmtpd servers that do and do not offer SMTPUTF8 (RFC 6531),
  keeping each mail's bytes as they came and whether it was sent as SMTPUTF8.
"""
import os
from urllib.parse import urlencode

import pytest

from tests.conftest import SMTPSink, free_port

from .twilio_stub import TwilioStub

# Bound now, not when the first Twilio test runs: a port only picked now could be taken by then
# (any bind to port 0 meanwhile: the ASGI server, an SMTP sink, Chromium).
TWILIO = TwilioStub().start()
os.environ["TWILIO_API_BASE_URL"] = TWILIO.base_url

ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "twilio-auth-token-for-tests"
BOT_NUMBER = "whatsapp:+14155238886"
CUSTOMER = "whatsapp:+15551234567"
INBOUND_SECRET = "inbound-secret-for-tests"
BOT_ADDRESS = "help@acme-bikes.example"


@pytest.fixture
def twilio_stub(settings):
    """The stub, emptied for this test; this process's client points at it too."""
    settings.TWILIO_API_BASE_URL = TWILIO.base_url
    TWILIO.reset()
    return TWILIO


class RawSink(SMTPSink):
    """The SMTP sink, also keeping the bytes as they came and the SMTPUTF8 flag of MAIL FROM."""

    async def handle_DATA(self, server, session, envelope):
        await super().handle_DATA(server, session, envelope)
        self.messages[-1].update(raw=envelope.content, smtputf8=envelope.smtp_utf8)
        return "250 OK"


def raw_smtp(smtputf8: bool):
    from aiosmtpd.controller import Controller

    sink = RawSink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port(), enable_SMTPUTF8=smtputf8)
    controller.start()
    sink.host, sink.port = controller.hostname, controller.port
    yield sink
    controller.stop()


@pytest.fixture
def utf8_smtp():
    yield from raw_smtp(smtputf8=True)


@pytest.fixture
def ascii_smtp():
    yield from raw_smtp(smtputf8=False)


@pytest.fixture
def whatsapp_channel(acme, acme_bot):
    from channels_app.models import ChannelConfig

    return ChannelConfig.objects.create(
        organization=acme,
        bot=acme_bot,
        kind="whatsapp",
        settings={"account_sid": ACCOUNT_SID, "phone_number": BOT_NUMBER, "messaging_service_sid": "MG" + "1" * 32},
        secrets={"auth_token": AUTH_TOKEN},
    )


@pytest.fixture
def email_channel(acme, acme_bot, mailbox):
    from channels_app.models import ChannelConfig

    return ChannelConfig.objects.create(
        organization=acme,
        bot=acme_bot,
        kind="email",
        settings={
            "address": BOT_ADDRESS,
            "from_name": "Acme Bikes Support",
            "smtp_host": mailbox.host,
            "smtp_port": mailbox.port,
            "smtp_use_tls": False,
            "max_replies_per_sender_per_day": 5,
        },
        secrets={"inbound_secret": INBOUND_SECRET},
    )


def whatsapp_params(**overrides):
    params = {
        "SmsMessageSid": "SM" + "a" * 32,
        "NumMedia": "0",
        "ProfileName": "Carla",
        "SmsSid": "SM" + "a" * 32,
        "WaId": "15551234567",
        "SmsStatus": "received",
        "Body": "What are your opening hours?",
        "To": BOT_NUMBER,
        "NumSegments": "1",
        "MessageSid": "SM" + "a" * 32,
        "AccountSid": ACCOUNT_SID,
        "From": CUSTOMER,
        "ApiVersion": "2010-04-01",
    }
    params.update(overrides)
    return {key: value for key, value in params.items() if value is not None}


@pytest.fixture
def signed_post(client):
    """``signed_post(path, params, token=..., signature=...)``: a form POST as Twilio sends it."""
    from django.conf import settings
    from twilio.request_validator import RequestValidator

    def post(path, params, token=AUTH_TOKEN, signature=None):
        if signature is None:
            signature = RequestValidator(token).compute_signature(settings.PUBLIC_URL + path, params)
        headers = {"HTTP_X_TWILIO_SIGNATURE": signature} if signature else {}
        return client.post(path, urlencode(params), content_type="application/x-www-form-urlencoded", **headers)

    return post


@pytest.fixture
def post_mail(client):
    """``post_mail(key, raw_bytes, secret=...)``: the raw-MIME inbound webhook."""

    def post(key, raw, secret=INBOUND_SECRET, content_type="message/rfc822"):
        headers = {"HTTP_X_CHATNEXUS_SECRET": secret} if secret else {}
        return client.post(f"/channels/email/{key}/inbound/", raw, content_type=content_type, **headers)

    return post
