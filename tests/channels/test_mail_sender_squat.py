"""Only a confirmation keeps an address from another organisation. A channel that merely typed it (an
open sign-up typing support@bigco.com, saved turned off and never confirmed, or beside an SMTP host
of any name) blocks nobody: the real owner saves and confirms it, and the squatter's channel keeps
sending From the platform's address with Reply-To the typed one (inbound mail finds a channel by its
key, not this address) and can no longer confirm it."""
import pytest
from django.test import Client
from django.urls import reverse

from channels_app.email import sender
from channels_app.models import ChannelConfig

from .test_mail_sender_claimed import form
from .test_mail_sender_confirm import PLATFORM, answer, confirmation_link, platform_mail  # noqa: F401 - a fixture

pytestmark = pytest.mark.django_db

ADDRESS = "help@acme.example"
CLAIMED = sender.CLAIMED


def signed_in(user):
    client = Client()
    client.force_login(user)
    return client


def save(client, bot, data):
    response = client.post(reverse("channels:bot", args=[bot.id]), data)
    return response.status_code, response.context and response.context["forms"]["email"].errors.get("address")


def test_an_address_typed_but_never_confirmed_blocks_nobody(alice, acme_bot, charlie, globex_bot, platform_mail):
    squatter, owner = signed_in(charlie), signed_in(alice)
    squatting = form(ADDRESS)
    squatting.pop("email-enabled")  # saved turned off
    assert save(squatter, globex_bot, squatting) == (302, None)
    [squatters_link] = [confirmation_link(m["message"]) for m in platform_mail.messages]
    platform_mail.messages.clear()

    assert save(owner, acme_bot, form(ADDRESS)) == (302, None)  # was refused: the squatter had it
    [asked] = platform_mail.messages
    assert asked["to"] == [ADDRESS]
    assert owner.post(confirmation_link(asked["message"])).status_code == 200
    platform_mail.messages.clear()
    answer(acme_bot, "q1@example.com")
    assert platform_mail.messages[0]["from"] == ADDRESS

    # the squatter's channel keeps the address, unconfirmed: its mail goes From the platform
    squatters = ChannelConfig.objects.get(bot=globex_bot, kind="email")
    assert squatters.settings["address"] == ADDRESS and sender.needs_confirmation(squatters)
    assert sender.sender(squatters, ADDRESS) == (f"Gus <{PLATFORM}>", [f"Gus <{ADDRESS}>"])
    # its link, clicked by someone at the address, confirms nothing now that Acme sends as it
    refused = Client().post(squatters_link)
    assert refused.status_code == 400
    assert "already sends from this address: nothing confirmed." in refused.content.decode()
    assert not sender.confirmed(ChannelConfig.objects.get(bot=globex_bot, kind="email"))
    # its other settings still save
    assert save(squatter, globex_bot, {**squatting, "email-from_name": "Gus"}) == (302, None)


def test_an_smtp_host_typed_beside_the_address_blocks_nobody(alice, acme_bot, globex, globex_bot):
    """Any host name may be saved (one that does not resolve, no login, the channel off): it proves
    nothing, so it reserves nothing."""
    ChannelConfig.objects.create(organization=globex, bot=globex_bot, kind="email", enabled=False,
                                 settings={"address": ADDRESS, "smtp_host": "no-such-host.invalid"},
                                 secrets={"inbound_secret": "s" * 20})
    assert save(signed_in(alice), acme_bot, form("Help@ACME.example")) == (302, None)


def test_a_confirmed_claim_still_blocks(alice, acme_bot, globex, globex_bot):
    ChannelConfig.objects.create(organization=globex, bot=globex_bot, kind="email", enabled=False,
                                 settings={"address": ADDRESS, "confirmed_address": ADDRESS},
                                 secrets={"inbound_secret": "s" * 20})
    assert save(signed_in(alice), acme_bot, form("Help@ACME.example")) == (400, [CLAIMED])
    assert not ChannelConfig.objects.filter(bot=acme_bot).exists()
