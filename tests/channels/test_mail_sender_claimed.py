"""An address someone confirmed for another organisation's email channel cannot be saved as a bot's:
compared as the channel stores addresses (lower case, the domain in IDNA), said without naming the
other organisation; and when two organisations confirm one address at once, one gets it. (A channel
that merely typed it, with or without an SMTP host, blocks nobody: test_mail_sender_squat.)"""
import threading

import pytest
from django.db import connection, connections, transaction
from django.test import Client
from django.urls import reverse

from bots.models import Organization
from channels_app.models import ChannelConfig
from tests.conftest import wait_for

from .conftest import INBOUND_SECRET
from .test_mail_sender_confirm import confirmation_link, platform_mail  # noqa: F401 - a fixture


def form(address, smtp_host=""):
    return {"channel": "email", "email-enabled": "on", "email-address": address, "email-inbound_secret": INBOUND_SECRET,
            "email-smtp_host": smtp_host, "email-smtp_port": "587", "email-imap_port": "993",
            "email-max_replies_per_sender_per_day": "5"}


def globex_has(globex, globex_bot, address):
    """Globex's channel with ``address``, confirmed by the link mailed to it."""
    return ChannelConfig.objects.create(organization=globex, bot=globex_bot, kind="email",
                                        settings={"address": address, "confirmed_address": address},
                                        secrets={"inbound_secret": "s" * 20})


@pytest.mark.parametrize("stored, typed", [
    ("support@globex.example", "Support@GLOBEX.example"),
    ("hilfe@xn--mller-shop-9db.de", "HILFE@Müller-Shop.de"),
    ("hilfe@müller-shop.de", "hilfe@xn--mller-shop-9db.de"),  # stored before addresses were in IDNA
])
def test_another_organisations_address_is_refused_without_naming_it(db, client, alice, acme_bot, globex, globex_bot,
                                                                    stored, typed):
    globex_has(globex, globex_bot, stored)
    client.force_login(alice)
    response = client.post(reverse("channels:bot", args=[acme_bot.id]), form(typed))
    assert response.status_code == 400
    assert response.context["forms"]["email"].errors["address"] == [
        "Another organisation's email channel on this platform already sends from this address. Use an address of your own."]
    assert "Globex" not in response.content.decode()
    assert not ChannelConfig.objects.filter(bot=acme_bot).exists()
    # an address of Acme's own is taken, and kept by a later save
    assert client.post(reverse("channels:bot", args=[acme_bot.id]), form("help@acme.example")).status_code == 302
    assert client.post(reverse("channels:bot", args=[acme_bot.id]), form("Help@acme.example")).status_code == 302


def test_two_organisations_confirming_one_address_at_once_get_it_once(transactional_db, alice, acme_bot, charlie,
                                                                      globex_bot, platform_mail):
    """Both channels saved the address (unconfirmed: neither blocks the other) and were mailed a link;
    both links followed at once wait for the address's lock, held here meanwhile; let go, the first
    confirms it and the second, seeing it confirmed, confirms nothing."""
    from channels_app.email.sender import claimed_elsewhere  # the lock a confirmation takes

    address = "shared@race.example"
    for user, bot in ((alice, acme_bot), (charlie, globex_bot)):
        client = Client()
        client.force_login(user)
        assert client.post(reverse("channels:bot", args=[bot.id]), form(address)).status_code == 302
    links = [confirmation_link(m["message"]) for m in platform_mail.messages]
    assert len(links) == 2
    holding, release = threading.Event(), threading.Event()
    responses = []

    def hold_the_address():
        with transaction.atomic():
            claimed_elsewhere(address, Organization.objects.create(name="Initech", slug="initech"))
            holding.set()
            release.wait(30)
        connection.close()

    def follow(link):
        responses.append(Client().post(link).status_code)  # whoever reads the mailbox: no sign-in
        connection.close()

    holder = threading.Thread(target=hold_the_address)
    holder.start()
    assert holding.wait(30)
    followers = [threading.Thread(target=follow, args=(link,)) for link in links]
    for follower in followers:
        follower.start()
    with connections["default"].cursor() as cursor:
        def waiting():
            cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
            return cursor.fetchone()[0] == 2
        wait_for(waiting, timeout=30, what="both confirmations waiting for the address")
    release.set()
    for thread in (holder, *followers):
        thread.join(30)
    assert sorted(responses) == [200, 400]
    confirmed = [c for c in ChannelConfig.objects.filter(kind="email") if c.settings.get("confirmed_address")]
    assert len(confirmed) == 1
