"""Looking up a tenant's host name counts against the call's deadline: a page fetch, the API
channel's reply webhook, SMTP and IMAP, and the Channels page's saves, which check the hosts typed
(bots/egress.py ``Deadline.within``). The system resolver
asks its name servers for its timeout times its retries and nothing interrupts it, so a name
server that never answers held the worker that long, outside every deadline.

glibc reads its name servers from /etc/resolv.conf alone, so a test cannot point this process at
a silent one: the resolver is replaced at the socket edge (``socket.getaddrinfo``), as the
rebinding tests do (``loopback.resolving``). A silent name's look-up waits as one whose name
servers never answer, then fails as such a resolver does (EAI_AGAIN); each test asserts that the
call ended, in the deadline's words, while the look-up was still waiting."""
import logging
import socket
import threading

import pytest
from django.urls import reverse

from bots import services, webpages
from bots.api import webhook
from bots.models import Message
from channels_app.base import DeliveryError
from channels_app.email import check
from channels_app.email.imap import poll_mailbox
from channels_app.models import ChannelConfig

from .mails import mail
from .test_api_webhook import SECRET, retried, save
from .test_channel_forms import email_data

pytestmark = pytest.mark.django_db

PUBLIC = "93.184.215.14"
RESOLVER_GIVES_UP_S = 6  # the resolver's timeout times its attempts (glibc: 5 s x 2 by default)


class SilentDNS:
    """``socket.getaddrinfo``, except for ``name``: its first look-ups answer ``answers`` (one
    address each), the later ones wait RESOLVER_GIVES_UP_S, then fail with EAI_AGAIN."""

    def __init__(self, monkeypatch, name: str, *answers: str):
        self.name, self.answers, self.waiting, self.released = name, list(answers), 0, threading.Event()
        real, asked = socket.getaddrinfo, []

        def getaddrinfo(host, *args, **kwargs):
            if host != name:
                return real(host, *args, **kwargs)
            asked.append(host)
            if len(asked) <= len(self.answers):
                return real(self.answers[len(asked) - 1], *args, **kwargs)
            self.waiting += 1
            try:
                self.released.wait(RESOLVER_GIVES_UP_S)
            finally:
                self.waiting -= 1
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)

    def still_waiting(self) -> bool:
        """A look-up of the name has not ended: the call that asked did not wait for it."""
        return self.waiting > 0


@pytest.fixture
def silent_dns(monkeypatch):
    """``silent_dns(name, *answers)``: a ``SilentDNS`` for ``name``, its waiting look-ups let go at the end."""
    made = []

    def make(name, *answers):
        made.append(SilentDNS(monkeypatch, name, *answers))
        return made[-1]

    yield make
    for dns in made:
        dns.released.set()


# ---------------------------------------------------------------------------
# A page fetch (the builder's "fetch a web page")


@pytest.mark.parametrize("allow_private, answers", [
    (False, []),  # the check of the address (refused_address) asks first
    (False, [PUBLIC]),  # the check had its answer; the pinned session's own look-up waits
    (True, []),  # nothing checked: the plain session looks the name up as it connects
], ids=["the-check", "the-pinned-session", "the-plain-session"])
def test_a_page_whose_name_server_never_answers_is_given_up_at_the_deadline(settings, silent_dns, allow_private,
                                                                            answers):
    settings.CHATNEXUS_FETCH_ALLOW_PRIVATE = allow_private
    settings.CHATNEXUS_FETCH_TIMEOUT_S = 1
    dns = silent_dns("www.silent.example", *answers)
    with pytest.raises(webpages.DocumentError, match="The page took too long to answer."):
        webpages.fetch("http://www.silent.example/delivery")
    assert dns.still_waiting()


# ---------------------------------------------------------------------------
# The API channel's reply webhook


@pytest.mark.parametrize("allow_private, answers", [
    (False, []),  # the URL's check (refused_address) asks first
    (False, [PUBLIC]),  # the URL's check had its answer; the pinned session's own look-up waits
    (True, []),  # the plain session looks the name up as it connects
], ids=["the-check", "the-pinned-session", "the-plain-session"])
def test_a_webhook_whose_name_server_never_answers_is_given_up_at_the_deadline_and_tried_again(
        acme, acme_bot, settings, silent_dns, allow_private, answers):
    settings.CHATNEXUS_WEBHOOK_ALLOW_PRIVATE = allow_private
    settings.CHATNEXUS_WEBHOOK_TIMEOUT_S = 1
    config = ChannelConfig.objects.create(organization=acme, bot=acme_bot, kind="api",
                                          settings={"webhook_url": "http://hooks.silent.example/chatnexus"},
                                          secrets={"webhook_secret": "webhook-signing-secret-for-tests"})
    dns = silent_dns("hooks.silent.example", *answers)
    with pytest.raises(DeliveryError) as failed:
        webhook.post(config, "message", {"text": "Hello"}, "d-1")
    assert str(failed.value) == "webhook took longer than 1 s to answer" and failed.value.transient
    assert dns.still_waiting()


# ---------------------------------------------------------------------------
# The email channel's SMTP and IMAP servers


def test_a_reply_through_an_smtp_server_whose_name_server_never_answers_is_given_up_and_tried_again(
        email_channel, post_mail, settings, silent_dns):
    settings.CHATNEXUS_SMTP_DEADLINE_S = 1
    email_channel.settings["smtp_host"] = "smtp.silent.example"
    email_channel.save()
    post_mail(email_channel.key, mail())
    dns = silent_dns("smtp.silent.example")
    reply, _ = services.record_reply(Message.objects.get(), "We open at 9am.", {})
    assert retried(reply).delivery_error == ("network SMTP server unreachable: smtp.silent.example took longer than "
                                             "1 s in all")
    assert dns.still_waiting()


def test_an_imap_server_whose_name_server_never_answers_is_given_up_in_the_poll_and_the_check(
        email_channel, settings, silent_dns, caplog):
    settings.CHATNEXUS_IMAP_DEADLINE_S = 1
    late = "imap.silent.example took longer than 1 s in all"
    email_channel.settings.update(imap_host="imap.silent.example", imap_port=993)
    email_channel.save()
    dns = silent_dns("imap.silent.example")
    with caplog.at_level(logging.WARNING, logger="channels_app.email.imap"):
        assert poll_mailbox(email_channel.id) == 0
    assert f"imap: mailbox of channel {email_channel.id}: {late}" in caplog.messages
    assert dns.still_waiting()
    assert check.imap(email_channel) == (False, f"IMAP: could not talk to imap.silent.example:993: {late}.")


# ---------------------------------------------------------------------------
# Saves on the Channels page: an email channel's servers, the API channel's webhook URL

LATE = ("Looking this host name up took longer than 1 s (its name servers did not answer): save again in a moment, "
        "or check the name.")


@pytest.mark.parametrize("field", ["smtp_host", "imap_host"])
def test_a_mail_server_whose_name_server_never_answers_is_a_form_error_at_the_deadline_with_the_form_as_typed(
        client, alice, email_channel, settings, silent_dns, field):
    settings.CHATNEXUS_MAIL_ALLOW_PRIVATE = False
    settings.CHATNEXUS_SMTP_TIMEOUT_S = 1
    dns = silent_dns("mail.silent.example")
    typed = email_data(email_channel, from_name="Acme Help Desk", **{"smtp_host": PUBLIC, "imap_host": "",
                                                                     field: "mail.silent.example"})
    client.force_login(alice)
    response = client.post(reverse("channels:bot", args=[email_channel.bot_id]),
                           {"channel": "email", **{f"email-{name}": value for name, value in typed.items()}})
    assert response.status_code == 400 and response.context["forms"]["email"].errors == {field: [LATE]}
    assert dns.still_waiting()
    page = response.content.decode()
    assert 'value="mail.silent.example"' in page and 'value="Acme Help Desk"' in page
    assert ChannelConfig.objects.get(id=email_channel.id).settings == email_channel.settings  # nothing saved


def test_a_webhook_url_whose_name_server_never_answers_is_a_form_error_at_the_deadline_with_the_form_as_typed(
        client, alice, acme_bot, settings, silent_dns):
    settings.CHATNEXUS_WEBHOOK_ALLOW_PRIVATE = False
    settings.CHATNEXUS_WEBHOOK_TIMEOUT_S = 1
    dns = silent_dns("hooks.silent.example")
    client.force_login(alice)
    response = save(client, acme_bot, webhook_url="https://hooks.silent.example/chatnexus", webhook_secret=SECRET)
    assert response.status_code == 400 and response.context["forms"]["api"].errors == {"webhook_url": [LATE]}
    assert dns.still_waiting()
    assert 'value="https://hooks.silent.example/chatnexus"' in response.content.decode()
    assert not ChannelConfig.objects.filter(bot=acme_bot, kind="api").exists()
