"""Publish makes live the draft the admin reviewed: the builder's Publish form carries a stamp of
the draft its page showed (settings and knowledge), and a draft changed since — another admin's
save, knowledge edit or version restore — is refused with a message, nothing published."""
import re

import pytest
from django.test import Client
from django.urls import reverse

from bots.models import Bot, BotVersion, KnowledgeItem

from .test_bot_pages import settings_data

pytestmark = pytest.mark.django_db


def publish_stamp(client, bot):
    page = client.get(reverse("bots:builder", args=[bot.id])).content.decode()
    form = re.search(r'<form[^>]*id="publish-form".*?</form>', page, re.S).group(0)
    return re.search(r'name="publish-draft_stamp" value="([0-9a-f]+)"', form).group(1)


def another_admin(alice):
    client = Client()
    client.force_login(alice)  # the same rights from another browser (or a colleague's)
    return client


def _saves_settings(client, bot):
    client.post(reverse("bots:builder", args=[bot.id]), settings_data(bot, greeting="Prices doubled today!"))


def _adds_knowledge(client, bot):
    client.post(reverse("bots:faq_add", args=[bot.id]), {"title": "Do you repair e-bikes?", "body": "No, never."})


def _restores_a_version(client, bot):
    client.post(reverse("bots:version_restore", args=[bot.id, 1]))


@pytest.mark.parametrize("change", [_saves_settings, _adds_knowledge, _restores_a_version],
                         ids=["settings saved", "knowledge added", "version restored"])
def test_a_publish_from_a_page_opened_before_the_draft_changed_publishes_nothing(as_alice, alice, acme_bot, change):
    acme_bot.name = "Avery"
    acme_bot.save()
    acme_bot.publish()  # version 2: a version 1 to restore differs from the draft
    reviewed = publish_stamp(as_alice, acme_bot)
    live = Bot.objects.get(id=acme_bot.id).published_config

    change(another_admin(alice), acme_bot)
    draft = Bot.objects.get(id=acme_bot.id).draft_config()
    assert draft != live  # the change is in the draft

    response = as_alice.post(reverse("bots:publish", args=[acme_bot.id]),
                             {"tab": "persona", "publish-draft_stamp": reviewed}, follow=True)
    bot = Bot.objects.get(id=acme_bot.id)
    assert (bot.published_version, bot.published_config) == (2, live)  # nothing went live
    assert BotVersion.objects.filter(bot=bot).count() == 2
    page = response.content.decode()
    assert "Nothing was published: the draft was changed" in page
    assert "Against the live version the draft now changes:" in page

    # the page it lands on shows the draft as it is now: reviewed there, it publishes
    again = as_alice.post(reverse("bots:publish", args=[acme_bot.id]),
                          {"tab": "persona", "publish-draft_stamp": publish_stamp(as_alice, acme_bot)})
    assert again.status_code == 302
    bot = Bot.objects.get(id=acme_bot.id)
    assert (bot.published_version, bot.published_config) == (3, draft)


def test_a_publish_of_the_reviewed_draft_goes_live(as_alice, acme_bot):
    KnowledgeItem.objects.create(bot=acme_bot, kind="doc", title="Returns", body="30 days, with the receipt.")
    stamp = publish_stamp(as_alice, acme_bot)
    response = as_alice.post(reverse("bots:publish", args=[acme_bot.id]),
                             {"tab": "knowledge", "publish-draft_stamp": stamp})
    assert response.status_code == 302 and response["Location"].endswith("#knowledge")
    bot = Bot.objects.get(id=acme_bot.id)
    assert bot.published_version == 2 and not bot.has_unpublished_changes
