"""Webhooks signed with a Twilio SharedKey: when a Webhook Rule matches our URLs, Twilio signs with
the key's secret (HMAC-SHA256) instead of the Auth Token and says so in
X-Twilio-Webhooks-Signature-Settings. The channel keeps that secret (encrypted) as its webhook
signing key; without one such requests are refused with the reason logged, and the Auth Token
never stands in for it."""
import logging
from urllib.parse import urlencode

import pytest
from django.conf import settings
from django.db import connection
from django.urls import reverse
from twilio.request_validator import RequestValidator

from bots.models import Message

from .conftest import AUTH_TOKEN, whatsapp_params

pytestmark = pytest.mark.django_db

SHARED_SECRET = "shared-key-secret-for-tests"
SIGNATURE_SETTINGS = "key=webhooks_sharedkey_01JABCDEFGHJKMNPQRSTVWXYZ0,algorithm=HMAC_SHA256"


@pytest.fixture
def post_with_shared_key(client):
    """A webhook as Twilio sends it under a Webhook Rule: HMAC-SHA256 with ``secret``, and the settings header."""

    def post(path, params, secret=SHARED_SECRET):
        signature = RequestValidator(secret).compute_signature(settings.PUBLIC_URL + path, params, "HMAC_SHA256")
        return client.post(path, urlencode(params), content_type="application/x-www-form-urlencoded",
                           HTTP_X_TWILIO_SIGNATURE=signature, HTTP_X_TWILIO_WEBHOOKS_SIGNATURE_SETTINGS=SIGNATURE_SETTINGS)

    return post


@pytest.fixture
def keyed_channel(whatsapp_channel):
    whatsapp_channel.secrets = {**whatsapp_channel.secrets, "webhook_signing_key": SHARED_SECRET}
    whatsapp_channel.save()
    return whatsapp_channel


def test_it_takes_a_message_signed_with_the_channels_shared_key(keyed_channel, post_with_shared_key):
    response = post_with_shared_key(f"/channels/whatsapp/{keyed_channel.key}/", whatsapp_params())
    assert response.status_code == 200
    assert Message.objects.get().text == "What are your opening hours?"


def test_without_a_signing_key_it_refuses_and_says_why(whatsapp_channel, post_with_shared_key, caplog):
    with caplog.at_level(logging.WARNING, logger="channels_app.whatsapp.inbound"):
        response = post_with_shared_key(f"/channels/whatsapp/{whatsapp_channel.key}/", whatsapp_params())
    assert response.status_code == 403
    assert "no webhook signing key" in response.content.decode()
    assert f"WhatsApp channel {whatsapp_channel.key}: Twilio signed with a SharedKey" in caplog.text
    assert not Message.objects.exists()


def test_the_auth_token_does_not_stand_in_for_the_shared_key(keyed_channel, post_with_shared_key):
    response = post_with_shared_key(f"/channels/whatsapp/{keyed_channel.key}/", whatsapp_params(), secret=AUTH_TOKEN)
    assert response.status_code == 403
    assert not Message.objects.exists()


def test_the_channels_page_keeps_the_signing_key_encrypted(client, alice, whatsapp_channel):
    client.force_login(alice)
    form = {"channel": "whatsapp", "whatsapp-enabled": "on", "whatsapp-account_sid": whatsapp_channel.settings["account_sid"],
            "whatsapp-phone_number": whatsapp_channel.settings["phone_number"], "whatsapp-webhook_signing_key": SHARED_SECRET}
    response = client.post(reverse("channels:bot", args=[whatsapp_channel.bot_id]), form)
    assert response.status_code == 302
    whatsapp_channel.refresh_from_db()
    assert whatsapp_channel.secrets == {"auth_token": AUTH_TOKEN, "webhook_signing_key": SHARED_SECRET}
    with connection.cursor() as cursor:
        cursor.execute("SELECT secrets::text FROM channels_app_channelconfig WHERE id = %s", [whatsapp_channel.id])
        assert SHARED_SECRET not in cursor.fetchone()[0]
    page = client.get(reverse("channels:bot", args=[whatsapp_channel.bot_id])).content.decode()
    assert "Webhook signing key: <strong class=\"secret-set\">set</strong>" in page
