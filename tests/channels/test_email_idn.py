"""Email settings beyond ASCII: a bot address on an accented domain is saved in IDNA (punycode) and
its mail sent; user names and passwords beyond ASCII (SMTP and IMAP log in in ASCII) and host
names IDNA cannot write are form errors; settings like that stored before are a failure said in
words on the test email, on a reply and on a poll — never a 500, never "internal error"."""
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from django.urls import reverse

from bots import services
from bots.models import Message
from channels_app.email.imap import poll_mailbox
from channels_app.models import ChannelConfig
from channels_app.tasks import deliver
from tests.conftest import SMTPSink, free_port

from .test_email_check import check
from .test_email_imap import imap_channel, imap_server  # noqa: F401 - fixtures

pytestmark = pytest.mark.django_db

ACCENTED = "hilfe@müller-shop.de"
PUNYCODE = "hilfe@xn--mller-shop-9db.de"
LONG_LABEL = "a" * 64 + ".example.com"


def form(**changes):
    data = {"channel": "email", "email-enabled": "on", "email-address": "help@acme.example", "email-smtp_host": "127.0.0.1",
            "email-smtp_port": "25", "email-imap_port": "993", "email-imap_folder": "INBOX",
            "email-max_replies_per_sender_per_day": "3"}  # fmt: skip
    data.update({f"email-{name}": value for name, value in changes.items()})
    return data


def save(client, bot, **changes):
    return client.post(reverse("channels:bot", args=[bot.id]), form(**changes))


def a_reply(channel):
    services.receive(bot=channel.bot, channel="email", thread_id="t1", text="Hi", external_id="x1@example.com",
                     meta={"from_address": "carla@example.com", "message_id": "x1@example.com"})
    reply, _ = services.record_reply(Message.objects.get(external_id="x1@example.com"), "Hello!", {})
    deliver(reply.id)
    reply.refresh_from_db()
    return reply


@pytest.fixture
def auth_smtp():
    """An SMTP server that offers AUTH without TLS (as on a LAN): smtplib logs in to it."""
    sink = SMTPSink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port(), auth_require_tls=False,
                            authenticator=lambda *args: AuthResult(success=True))
    controller.start()
    sink.host, sink.port = controller.hostname, controller.port
    yield sink
    controller.stop()


def test_a_bot_address_on_an_accented_domain_is_saved_in_punycode_and_its_mail_sent(client, alice, acme_bot, mailbox):
    client.force_login(alice)
    assert save(client, acme_bot, address=ACCENTED, smtp_host=mailbox.host, smtp_port=str(mailbox.port)).status_code == 302
    config = ChannelConfig.objects.get(bot=acme_bot, kind="email")
    assert config.settings["address"] == PUNYCODE
    [(ok, sentence)] = check(client, acme_bot)[0]
    assert ok, sentence
    [sent] = mailbox.messages
    assert sent["from"] == PUNYCODE and sent["message"]["From"].endswith(f"<{PUNYCODE}>")
    [(ok, sentence)] = check(client, acme_bot, to=ACCENTED.upper())[0]  # typed as the team knows it
    assert not ok and "the bot's own address" in sentence


def test_an_accented_bot_address_stored_before_still_sends(client, alice, email_channel, mailbox):
    email_channel.settings["address"] = ACCENTED  # saved before addresses were stored in punycode
    email_channel.save()
    client.force_login(alice)
    [(ok, sentence)] = check(client, email_channel.bot)[0]
    assert ok, sentence
    reply = a_reply(email_channel)
    assert reply.delivery_status == Message.Delivery.SENT, reply.delivery_error
    assert [sent["from"] for sent in mailbox.messages] == [PUNYCODE, PUNYCODE]
    assert mailbox.messages[1]["message"]["Message-ID"].endswith("@xn--mller-shop-9db.de>")


@pytest.mark.parametrize("field", ["smtp_user", "smtp_password", "imap_user", "imap_password"])
def test_a_user_or_password_beyond_ascii_is_a_form_error(client, alice, acme_bot, field):
    client.force_login(alice)
    response = save(client, acme_bot, **{field: "Geheim’wort"})
    assert response.status_code == 400
    assert "only ASCII" in response.context["forms"]["email"].errors[field][0]
    assert not ChannelConfig.objects.exists()


@pytest.mark.parametrize("field", ["smtp_host", "imap_host"])
@pytest.mark.parametrize("host", [LONG_LABEL, "mail..example.com"])
def test_a_host_name_idna_cannot_write_is_a_form_error(client, alice, acme_bot, field, host):
    client.force_login(alice)
    response = save(client, acme_bot, **{field: host})
    assert response.status_code == 400
    assert response.context["forms"]["email"].errors[field] == [
        "Not a host name: each part between dots must be 1 to 63 characters."]
    assert not ChannelConfig.objects.exists()


def test_an_accented_host_name_is_accepted(client, alice, acme_bot, settings):
    settings.CHATNEXUS_MAIL_ALLOW_PRIVATE = True  # no lookup of the name is needed to save it
    client.force_login(alice)
    assert save(client, acme_bot, smtp_host="smtp.müller-shop.de").status_code == 302


def test_an_smtp_password_beyond_ascii_stored_before_fails_in_words(client, alice, email_channel, auth_smtp):
    email_channel.settings.update({"smtp_host": auth_smtp.host, "smtp_port": auth_smtp.port, "smtp_user": "hilfe"})
    email_channel.secrets = {**email_channel.secrets, "smtp_password": "Geheim’wort"}
    email_channel.save()
    client.force_login(alice)
    [(ok, sentence)] = check(client, email_channel.bot)[0]
    assert not ok and "cannot be sent to a mail server" in sentence and "’" not in sentence
    reply = a_reply(email_channel)
    assert reply.delivery_status == Message.Delivery.FAILED
    assert reply.delivery_error.startswith("config SMTP settings unusable: ") and "’" not in reply.delivery_error
    assert auth_smtp.messages == []


def test_an_smtp_host_stored_before_with_an_over_long_label_fails_in_words(client, alice, email_channel, settings):
    settings.CHATNEXUS_MAIL_ALLOW_PRIVATE = True
    email_channel.settings["smtp_host"] = LONG_LABEL
    email_channel.save()
    client.force_login(alice)
    [(ok, sentence)] = check(client, email_channel.bot)[0]
    assert not ok and "cannot be sent to a mail server" in sentence
    reply = a_reply(email_channel)
    assert reply.delivery_status == Message.Delivery.FAILED
    assert reply.delivery_error.startswith("config SMTP settings unusable: ")


@pytest.mark.parametrize("change", [{"secrets": {"imap_password": "Geheim’wort"}}, {"settings": {"imap_host": LONG_LABEL}}])
def test_imap_settings_stored_before_that_cannot_be_sent_fail_in_words(client, alice, imap_channel, imap_server, settings,
                                                                       change):
    settings.CHATNEXUS_MAIL_ALLOW_PRIVATE = True
    imap_channel.secrets = {**imap_channel.secrets, **change.get("secrets", {})}
    imap_channel.settings = {**imap_channel.settings, **change.get("settings", {})}
    imap_channel.save()
    client.force_login(alice)
    ok, sentence = check(client, imap_channel.bot)[0][1]
    assert not ok and sentence.startswith("IMAP not tried: ") and "cannot be sent to a mail server" in sentence
    assert poll_mailbox(imap_channel.id) == 0  # said in the worker's log, the next poll tries again


# ---------------------------------------------------------------------------
# A customer's address beyond ASCII in its local part (RFC 6531: josé@example.com)


def rcpt_server(smtputf8: bool):
    """The tests' RawSink (SMTPUTF8 offered or not), also keeping each RCPT command's argument as it
    came: aiosmtpd decodes an encoded word in an address, so its envelope would not show one."""
    from aiosmtpd.smtp import SMTP

    from .conftest import RawSink

    class Server(SMTP):
        async def smtp_RCPT(self, arg):
            self.event_handler.rcpt_commands.append(arg)
            return await super().smtp_RCPT(arg)

    class Recording(Controller):
        def factory(self):
            return Server(self.handler, **self.SMTP_kwargs)

    sink = RawSink()
    sink.rcpt_commands = []
    controller = Recording(sink, hostname="127.0.0.1", port=free_port(), enable_SMTPUTF8=smtputf8)
    controller.start()
    sink.host, sink.port = controller.hostname, controller.port
    return sink, controller


@pytest.fixture(params=[True, False], ids=["smtputf8", "no-smtputf8"])
def rcpt_smtp(request):
    sink, controller = rcpt_server(smtputf8=request.param)
    sink.smtputf8 = request.param
    yield sink
    controller.stop()


@pytest.mark.parametrize("sender, envelope, to", [
    ("josé@example.com", "josé@example.com", "josé@example.com"),
    ('"Ruiz, José" <José@Müller-Shop.de>', "José@xn--mller-shop-9db.de", "José@müller-shop.de"),  # its case kept
])
def test_a_customer_address_beyond_ascii_is_answered_in_utf8_where_the_server_offers_smtputf8(
        email_channel, post_mail, rcpt_smtp, sender, envelope, to):
    """Django wrote ``RCPT TO:<=?utf-8?b?am9zw6k=?=@example.com>``: a mailbox of no one. Where the
    server has no SMTPUTF8 the reply cannot reach the address: it fails in words, sends nothing."""
    from .mails import mail, raw_fields
    from .test_email_delivery import reply_to, use_server

    use_server(email_channel, rcpt_smtp)
    post_mail(email_channel.key, mail(sender=sender))
    inbound = Message.objects.get()
    assert inbound.meta["from_address"] == to and inbound.conversation.contact_email == to
    reply = reply_to(inbound)
    if not rcpt_smtp.smtputf8:
        assert reply.delivery_status == Message.Delivery.FAILED
        assert reply.delivery_error == ("recipient the mail server does not accept international addresses (SMTPUTF8): "
                                        f"cannot reply to {to}")
        assert reply.delivery_attempts == 1  # permanent: no server without SMTPUTF8 takes it later
        assert rcpt_smtp.messages == [] and rcpt_smtp.rcpt_commands == []
        inbound.refresh_from_db()  # the customer's mail stays as it came
        assert inbound.text == "Hello, what are your opening hours?" and inbound.meta["from_address"] == to
        return
    assert reply.delivery_status == Message.Delivery.SENT, reply.delivery_error
    [sent] = rcpt_smtp.messages
    assert rcpt_smtp.rcpt_commands == [f"TO:<{envelope}>"] and sent["smtputf8"] is True  # MAIL FROM:<…> SMTPUTF8
    fields = raw_fields(sent["raw"])
    assert fields[b"To"] == to.encode()  # raw UTF-8, no encoded word
    assert fields[b"In-Reply-To"] == b"<q1@example.com>" and fields[b"Subject"] == b"Re: Opening hours"
    assert sent["message"].get_body(("plain",)).get_content().strip() == "We open at 9am."
