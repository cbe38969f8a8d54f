"""`manage.py demo` (what scripts/run.sh runs): the demo organisation, user and published bot,
safe to run again (it never publishes the user's draft) — and its website widget on, so the README's "Try it on a blank page"
shows the chat at once (it used to show a blank page until the widget settings were saved)."""
import pytest
from django.conf import settings
from django.core.management import call_command
from django.urls import reverse

from bots.models import Bot
from channels_app.models import ChannelConfig


@pytest.mark.django_db
def test_the_demo_bot_is_published_with_its_widget_on_and_running_it_again_changes_nothing(client):
    call_command("demo", stdout=open("/dev/null", "w"))
    bot = Bot.objects.get(organization__slug="demo-bikes")
    widget = ChannelConfig.objects.get(bot=bot, kind="widget")
    assert bot.published_version == 1 and widget.enabled and widget.organization_id == bot.organization_id

    Bot.objects.filter(id=bot.id).update(greeting="A draft greeting, not published")  # the user's draft
    call_command("demo", stdout=open("/dev/null", "w"))  # scripts/run.sh runs it at every start
    assert ChannelConfig.objects.filter(bot=bot).count() == 1 and Bot.objects.count() == 1
    bot = Bot.objects.get(id=bot.id)
    assert bot.published_version == 1 and bot.has_unpublished_changes  # the draft was not published behind their back

    # the widget script on the platform's own page (the try page) gets the bot's look
    response = client.get(reverse("channels:widget-config", args=[bot.public_key]), HTTP_ORIGIN=settings.PUBLIC_URL)
    assert response.status_code == 200 and response.json()["name"] == "Ava"
    client.login(username="demo", password="demo-password")
    tried = client.get(reverse("channels:widget-try", args=[bot.id])).content.decode()
    assert f'data-bot="{bot.public_key}"' in tried


@pytest.mark.django_db
def test_running_it_again_keeps_a_password_the_operator_changed(capsys):
    """scripts/run.sh runs it at every start: demo / demo-password must not come back as the owner."""
    from django.contrib.auth import get_user_model

    call_command("demo")
    demo = get_user_model().objects.get(username="demo")
    demo.set_password("an-operators-own-passphrase")
    demo.save()
    call_command("demo")
    demo.refresh_from_db()
    assert demo.check_password("an-operators-own-passphrase") and not demo.check_password("demo-password")
    assert "Log in demo / (the password you set)" in capsys.readouterr().out
