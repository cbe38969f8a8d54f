"""The widget's per-address limits (channels_app/widget/ratelimit.py) on the real cache, through
``inbound.open_session`` and ``inbound.take_message`` as the consumer calls them, with the client
addresses a test server cannot have (several, IPv6).

Visitor tokens are free to mint, so one client can be any number of visitors: only its address
holds it back. An IPv6 host has a whole /64 to send from, so its address is its /64.
"""
import pytest

from bots.models import Message
from channels_app.widget import inbound, tokens
from tests.conftest import clear_cache

SHOP = "https://shop.example"
ATTACKER = "203.0.113.7"
VISITOR = "198.51.100.9"


@pytest.fixture
def widget(db, acme, acme_bot):
    """Acme's bot, its widget on the shop's site, low limits; counters from no earlier test."""
    from channels_app.models import ChannelConfig

    clear_cache()
    return ChannelConfig.objects.create(organization=acme, bot=acme_bot, kind="widget", settings={
        "allowed_origins": [SHOP], "connections_per_minute": 3, "ip_connections_per_minute": 5,
        "bot_connections_per_minute": 20, "ip_messages_per_minute": 2})


def connect(widget, address, token=""):
    return inbound.open_session(widget.bot.public_key, SHOP, token, address)


def test_one_address_with_tokens_of_its_own_cannot_spend_the_bots_connection_budget(widget):
    minted = [tokens.issue(widget.bot.public_key)[1] for _ in range(10)]
    attempts = [connect(widget, ATTACKER, token) for token in minted for _ in range(3)]  # 30 > the bot's 20
    opened = [a for a in attempts if isinstance(a, inbound.Session)]
    refused = [a for a in attempts if isinstance(a, inbound.Refusal)]
    assert 5 <= len(opened) < 10  # the address's 5 a minute (the window is an estimate), not the bot's 20
    assert refused and all(r.code == "rate_limited" and r.close_code == 4429 for r in refused)
    assert isinstance(connect(widget, VISITOR), inbound.Session)  # a real visitor still gets in


def test_the_addresses_of_one_ipv6_64_are_one_new_visitors_address(widget):
    attempts = [connect(widget, f"2001:db8:1:2::{i:x}") for i in range(1, 11)]
    opened = [a for a in attempts if isinstance(a, inbound.Session)]
    assert 3 <= len(opened) < 10  # connections_per_minute for a visitor without a token: the /64's
    assert isinstance(connect(widget, "2001:db8:1:3::1"), inbound.Session)  # the next /64: someone else


def test_the_addresses_of_one_ipv6_64_share_the_message_limit(widget):
    sessions = [connect(widget, f"2001:db8:1:2::{i:x}", tokens.issue(widget.bot.public_key)[1]) for i in range(1, 5)]
    answers = [inbound.take_message(s, {"type": "message", "id": "m1", "text": "hi", "email": ""}) for s in sessions]
    refused = [a for a in answers if isinstance(a, inbound.Refusal)]
    assert len(refused) == 2 and all(r.code == "rate_limited" for r in refused)  # ip_messages_per_minute: 2
    assert Message.objects.count() == 2
