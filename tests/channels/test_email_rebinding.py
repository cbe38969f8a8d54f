"""An email channel's SMTP and IMAP servers are connected to at the very address that was checked:
a name that answers a public address to the check and 127.0.0.1 a moment later (DNS rebinding)
never reaches this server's own network, and TLS still names, and verifies, the host as typed.

The internet is simulated at the socket edge: a resolver hook (``loopback.resolving``) and a route
that takes connections for the public address to a TLS stub on loopback (``loopback.routed``).
At 127.0.0.1 and the channel's port waits what a rebinding name would reach instead: the suite's
plain SMTP sink, and a plain IMAP stub."""
import logging

import pytest
from aiosmtpd.controller import Controller

from bots import services
from bots.models import Message
from channels_app.base import DeliveryError
from channels_app.email import check
from channels_app.email.adapter import EmailAdapter
from channels_app.email.imap import poll_mailbox
from tests.conftest import SMTPSink, free_port

from .certs import Authority
from .imap_stub import IMAPStub
from .loopback import rebinding_dns, resolving, routed
from .mails import mail
from .test_email_imap import imap_channel, imap_server  # noqa: F401 - fixtures

pytestmark = pytest.mark.django_db

NAME = "mail.rebind.example"  # the host a member typed
PUBLIC = "93.184.215.14"  # what it answers when checked
DOWN = "93.184.215.15"  # a public address where nothing answers


def own_network(host, address):
    return f"{host} ({address}) is an address of this server's own network (set CHATNEXUS_MAIL_ALLOW_PRIVATE=1 to allow it)"


def a_reply(channel, mail_id="x1@example.com"):
    """The bot's reply, not sent yet, to a mail from Carla."""
    services.receive(bot=channel.bot, channel="email", thread_id=mail_id, text="Hi", external_id=mail_id,
                     meta={"from_address": "carla@example.com", "message_id": mail_id})
    reply, _ = services.record_reply(Message.objects.get(external_id=mail_id), "Hello!", {})
    return reply


@pytest.fixture(scope="session")
def authority(tmp_path_factory):
    return Authority(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def tls_smtp(authority, monkeypatch):
    """``tls_smtp(certificate_name=NAME, implicit=False)``: an SMTP server on loopback with a
    certificate for that name (STARTTLS required, or TLS from the first byte), trusted by this
    process's default contexts as a public CA would be."""
    monkeypatch.setenv("SSL_CERT_FILE", str(authority.path))
    controllers = []

    def start(certificate_name=NAME, implicit=False):
        context = authority.server_context(certificate_name)
        tls = {"ssl_context": context} if implicit else {"tls_context": context, "require_starttls": True}
        sink = SMTPSink()
        controller = Controller(sink, hostname="127.0.0.1", port=free_port(), **tls)
        controller.start()
        controllers.append(controller)
        sink.address, sink.context = (controller.hostname, controller.port), context
        return sink

    yield start
    for controller in controllers:
        controller.stop()


def smtp_at(channel, host, starttls=True):
    channel.settings.update(smtp_host=host, smtp_use_tls=starttls)  # smtp_port stays the loopback sink's
    channel.save()


@pytest.mark.parametrize("tls", ["STARTTLS", "TLS"])
def test_a_reply_goes_to_the_smtp_server_checked_not_to_where_the_name_points_next(email_channel, mailbox, tls_smtp,
                                                                                   settings, monkeypatch, tls):
    settings.CHATNEXUS_MAIL_ALLOW_PRIVATE = False
    settings.EMAIL_USE_SSL = tls == "TLS"  # Django's SMTP backend takes TLS-from-the-start from the platform's settings
    server = tls_smtp(implicit=tls == "TLS")
    smtp_at(email_channel, NAME, starttls=tls == "STARTTLS")
    lookups = rebinding_dns(monkeypatch, NAME, PUBLIC)  # public when checked, 127.0.0.1 ever after
    connections = routed(monkeypatch, {(PUBLIC, mailbox.port): server.address})

    EmailAdapter().send(a_reply(email_channel))
    [sent] = server.messages
    assert sent["to"] == ["carla@example.com"] and sent["message"]["Subject"] == "Re: your message"
    assert mailbox.messages == []  # the server's own network: never reached
    assert lookups == [NAME]  # looked up once: the address checked is the address connected to
    assert (PUBLIC, mailbox.port) in connections and ("127.0.0.1", mailbox.port) not in connections
    assert server.context.server_names == [NAME]  # TLS asked for the name (its certificate was verified for it)

    # the next connection looks the name up again: 127.0.0.1 now, refused before a byte is sent
    with pytest.raises(DeliveryError) as refused:
        EmailAdapter().send(a_reply(email_channel, "x2@example.com"))
    assert not refused.value.transient and refused.value.code == "config"
    assert str(refused.value) == f"SMTP server not allowed: {own_network(NAME, '127.0.0.1')}"
    assert mailbox.messages == [] and len(server.messages) == 1
    assert ("127.0.0.1", mailbox.port) not in connections


def test_tls_at_the_checked_address_still_verifies_the_certificate_for_the_name(email_channel, mailbox, tls_smtp,
                                                                               settings, monkeypatch):
    settings.CHATNEXUS_MAIL_ALLOW_PRIVATE = False
    server = tls_smtp(certificate_name="mail.elsewhere.example")
    smtp_at(email_channel, NAME)
    rebinding_dns(monkeypatch, NAME, PUBLIC)
    routed(monkeypatch, {(PUBLIC, mailbox.port): server.address})
    with pytest.raises(DeliveryError) as failed:
        EmailAdapter().send(a_reply(email_channel))
    assert "certificate verify failed: Hostname mismatch" in str(failed.value) and f"'{NAME}'" in str(failed.value)
    assert server.context.server_names == [NAME]
    assert server.messages == [] and mailbox.messages == []


def test_every_address_the_name_answers_is_checked_and_tried_in_order(email_channel, mailbox, tls_smtp, settings,
                                                                      monkeypatch):
    settings.CHATNEXUS_MAIL_ALLOW_PRIVATE = False
    server = tls_smtp()
    smtp_at(email_channel, NAME)
    resolving(monkeypatch, NAME, [DOWN, PUBLIC], ["127.0.0.1"])
    connections = routed(monkeypatch, {(DOWN, mailbox.port): ("127.0.0.1", free_port()),  # nothing listens there
                                       (PUBLIC, mailbox.port): server.address})
    EmailAdapter().send(a_reply(email_channel))
    assert [address for address in connections if address[1] == mailbox.port] == [(DOWN, mailbox.port), (PUBLIC, mailbox.port)]
    assert len(server.messages) == 1 and mailbox.messages == []

    # one address of this server's own network among public ones: none is connected to
    resolving(monkeypatch, "mixed.rebind.example", [PUBLIC, "10.20.30.40"])
    smtp_at(email_channel, "mixed.rebind.example")
    connections.clear()
    ok, sentence = check.smtp(email_channel, "alice@example.com")
    assert (ok, sentence) == (False, f"SMTP not tried: {own_network('mixed.rebind.example', '10.20.30.40')}.")
    assert [address for address in connections if address[1] == mailbox.port] == []
    assert len(server.messages) == 1 and mailbox.messages == []


@pytest.mark.parametrize("use_ssl", [True, False], ids=["IMAP over TLS", "plain IMAP"])
def test_imap_is_polled_at_the_server_checked_not_where_the_name_points_next(imap_channel, imap_server, authority,  # noqa: F811
                                                                            settings, monkeypatch, use_ssl):
    settings.CHATNEXUS_MAIL_ALLOW_PRIVATE = False
    monkeypatch.setenv("SSL_CERT_FILE", str(authority.path))  # the tests' CA trusted, as a public one would be
    context = authority.server_context(NAME)
    server = IMAPStub(user="help@acme-bikes.example", password="imap-pw", tls=context if use_ssl else None).start()
    try:
        server.add(mail(message_id="<public@example.com>", body="Mail from the server the member named"))
        imap_server.add(mail(message_id="<own@example.com>", body="Mail from this server's own network"))
        imap_channel.settings.update(imap_host=NAME, imap_use_ssl=use_ssl)  # imap_port stays the loopback stub's
        imap_channel.save()
        lookups = rebinding_dns(monkeypatch, NAME, PUBLIC)
        routed(monkeypatch, {(PUBLIC, imap_server.port): (server.host, server.port)})

        assert poll_mailbox(imap_channel.id) == 1
        assert list(Message.objects.values_list("text", flat=True)) == ["Mail from the server the member named"]
        assert lookups == [NAME] and any(c.startswith("LOGIN") for c in server.commands)
        assert imap_server.commands == []  # the server's own network: never reached
        assert context.server_names == ([NAME] if use_ssl else [])  # TLS asked for the name

        # the next poll looks the name up again: 127.0.0.1 now, refused
        assert poll_mailbox(imap_channel.id) == 0
        assert check.imap(imap_channel) == (False, f"IMAP not tried: {own_network(NAME, '127.0.0.1')}.")
        assert imap_server.commands == [] and Message.objects.count() == 1
    finally:
        server.stop()


@pytest.mark.parametrize("certificate", ["signed by a CA not trusted", "for another name"])
def test_imap_over_tls_refuses_a_certificate_it_cannot_verify(imap_channel, imap_server, authority,  # noqa: F811
                                                              tmp_path, settings, monkeypatch, caplog, certificate):
    """imaplib's own default context checks neither the chain nor the name: a man in the middle
    with any certificate would have been sent the mailbox's password. Refused now, before LOGIN,
    with the reason in words on the check page and in the poll's log."""
    settings.CHATNEXUS_MAIL_ALLOW_PRIVATE = False
    monkeypatch.setenv("SSL_CERT_FILE", str(authority.path))  # the tests' CA is trusted: only its certificates pass
    if certificate == "for another name":
        context, why = authority.server_context("mail.elsewhere.example"), f"Hostname mismatch, certificate is not valid for '{NAME}'."
    else:
        context, why = Authority(tmp_path).server_context(NAME), "unable to get local issuer certificate"
    server = IMAPStub(user="help@acme-bikes.example", password="imap-pw", tls=context).start()
    try:
        server.add(mail(message_id="<mitm@example.com>", body="Mail read by whoever answered"))
        imap_channel.settings.update(imap_host=NAME, imap_use_ssl=True)  # imap_port stays the loopback stub's
        imap_channel.save()
        resolving(monkeypatch, NAME, [PUBLIC])
        routed(monkeypatch, {(PUBLIC, imap_server.port): (server.host, server.port)})

        with caplog.at_level(logging.WARNING, logger="channels_app.email.imap"):
            assert poll_mailbox(imap_channel.id) == 0
        assert Message.objects.count() == 0 and server.commands == []  # no LOGIN: the password was never sent
        assert f"the TLS certificate of {NAME} is not trusted ({why})" in caplog.text
        assert "Traceback" not in caplog.text

        ok, sentence = check.imap(imap_channel)
        assert not ok and server.commands == []
        assert sentence.startswith(f"IMAP: the TLS certificate of {NAME}:{imap_server.port} is not trusted ({why}), "
                                   "so nothing was sent to it"), sentence
        assert context.server_names == [NAME, NAME]  # the name was asked for, as with a certificate that passes
    finally:
        server.stop()


@pytest.mark.parametrize("certificate", ["another name", "an unknown authority"])
def test_the_test_email_says_in_words_that_the_smtp_certificate_is_not_trusted(email_channel, mailbox, tls_smtp,
                                                                             authority, settings, monkeypatch,
                                                                             tmp_path, certificate):
    """As the IMAP check says it: before, OpenSSL's raw message ("[SSL: CERTIFICATE_VERIFY_FAILED] ...")."""
    settings.CHATNEXUS_MAIL_ALLOW_PRIVATE = False
    server = tls_smtp(certificate_name="mail.elsewhere.example" if certificate == "another name" else NAME)
    if certificate == "an unknown authority":  # this process trusts another CA than the one that signed it
        (tmp_path / "other").mkdir()
        monkeypatch.setenv("SSL_CERT_FILE", str(Authority(tmp_path / "other").path))
    smtp_at(email_channel, NAME)
    rebinding_dns(monkeypatch, NAME, PUBLIC)
    routed(monkeypatch, {(PUBLIC, mailbox.port): server.address})
    ok, said = check.smtp(email_channel, "owner@example.com")
    assert not ok and said.startswith(f"SMTP: the TLS certificate of {NAME}:{mailbox.port} is not trusted ("), said
    assert "neither the password nor the mail was sent to it" in said and "[SSL" not in said
    assert server.messages == [] and mailbox.messages == []
