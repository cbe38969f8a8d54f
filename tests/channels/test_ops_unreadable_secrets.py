"""A channel whose stored credentials no listed key decrypts (SECRET_KEY changed, no
CHATNEXUS_ENCRYPTION_KEY, the old key not listed): its Channels page says so and takes them again
(it was a 500, on the very page where they are entered), a check of it is not tried, a reply through
it fails for good in words (it was an internal error and a traceback), and a save that does not
touch the credentials writes them back as they were, for the old key listed again to open."""
import pytest
from django.urls import reverse

from bots import services
from bots.models import Conversation, Message
from channels_app.models import ChannelConfig
from channels_app.tasks import deliver

from .conftest import ACCOUNT_SID, AUTH_TOKEN, whatsapp_params
from .mails import mail
from .test_email_imap import imap_channel, imap_server  # noqa: F401 - fixtures

pytestmark = pytest.mark.django_db

NEW_TOKEN = "0123456789abcdef0123456789abcdef"
SAID = "The saved credentials cannot be read with the current keys: enter them again."


def lose_the_key(settings):
    """SECRET_KEY changed and the old one not listed: what it encrypted no listed key decrypts."""
    settings.SECRET_KEY = "another-secret-key-0123456789abcdefghijklmnopqrstuvwxyz"
    settings.SECRET_KEY_FALLBACKS = []


def test_the_channels_page_says_the_credentials_cannot_be_read_and_takes_them_again(
        client, alice, acme_bot, whatsapp_channel, settings):
    lose_the_key(settings)
    client.force_login(alice)  # after the change: a session signed under the old key is gone with it
    url = reverse("channels:bot", args=[acme_bot.id])
    page = client.get(url)
    assert page.status_code == 200
    body = page.content.decode()
    assert SAID in body and 'Auth token: <strong class="secret-cannot-be-read">cannot be read</strong>' in body

    check = client.post(reverse("channels:check-whatsapp", args=[acme_bot.id]), follow=True)
    assert "Not tried: the saved credentials cannot be read with the current keys" in check.content.decode()

    data = {"channel": "whatsapp", "whatsapp-enabled": "on", "whatsapp-account_sid": ACCOUNT_SID,
            "whatsapp-phone_number": "whatsapp:+14155238886"}
    refused = client.post(url, data)  # an unreadable token is no stored token: it must be typed
    assert refused.status_code == 400 and "Required." in refused.content.decode()
    assert client.post(url, {**data, "whatsapp-auth_token": NEW_TOKEN}).status_code == 302
    assert ChannelConfig.objects.get(id=whatsapp_channel.id).secrets == {"auth_token": NEW_TOKEN}
    body = client.get(url).content.decode()
    assert SAID not in body and 'Auth token: <strong class="secret-set">set</strong>' in body


def test_a_reply_through_it_fails_for_good_in_words_and_goes_to_the_team(
        whatsapp_channel, signed_post, twilio_stub, settings):
    assert signed_post(f"/channels/whatsapp/{whatsapp_channel.key}/", whatsapp_params()).status_code == 200
    question = Message.objects.get()
    reply, _ = services.record_reply(question, "We are open Monday to Friday, 9am to 6pm.", {})
    lose_the_key(settings)

    deliver(reply.id)  # no exception: a DeliveryError, stored
    reply.refresh_from_db()
    assert reply.delivery_status == Message.Delivery.FAILED
    assert reply.delivery_error.startswith("config the saved credentials cannot be read with the current keys")
    assert Conversation.objects.get(id=reply.conversation_id).needs_human
    assert not twilio_stub.requests  # nothing was sent to Twilio


def test_a_save_that_does_not_touch_them_keeps_them_for_the_old_key(whatsapp_channel, settings):
    old_key = settings.SECRET_KEY
    lose_the_key(settings)
    config = ChannelConfig.objects.get(id=whatsapp_channel.id)
    assert config.secrets_unreadable
    config.enabled = False
    config.save()  # as a save of its other fields does (IMAP's progress, turning it off)

    settings.SECRET_KEY_FALLBACKS = [old_key]  # the old key listed again
    config = ChannelConfig.objects.get(id=whatsapp_channel.id)
    assert not config.enabled and config.secrets == {"auth_token": AUTH_TOKEN}


def test_a_mailbox_whose_password_cannot_be_read_is_not_polled_nor_connected_to(imap_channel, imap_server, settings,
                                                                                 caplog):
    """Logged in words, no traceback, and the IMAP server never reached (the password is read first)."""
    from channels_app.email.imap import poll_mailbox

    imap_server.add(mail(message_id="<k1@example.com>", body="Still there?"))
    lose_the_key(settings)
    assert poll_mailbox(imap_channel.id) == 0
    assert imap_server.commands == [] and not Message.objects.exists()
    [record] = [r for r in caplog.records if "imap" in r.getMessage()]
    assert "not polled: the saved credentials cannot be read" in record.getMessage() and record.exc_info is None
