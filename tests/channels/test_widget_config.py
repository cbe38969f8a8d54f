"""The widget's public config endpoint (CORS per allow-list), signed visitor tokens,
and origin normalisation."""
import pytest
from django.urls import reverse

from channels_app.models import ChannelConfig
from channels_app.widget import tokens
from channels_app.widget.options import normalize_origin

SHOP = "https://shop.example.com"


@pytest.fixture
def widget(acme, acme_bot):
    return ChannelConfig.objects.create(
        organization=acme, bot=acme_bot, kind="widget", settings={"allowed_origins": [SHOP], "position": "left"}
    )


def config_url(bot):
    return reverse("channels:widget-config", args=[bot.public_key])


def test_it_serves_the_published_look_to_an_allowed_origin(client, widget, acme_bot):
    acme_bot.name = "Draft name, not published"
    acme_bot.save()
    response = client.get(config_url(acme_bot), HTTP_ORIGIN=SHOP)
    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == SHOP
    assert "Origin" in response["Vary"]
    data = response.json()
    assert data["name"] == "Ava" and data["position"] == "left" and data["greeting"] == "Hi! How can I help you today?"
    assert data["prechat_email"] is False and data["max_message_chars"] == 2000
    assert set(data) == {"name", "avatar_color", "greeting", "position", "prechat_email", "max_message_chars", "handoff",
                         "language", "suggestions", "uploads", "max_upload_mb", "accept", "team_away"}
    assert data["team_away"] is False  # no team hours set: always staffed
    assert data["accept"].split(",")[:6] == ["image/jpeg", "image/png", "image/gif", "image/webp", "application/pdf",
                                             "text/plain"]  # the file chooser offers what the upload takes
    assert data["language"] == "auto"


@pytest.mark.parametrize("stored,served", [("de", "de"), ("auto", "auto"), ("klingon", "auto"), (None, "auto")])
def test_it_serves_a_known_widget_language_only(client, widget, acme_bot, stored, served):
    widget.settings["language"] = stored
    widget.save()
    assert client.get(config_url(acme_bot), HTTP_ORIGIN=SHOP).json()["language"] == served


def test_it_says_when_the_team_is_away(client, widget, acme_bot):
    from django.utils import timezone

    from bots.hours import DAYS
    from bots.models import Organization

    today = timezone.now().weekday()
    Organization.objects.filter(id=acme_bot.organization_id).update(team_hours={DAYS[(today + 3) % 7]: ["09:00", "10:00"]})
    assert client.get(config_url(acme_bot), HTTP_ORIGIN=SHOP).json()["team_away"] is True
    Organization.objects.filter(id=acme_bot.organization_id).update(team_hours={d: ["00:00", "00:00"] for d in DAYS})
    assert client.get(config_url(acme_bot), HTTP_ORIGIN=SHOP).json()["team_away"] is False


def test_it_refuses_another_origin_without_cors(client, widget, acme_bot):
    response = client.get(config_url(acme_bot), HTTP_ORIGIN="https://evil.example")
    assert response.status_code == 403
    assert "Access-Control-Allow-Origin" not in response
    assert "not allowed" in response.json()["error"]


def test_it_is_404_without_an_enabled_widget(client, widget, acme_bot, globex_bot):
    assert client.get(config_url(globex_bot), HTTP_ORIGIN=SHOP).status_code == 404
    widget.enabled = False
    widget.save()
    assert client.get(config_url(acme_bot), HTTP_ORIGIN=SHOP).status_code == 404
    assert client.post(config_url(acme_bot), HTTP_ORIGIN=SHOP).status_code == 405


def test_it_signs_visitor_tokens_per_bot():
    visitor, token = tokens.issue("bot_a")
    assert tokens.verify("bot_a", token) == visitor
    assert tokens.verify("bot_b", token) is None  # another bot's token
    assert tokens.verify("bot_a", token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert tokens.verify("bot_a", "") is None and tokens.verify("bot_a", "x" * 600) is None
    from django.core import signing

    forged = signing.dumps({"b": "bot_a", "v": "v_someone_else"}, salt="another-salt")
    assert tokens.verify("bot_a", forged) is None


@pytest.mark.parametrize(
    "value, expected",
    [
        ("HTTPS://Shop.Example.com/", "https://shop.example.com"),
        ("https://shop.example.com:443", "https://shop.example.com"),
        ("http://localhost:3000", "http://localhost:3000"),
        ("https://shop.example.com/cart", ""),
        ("ftp://shop.example.com", ""),
        ("shop.example.com", ""),
        ("https://user@shop.example.com", ""),
        ("https://shop.example.com:99999", ""),
        ("null", ""),
        ("https://Müller-Shop.de/", "https://xn--mller-shop-9db.de"),  # as browsers send it: punycode
        ("https://xn--mller-shop-9db.de", "https://xn--mller-shop-9db.de"),
        ("https://müller..de", ""),
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("http://[::1]:3000", "http://[::1]:3000"),
        # a host no browser sends: saved, it never matched an Origin
        ("https://shop.example.com,", ""),  # a comma-separated list's first entry
        ("https://*.shop.example.com", ""),  # a wildcard
        ("https://exa mple.com", ""),
        ("https://-shop.example.com", ""),
        ("https://shop.example.123", ""),  # all digits at the end: an IPv4 address, and not one
        ("http://[fe80::1%25eth0]", ""),  # an IPv6 zone: never in an Origin
    ],
)
def test_it_normalises_origins(value, expected):
    assert normalize_origin(value) == expected


@pytest.mark.parametrize("stored", ["https://müller-shop.de", "https://xn--mller-shop-9db.de"])
def test_a_site_with_letters_beyond_ascii_is_allowed_under_the_origin_browsers_send(stored):
    from channels_app.widget.options import origin_allowed

    assert origin_allowed({"allowed_origins": [stored]}, "https://xn--mller-shop-9db.de")
    assert not origin_allowed({"allowed_origins": [stored]}, "https://muller-shop.de")


def test_the_widget_has_every_word_in_every_language_it_offers():
    import re
    from pathlib import Path

    from channels_app.widget.options import LANGUAGES

    source = (Path(__file__).resolve().parents[2] / "static/chatnexus/widget.js").read_text()
    table = source[source.index("var WORDS = {"):source.index("function language()")]
    parts = re.split(r"\n    (\w\w): \{", table)[1:]  # code, its words, code, its words...
    words = {code: set(re.findall(r"(\w+): \"", body)) for code, body in zip(parts[::2], parts[1::2])}
    assert set(words) == {code for code, _ in LANGUAGES if code != "auto"}  # the builder offers what the widget has
    assert len(words["en"]) >= 20 and all(keys == words["en"] for keys in words.values())
