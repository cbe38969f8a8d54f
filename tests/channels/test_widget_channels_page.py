"""The per-bot Channels page: managers of the bot's organisation only, settings saved
per channel, secrets stored encrypted and never rendered back."""
import html

import pytest
from django.urls import reverse

from channels_app.models import ChannelConfig

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
TOKEN = "5ec2e7de5ec2e7de5ec2e7de5ec2e7de"  # a Twilio auth token: 32 hex digits, never rendered


def url(bot):
    return reverse("channels:bot", args=[bot.id])


def test_it_shows_setup_steps_and_the_snippet_to_a_manager(client, alice, acme_bot):
    client.force_login(alice)
    response = client.get(url(acme_bot))
    assert response.status_code == 200
    body = html.unescape(response.content.decode())  # the snippet is shown escaped, as text
    assert f'data-bot="{acme_bot.public_key}"' in body and "/static/chatnexus/widget.js" in body
    for section in ('id="widget"', 'id="whatsapp"', 'id="email"'):
        assert section in body


def test_it_is_404_for_another_organisation_and_for_agents(client, charlie, bob, acme_bot):
    client.force_login(charlie)  # Globex's owner
    assert client.get(url(acme_bot)).status_code == 404
    assert client.post(url(acme_bot), {"channel": "widget"}).status_code == 404
    client.force_login(bob)  # Acme's agent: inbox only
    assert client.get(url(acme_bot)).status_code == 404
    assert not ChannelConfig.objects.exists()


def test_it_saves_widget_settings_and_rejects_a_bad_origin(client, alice, acme_bot):
    client.force_login(alice)
    data = {
        "channel": "widget", "widget-enabled": "on", "widget-allowed_origins": "https://Shop.Example.com/\nhttp://localhost:3000",
        "widget-position": "left", "widget-prechat_email": "on", "widget-connections_per_minute": "5",
        "widget-messages_per_minute": "3", "widget-bot_connections_per_minute": "100", "widget-bot_messages_per_minute": "50",
        "widget-max_message_chars": "500", "widget-language": "de", "widget-max_upload_mb": "3",
    }  # fmt: skip
    response = client.post(url(acme_bot), data)
    assert response.status_code == 302 and response["Location"].endswith("#widget")
    # "saved" shows in the widget's own section, where the page opens (not in a flash out of view at the top)
    page = client.get(url(acme_bot)).content.decode()
    assert '<ul class="flash channel-notes" id="widget-notes" role="status"><li class="success">Website widget settings saved.</li>' in page
    assert "settings saved" not in client.get(url(acme_bot)).content.decode()  # said once
    config = ChannelConfig.objects.get(bot=acme_bot, kind="widget")
    assert config.enabled and config.organization_id == acme_bot.organization_id
    assert config.settings["allowed_origins"] == ["https://shop.example.com", "http://localhost:3000"]
    assert config.settings["position"] == "left" and config.settings["prechat_email"] is True
    assert config.settings["messages_per_minute"] == 3 and config.settings["max_message_chars"] == 500
    assert config.settings["language"] == "de"
    assert config.settings["ip_connections_per_minute"] == 60  # left out: the default
    client.post(url(acme_bot), {**data, "widget-ip_connections_per_minute": "12"})
    config.refresh_from_db()
    assert config.settings["ip_connections_per_minute"] == 12
    assert config.settings["file_uploads"] is False and config.settings["max_upload_mb"] == 3  # the box left unticked
    assert client.post(url(acme_bot), {**data, "widget-max_upload_mb": "26"}).status_code == 400  # over 25 MB
    assert client.post(url(acme_bot), {**data, "widget-language": "xx"}).status_code == 400  # not one we speak

    response = client.post(url(acme_bot), {**data, "widget-allowed_origins": "https://shop.example.com/cart"})
    assert response.status_code == 400
    assert "Not a website origin" in response.content.decode()
    config.refresh_from_db()
    assert config.settings["allowed_origins"] == ["https://shop.example.com", "http://localhost:3000"]


def test_origins_separated_by_commas_are_each_saved_and_a_wildcard_is_refused_in_words(client, alice, acme_bot):
    """"a, b" was saved as "a," (never matching) and "b"; "https://*.example.com" was saved and never matched."""
    client.force_login(alice)
    data = {
        "channel": "widget", "widget-enabled": "on", "widget-position": "right", "widget-language": "auto",
        "widget-connections_per_minute": "20", "widget-messages_per_minute": "10",
        "widget-bot_connections_per_minute": "600", "widget-bot_messages_per_minute": "120",
        "widget-max_message_chars": "2000", "widget-max_upload_mb": "5",
    }  # fmt: skip
    typed = "https://shop.example.com, https://www.shop.example.com,\nhttp://localhost:3000"
    assert client.post(url(acme_bot), {**data, "widget-allowed_origins": typed}).status_code == 302
    saved = ["https://shop.example.com", "https://www.shop.example.com", "http://localhost:3000"]
    assert ChannelConfig.objects.get(bot=acme_bot, kind="widget").settings["allowed_origins"] == saved

    response = client.post(url(acme_bot), {**data, "widget-allowed_origins": "https://*.shop.example.com, https://exa mple.com"})
    assert response.status_code == 400
    assert response.context["forms"]["widget"].errors["allowed_origins"] == [
        "Not a website origin (like https://shop.example.com): https://*.shop.example.com, mple.com "
        "(wildcards are not supported: list each site)"]
    assert ChannelConfig.objects.get(bot=acme_bot, kind="widget").settings["allowed_origins"] == saved


def test_it_never_renders_secrets_back(client, alice, acme_bot):
    client.force_login(alice)
    data = {
        "channel": "whatsapp", "whatsapp-enabled": "on", "whatsapp-account_sid": ACCOUNT_SID,
        "whatsapp-auth_token": TOKEN, "whatsapp-phone_number": "whatsapp:+14155238886",
    }  # fmt: skip
    assert client.post(url(acme_bot), data).status_code == 302
    config = ChannelConfig.objects.get(bot=acme_bot, kind="whatsapp")
    assert config.secrets == {"auth_token": TOKEN}
    assert config.settings["phone_number"] == "whatsapp:+14155238886"

    body = client.get(url(acme_bot)).content.decode()
    assert TOKEN not in body
    assert "Auth token: <strong class=\"secret-set\">set</strong>" in body
    assert f"/channels/whatsapp/{config.key}/" in body  # the webhook URL to paste into Twilio
    assert "Remove the stored auth token" in body and "Remove the stored SMTP password" in body  # acronyms kept

    # Saving again with the secret left blank keeps it; a failed form does not echo it either.
    assert client.post(url(acme_bot), {**data, "whatsapp-auth_token": ""}).status_code == 302
    config.refresh_from_db()
    assert config.secrets == {"auth_token": TOKEN}
    response = client.post(url(acme_bot), {**data, "whatsapp-phone_number": "+1 nope"})
    assert response.status_code == 400 and TOKEN not in response.content.decode()


def test_it_stores_email_secrets_encrypted(client, alice, acme_bot):
    from django.db import connection

    client.force_login(alice)
    data = {
        "channel": "email", "email-enabled": "on", "email-address": "help@acme.example", "email-smtp_host": "127.0.0.1",
        "email-smtp_port": "25", "email-smtp_password": "smtp-pass-123", "email-inbound_secret": "hook-secret-456",
        "email-imap_port": "993", "email-imap_folder": "INBOX", "email-max_replies_per_sender_per_day": "3",
    }  # fmt: skip
    assert client.post(url(acme_bot), data).status_code == 302
    config = ChannelConfig.objects.get(bot=acme_bot, kind="email")
    assert config.secrets == {"smtp_password": "smtp-pass-123", "inbound_secret": "hook-secret-456"}
    with connection.cursor() as cursor:
        cursor.execute("SELECT secrets FROM channels_app_channelconfig WHERE id = %s", [config.id])
        raw = cursor.fetchone()[0]
    assert "smtp-pass-123" not in raw and "hook-secret-456" not in raw
    body = client.get(url(acme_bot)).content.decode()
    assert "smtp-pass-123" not in body and "hook-secret-456" not in body
    assert f"/channels/email/{config.key}/inbound/" in body


@pytest.mark.parametrize("channel", ["", "telegram"])
def test_it_rejects_an_unknown_channel(client, alice, acme_bot, channel):
    client.force_login(alice)
    assert client.post(url(acme_bot), {"channel": channel}).status_code == 400
    assert not ChannelConfig.objects.exists()


def test_each_channel_says_whether_it_is_on_and_try_it_waits_for_a_saved_widget(client, alice, acme_bot):
    client.force_login(alice)
    try_url = reverse("channels:widget-try", args=[acme_bot.id])
    page = client.get(url(acme_bot)).content.decode()
    for kind in ("widget", "whatsapp", "email"):
        assert f'id="{kind}-state">not set up<' in page
    assert try_url not in page and 'id="widget-try-later"' in page
    tried = client.get(try_url).content.decode()  # the script would find no widget: the page says why
    assert 'id="widget-off"' in tried and "widget.js" not in tried

    config = ChannelConfig.objects.create(organization=acme_bot.organization, bot=acme_bot, kind="widget")
    page = client.get(url(acme_bot)).content.decode()
    assert 'id="widget-state">on<' in page and f'href="{try_url}"' in page
    tried = client.get(try_url).content.decode()
    assert f'data-bot="{acme_bot.public_key}"' in tried and 'id="widget-off"' not in tried

    config.enabled = False
    config.save()
    assert 'id="widget-state">off<' in client.get(url(acme_bot)).content.decode()
    assert 'id="widget-off"' in client.get(try_url).content.decode()
