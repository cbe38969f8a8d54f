"""Through the platform's mail server an email channel sends as the bot's address only once someone at
that address followed the link mailed to it; until then From the platform's own address under the
bot's name, with Reply-To the bot's address and the same threading headers. A channel with an SMTP
server of its own needs no confirmation. The platform's server is the loopback aiosmtpd: the
confirmation mail is read there, and its link followed with the test client."""
import re
import uuid

import pytest
from django.urls import reverse

from bots import services
from bots.models import AuditEvent, Message
from channels_app.models import ChannelConfig
from channels_app.tasks import deliver

from .conftest import BOT_ADDRESS, INBOUND_SECRET
from .mails import mail
from .test_email_check import check

pytestmark = pytest.mark.django_db

PLATFORM = "noreply@chatnexus-platform.example"


@pytest.fixture
def platform_mail(settings, mailbox):
    """The platform's own mail server: the aiosmtpd sink; and counters (the confirmation mails sent to
    an address in the last hour) of this test only."""
    settings.CACHES = {**settings.CACHES, "default": {**settings.CACHES["default"], "KEY_PREFIX": uuid.uuid4().hex}}
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = mailbox.host, mailbox.port
    settings.DEFAULT_FROM_EMAIL = f"ChatNexus <{PLATFORM}>"
    return mailbox


def save(client, bot, address=BOT_ADDRESS, **changes):
    """The email form as a manager posts it, with no SMTP server of the channel's own."""
    data = {"channel": "email", "email-enabled": "on", "email-address": address, "email-from_name": "Acme Bikes Support",
            "email-inbound_secret": INBOUND_SECRET, "email-smtp_port": "587", "email-imap_port": "993",
            "email-max_replies_per_sender_per_day": "5"}  # fmt: skip
    data.update({f"email-{name}": value for name, value in changes.items()})
    response = client.post(reverse("channels:bot", args=[bot.id]), data)
    assert response.status_code == 302, response.context["forms"]["email"].errors
    return client.get(reverse("channels:bot", args=[bot.id]))


def confirmation_link(message):
    """The path of the link in a confirmation mail."""
    [link] = re.findall(r"https?://[^/\s]+(/channels/email/confirm/\S+)", message.get_content())
    return link


def answer(bot, message_id):
    """A customer's mail to the bot, stored, and the bot's reply delivered now by the deliver task's code."""
    services.receive(bot=bot, channel="email", thread_id=message_id, text="Hi", external_id=message_id,
                     meta={"from_address": "carla@example.com", "message_id": message_id, "subject": "Opening hours",
                           "references": ["older@example.com"]})
    reply, _ = services.record_reply(Message.objects.get(external_id=message_id), "We open at 9am.", {})
    deliver(reply.id)
    reply.refresh_from_db()
    assert reply.delivery_status == Message.Delivery.SENT, reply.delivery_error
    return reply


def test_it_sends_from_the_platform_with_reply_to_the_bot_until_the_address_is_confirmed(client, alice, acme_bot,
                                                                                         platform_mail):
    client.force_login(alice)
    page = save(client, acme_bot)
    assert page.context["notes"]["email"][1] == [True, (
        f"Sent a confirmation email to {BOT_ADDRESS}. Once someone there follows its link, replies go from "
        f"{BOT_ADDRESS}; until then from {PLATFORM}, with Reply-To {BOT_ADDRESS}.")]
    assert 'id="email-unconfirmed"' in page.content.decode()
    [asked] = platform_mail.messages
    assert asked["to"] == [BOT_ADDRESS] and asked["from"] == PLATFORM
    assert asked["message"]["Auto-Submitted"] == "auto-generated"
    # the names are the organisation's choosing: quoted in the body, not in the subject a stranger reads
    assert asked["message"]["Subject"] == "Confirm this address for replies sent through ChatNexus"
    assert '"Acme"' in asked["message"].get_content() and f'"{acme_bot.name}"' in asked["message"].get_content()
    link = confirmation_link(asked["message"])
    platform_mail.messages.clear()

    answer(acme_bot, "q1@example.com")
    [sent] = platform_mail.messages
    reply = sent["message"]
    assert sent["from"] == PLATFORM and reply["From"] == f"Acme Bikes Support <{PLATFORM}>"
    assert reply["Reply-To"] == f"Acme Bikes Support <{BOT_ADDRESS}>"  # the customer's answer comes back
    assert reply["In-Reply-To"] == "<q1@example.com>"  # and threads as ever
    assert reply["References"] == "<older@example.com> <q1@example.com>"
    assert reply["Message-ID"].endswith("@acme-bikes.example>")
    [(ok, sentence)] = check(client, acme_bot)[0]  # "Send a test email" too
    assert ok and sentence.startswith(f"SMTP: sent a test email from {PLATFORM} with Reply-To {BOT_ADDRESS} (from")
    assert [m["from"] for m in platform_mail.messages] == [PLATFORM, PLATFORM]
    assert platform_mail.messages[1]["message"]["Reply-To"] == f"Acme Bikes Support <{BOT_ADDRESS}>"
    platform_mail.messages.clear()

    client.logout()  # whoever reads the bot's mailbox, signed in or not
    asked_page = client.get(link)  # a mail scanner opening the link confirms nothing
    assert asked_page.status_code == 200 and 'id="email-confirm-button"' in asked_page.content.decode()
    assert "confirmed_address" not in ChannelConfig.objects.get(bot=acme_bot).settings
    done = client.post(link)
    assert done.status_code == 200 and f"The replies of {acme_bot.name} now go from {BOT_ADDRESS}" in done.content.decode()
    assert client.post(link).status_code == 200  # a second click changes nothing
    assert AuditEvent.objects.filter(organization=acme_bot.organization, action="channel.confirmed").count() == 1

    answer(acme_bot, "q2@example.com")
    [sent] = platform_mail.messages
    assert sent["from"] == BOT_ADDRESS and sent["message"]["From"] == f"Acme Bikes Support <{BOT_ADDRESS}>"
    assert sent["message"]["Reply-To"] is None
    client.force_login(alice)
    assert 'id="email-confirmed"' in client.get(reverse("channels:bot", args=[acme_bot.id])).content.decode()


def test_changing_the_address_asks_again_and_the_old_link_confirms_nothing(client, alice, acme_bot, platform_mail):
    client.force_login(alice)
    save(client, acme_bot)
    old_link = confirmation_link(platform_mail.messages[0]["message"])
    assert client.post(old_link).status_code == 200
    save(client, acme_bot, from_name="Acme Help")  # other settings saved: still confirmed, nothing mailed
    assert len(platform_mail.messages) == 1
    platform_mail.messages.clear()

    save(client, acme_bot, address="desk@acme-bikes.example")
    [asked] = platform_mail.messages
    assert asked["to"] == ["desk@acme-bikes.example"]
    platform_mail.messages.clear()
    answer(acme_bot, "q3@example.com")
    assert platform_mail.messages[0]["from"] == PLATFORM  # the new address is not confirmed
    refused = client.post(old_link)
    assert refused.status_code == 400
    assert "no longer has this address: nothing to confirm" in refused.content.decode()
    tampered = client.post(old_link.replace("/confirm/", "/confirm/x"))
    assert tampered.status_code == 400 and "not one we sent" in tampered.content.decode()
    assert "confirmed_address" not in ChannelConfig.objects.get(bot=acme_bot).settings


def test_a_channel_saved_before_confirmations_sends_from_the_platform_until_asked_again(client, alice, acme, acme_bot,
                                                                                        bob, charlie, platform_mail):
    ChannelConfig.objects.create(organization=acme, bot=acme_bot, kind="email",
                                 settings={"address": BOT_ADDRESS, "from_name": "Acme Bikes Support"},
                                 secrets={"inbound_secret": INBOUND_SECRET})
    answer(acme_bot, "q4@example.com")
    assert platform_mail.messages[0]["from"] == PLATFORM
    platform_mail.messages.clear()
    url = reverse("channels:email-confirmation", args=[acme_bot.id])
    for outsider in (bob, charlie):  # Acme's agent; Globex's owner
        client.force_login(outsider)
        assert client.post(url).status_code == 404
    client.force_login(alice)
    response = client.post(url)
    assert response.status_code == 302 and response["Location"].endswith("#email")
    [asked] = platform_mail.messages
    assert asked["to"] == [BOT_ADDRESS]
    assert client.post(confirmation_link(asked["message"])).status_code == 200
    assert client.post(url).status_code == 302
    notes = client.get(reverse("channels:bot", args=[acme_bot.id])).context["notes"]["email"]
    assert notes == [[True, f"Nothing to confirm: replies go from {BOT_ADDRESS} already."]]


def test_confirmation_mails_to_one_address_are_limited(client, alice, acme_bot, platform_mail):
    client.force_login(alice)
    address = "limited@acme-bikes.example"
    save(client, acme_bot, address=address)
    url = reverse("channels:email-confirmation", args=[acme_bot.id])
    for _ in range(3):
        client.post(url)
    notes = client.get(reverse("channels:bot", args=[acme_bot.id])).context["notes"]["email"]
    [(ok, sentence)] = notes
    assert not ok and sentence.startswith(f"No confirmation email sent to {address}: it was sent 3 in the last hour.")
    assert len(platform_mail.messages) == 3


def test_confirmation_mails_of_one_organisation_are_limited(client, alice, acme_bot, platform_mail):
    """However many addresses a member types, the platform mails at most 10 strangers an hour for one
    organisation."""
    client.force_login(alice)
    for n in range(10):
        save(client, acme_bot, address=f"stranger{n}@example.com")
    page = save(client, acme_bot, address="stranger10@example.com")
    assert len(platform_mail.messages) == 10
    [_, (ok, sentence)] = page.context["notes"]["email"]
    assert not ok and sentence.startswith(
        "No confirmation email sent to stranger10@example.com: this organisation sent 10 in the last hour.")


def test_the_reviewers_faked_inbound_mail_is_answered_from_the_platform_not_the_typed_address(
        client, alice, acme_bot, platform_mail):
    client.force_login(alice)
    save(client, acme_bot, address="support@globex.example", from_name="Globex Support")
    platform_mail.messages.clear()
    key = ChannelConfig.objects.get(bot=acme_bot, kind="email").key
    raw = mail(sender="victim@example.com", to="support@globex.example", subject="hi", message_id="<1@example.com>")
    assert client.post(reverse("channels:email-inbound", args=[key]), raw, content_type="message/rfc822",
                       HTTP_X_CHATNEXUS_SECRET=INBOUND_SECRET).status_code == 202
    conversation = acme_bot.conversations.get(channel="email")
    client.post(reverse("inbox:reply", args=[conversation.id]), {"text": "Your account is locked: log in at https://evil.example"})
    deliver(Message.objects.get(conversation=conversation, sender="agent").id)
    [sent] = platform_mail.messages
    assert sent["from"] == PLATFORM and sent["message"]["From"] == f"Globex Support <{PLATFORM}>"
    assert "globex.example" not in sent["message"]["From"]


def test_an_smtp_server_of_the_channels_own_needs_no_confirmation(client, alice, acme_bot, platform_mail, ascii_smtp):
    client.force_login(alice)
    page = save(client, acme_bot, smtp_host=ascii_smtp.host, smtp_port=str(ascii_smtp.port))
    assert platform_mail.messages == []  # nothing to confirm: nothing mailed
    assert 'id="email-own-server"' in page.content.decode()
    answer(acme_bot, "q5@example.com")
    assert [m["from"] for m in ascii_smtp.messages] == [BOT_ADDRESS]

    page = save(client, acme_bot, smtp_host="")  # back to the platform's server: confirmed by nobody yet
    [asked] = platform_mail.messages
    assert asked["to"] == [BOT_ADDRESS] and 'id="email-unconfirmed"' in page.content.decode()
    answer(acme_bot, "q6@example.com")
    assert platform_mail.messages[1]["from"] == PLATFORM
