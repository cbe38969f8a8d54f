""""Send a test email" on the Channels page: the saved email settings tried for real — a mail
through the channel's SMTP server (aiosmtpd on loopback) and a login to its IMAP folder (the
loopback IMAP stub) — each result said in words on the page, a wrong setting never a 500."""
import pytest
from django.urls import reverse

from tests.conftest import free_port

from .conftest import BOT_ADDRESS
from .test_email_imap import imap_channel, imap_server  # noqa: F401 - fixtures

pytestmark = pytest.mark.django_db


def check(client, bot, to="alice@example.com"):
    response = client.post(reverse("channels:check-email", args=[bot.id]), {"to": to})
    assert response.status_code == 302 and response["Location"].endswith("#email")
    page = client.get(response["Location"].split("#")[0])
    assert page.status_code == 200
    return page.context["notes"]["email"], page.content.decode()


def test_it_sends_a_test_email_from_the_bots_address_to_whoever_asked(client, alice, email_channel, mailbox):
    client.force_login(alice)
    results, page = check(client, email_channel.bot)
    assert results == [[True, f"SMTP: sent a test email from {BOT_ADDRESS} to alice@example.com through "
                              f"{mailbox.host}:{mailbox.port}."]]
    assert 'id="email-notes"' in page
    [sent] = mailbox.messages
    assert sent["to"] == ["alice@example.com"] and sent["from"] == BOT_ADDRESS
    assert sent["message"]["Subject"] == f"Test email from {email_channel.bot.name} (ChatNexus)"
    assert sent["message"]["Auto-Submitted"] == "auto-generated"
    # shown once: a reload of the page does not repeat it
    page = client.get(reverse("channels:bot", args=[email_channel.bot.id]))
    assert page.context["notes"]["email"] is None
    assert 'name="to" id="email-check-to" value="alice@example.com"' in page.content.decode()  # prefilled: hers


def test_it_goes_to_the_address_typed_never_to_the_bots_own(client, alice, email_channel, mailbox):
    alice.email = ""  # no address on her account: before, the test mail went to the bot's own mailbox
    alice.save()
    client.force_login(alice)
    assert 'name="to" id="email-check-to" value=""' in client.get(reverse("channels:bot", args=[email_channel.bot.id])).content.decode()
    assert check(client, email_channel.bot, to="")[0] == [[False, "Write the address the test email should go to."]]
    assert check(client, email_channel.bot, to="not an address")[0] == [[False, "Write the address the test email should go to."]]
    [(ok, sentence)] = check(client, email_channel.bot, to=BOT_ADDRESS.upper())[0]
    assert not ok and sentence.startswith(f"Not to {BOT_ADDRESS.upper()}, the bot's own address")
    assert mailbox.messages == []
    [(ok, sentence)] = check(client, email_channel.bot, to="it-team@acme.example")[0]
    assert ok and "to it-team@acme.example" in sentence
    [sent] = mailbox.messages
    assert sent["to"] == ["it-team@acme.example"]


def test_an_smtp_server_that_does_not_answer_is_said_in_words(client, alice, email_channel, mailbox):
    port = free_port()  # nothing listens there
    email_channel.settings["smtp_port"] = port
    email_channel.save()
    client.force_login(alice)
    [(ok, sentence)] = check(client, email_channel.bot)[0]
    assert not ok and sentence.startswith(f"SMTP: could not talk to {mailbox.host}:{port}: ")
    assert mailbox.messages == []


def test_it_logs_in_to_the_imap_folder_and_counts_its_mail(client, alice, imap_channel, imap_server):
    imap_server.add(b"From: a@example.com\r\nSubject: hi\r\n\r\nhello\r\n")
    client.force_login(alice)
    smtp, imap = check(client, imap_channel.bot)[0]
    assert smtp[0] is True
    assert imap == [True, f"IMAP: logged in to {imap_server.host}:{imap_server.port}; the folder 'INBOX' holds 1 "
                          "messages. New ones are fetched periodically."]
    assert any(c.startswith("EXAMINE") for c in imap_server.commands)  # read-only: the mailbox's flags stay
    assert not any(c.startswith(("SELECT", "UID")) for c in imap_server.commands)


def test_a_refused_imap_login_is_said_in_words(client, alice, imap_channel, imap_server):
    imap_channel.secrets = {**imap_channel.secrets, "imap_password": "wrong"}
    imap_channel.save()
    client.force_login(alice)
    ok, sentence = check(client, imap_channel.bot)[0][1]
    assert not ok and sentence.startswith(f"IMAP: {imap_server.host}:{imap_server.port} refused the login: ")
    assert "invalid credentials" in sentence


def test_without_an_smtp_server_on_the_embedded_default_it_says_the_mail_only_reached_the_log(
        client, alice, email_channel, mailbox, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
    del email_channel.settings["smtp_host"]
    email_channel.save()
    client.force_login(alice)
    [(ok, sentence)] = check(client, email_channel.bot)[0]
    assert ok and "only written to this server's log" in sentence and "EMAIL_HOST" in sentence
    assert mailbox.messages == []


def test_without_saved_email_settings_it_says_to_save_them_first(client, alice, acme_bot, mailbox):
    client.force_login(alice)
    assert check(client, acme_bot)[0] == [[False, "Save the email settings first."]]
    assert mailbox.messages == []


def test_only_the_bots_managers_may_send_one(client, bob, charlie, email_channel, mailbox):
    url = reverse("channels:check-email", args=[email_channel.bot.id])
    client.force_login(bob)  # Acme's agent
    assert client.post(url).status_code == 404
    client.force_login(charlie)  # Globex's owner
    assert client.post(url).status_code == 404
    assert client.get(url).status_code == 405
    assert mailbox.messages == []


def test_mail_servers_on_this_servers_own_network_are_refused_unless_allowed(
    client, alice, settings, imap_channel, imap_server, mailbox  # noqa: F811 - fixtures
):
    """SMTP and IMAP hosts are typed by members: like the webhook, never this server's own network
    (its database, an admin port, cloud metadata) unless the deployment allows it."""
    from bots import services
    from bots.models import Message
    from channels_app.email.imap import poll_mailbox
    from channels_app.tasks import deliver

    from .mails import mail

    settings.CHATNEXUS_MAIL_ALLOW_PRIVATE = False
    client.force_login(alice)
    form = {"channel": "email", "email-enabled": "on", "email-address": BOT_ADDRESS, "email-smtp_host": "127.0.0.1",
            "email-smtp_port": "5432", "email-imap_host": "localhost", "email-imap_port": "6379",
            "email-imap_folder": "INBOX", "email-max_replies_per_sender_per_day": "3"}
    response = client.post(reverse("channels:bot", args=[imap_channel.bot.id]), form)
    assert response.status_code == 400
    page = response.content.decode()
    assert "Not allowed: 127.0.0.1 is an address of this server&#x27;s own network" in page
    assert "localhost (127.0.0.1) is an address" in page and "CHATNEXUS_MAIL_ALLOW_PRIVATE=1" in page

    # saved before (or pointed there since): checked again before every connection, nothing reached
    results, _ = check(client, imap_channel.bot)
    assert [ok for ok, _ in results] == [False, False]
    assert results[0][1].startswith(f"SMTP not tried: {mailbox.host} is an address of this server's own network")
    assert results[1][1].startswith(f"IMAP not tried: {imap_server.host} is an address")
    imap_server.add(mail(message_id="<i1@example.com>"))
    assert poll_mailbox(imap_channel.id) == 0 and not any(c.startswith("LOGIN") for c in imap_server.commands)
    services.receive(bot=imap_channel.bot, channel="email", thread_id="t1", text="Hi", external_id="x1@example.com",
                     meta={"from_address": "carla@example.com", "message_id": "x1@example.com"})
    reply, _ = services.record_reply(Message.objects.get(external_id="x1@example.com"), "Hello!", {})
    deliver(reply.id)
    reply.refresh_from_db()
    assert reply.delivery_status == Message.Delivery.FAILED and "SMTP server not allowed" in reply.delivery_error
    assert mailbox.messages == []

    settings.CHATNEXUS_MAIL_ALLOW_PRIVATE = True  # a mail server on the LAN, allowed by the deployment
    assert [ok for ok, _ in check(client, imap_channel.bot)[0]] == [True, True]
