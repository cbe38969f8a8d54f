"""An email channel's own SMTP or IMAP server answering a byte at a time (its greeting, a reply
line, the TLS handshake): smtplib's and imaplib's timeouts hold for each read, so such a server
held the worker, and with it every organisation's deliveries and polls, for as long as it liked.
Each connection ends at CHATNEXUS_SMTP_DEADLINE_S / CHATNEXUS_IMAP_DEADLINE_S (channels_app/email/
pinned.py), said in words; the stub server (``Trickler``) tells whether it was cut off."""
import logging

import pytest

from bots import services
from bots.models import Message
from channels_app.email.imap import poll_mailbox

from .loopback import Trickler
from .mails import mail
from .test_api_webhook import retried
from .test_email_check import check

pytestmark = pytest.mark.django_db

TLS_RECORD = b"\x16\x03\x03\x3f\x00"  # a handshake record of 16 KB is coming: the client waits for it all


@pytest.fixture
def mail_server():
    """``mail_server(head, slow, rest)``: a ``Trickler`` that greets, as mail servers do."""
    servers = []

    def start(head: bytes, slow: bytes, rest: bytes = b"") -> Trickler:
        servers.append(Trickler(head, slow, rest, greets=True).start())
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.mark.parametrize("head, slow, tls", [  # the slow part a byte every 0.2 s: 10 s
    (b"220 ", b"mail.example ESMTP " + b"x" * 31, False),
    (b"220 mail.example ESMTP\r\n250-", b"mail.example " + b"x" * 37, False),  # EHLO's answer
    (b"220 mail.example ESMTP\r\n250-mail.example\r\n250 STARTTLS\r\n220 go ahead\r\n", TLS_RECORD + b"\x02" * 45,
     True),
], ids=["the-greeting", "a-reply-line", "the-starttls-handshake"])
def test_a_reply_to_an_smtp_server_answering_a_byte_at_a_time_is_cut_off_and_tried_again(
        email_channel, post_mail, mail_server, settings, head, slow, tls):
    settings.CHATNEXUS_SMTP_DEADLINE_S = 1
    server = mail_server(head, slow)
    email_channel.settings.update(smtp_host="127.0.0.1", smtp_port=server.port, smtp_use_tls=tls)
    email_channel.save()
    post_mail(email_channel.key, mail())
    reply, _ = services.record_reply(Message.objects.get(), "We open at 9am.", {})
    assert retried(reply).delivery_error == "network SMTP server unreachable: 127.0.0.1 took longer than 1 s in all"
    assert server.was_cut_off()


@pytest.mark.parametrize("head, slow, tls", [
    (b"* OK ", b"IMAP4rev1 ready " + b"x" * 34, False),
    (b"", TLS_RECORD + b"\x02" * 45, True),
], ids=["the-greeting", "the-tls-handshake"])
def test_an_imap_server_answering_a_byte_at_a_time_is_cut_off_in_the_poll_and_the_check(
        client, alice, email_channel, mailbox, mail_server, settings, caplog, head, slow, tls):
    settings.CHATNEXUS_IMAP_DEADLINE_S = 1
    late = "127.0.0.1 took longer than 1 s in all"
    polled, checked = mail_server(head, slow), mail_server(head, slow)
    email_channel.settings.update(imap_host="127.0.0.1", imap_port=polled.port, imap_use_ssl=tls)
    email_channel.save()
    with caplog.at_level(logging.WARNING, logger="channels_app.email.imap"):
        assert poll_mailbox(email_channel.id) == 0
    assert f"imap: mailbox of channel {email_channel.id}: {late}" in caplog.messages
    assert polled.was_cut_off()

    email_channel.settings["imap_port"] = checked.port
    email_channel.save()
    client.force_login(alice)
    assert check(client, email_channel.bot)[0][1] == [False, f"IMAP: could not talk to 127.0.0.1:{checked.port}: "
                                                             f"{late}."]
    assert checked.was_cut_off()
