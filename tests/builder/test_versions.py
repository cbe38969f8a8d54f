"""Published versions: every publish is kept with who made it; the Versions tab says what each one
changed and how its replies were rated, and restores one into the draft exactly."""
import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from bots import services
from bots.models import ApiToken, Bot, BotVersion, KnowledgeItem, Message
from bots.versions import changes
from tests.platform.conftest import make_conversation

pytestmark = pytest.mark.django_db


def builder(client, bot):
    response = client.get(reverse("bots:builder", args=[bot.id]))
    assert response.status_code == 200
    return response


def test_each_publish_is_kept_and_a_restore_brings_it_back_exactly(acme_bot, alice):
    first = acme_bot.versions.get()
    assert first.number == 1 and first.config == acme_bot.draft_config() and first.published_by is None
    hours = acme_bot.knowledge.get()
    acme_bot.greeting, acme_bot.temperature = "Hey! Bikes?", 0.7
    acme_bot.save()
    hours.body = "We are open every day, 8am to 8pm."
    hours.save()
    KnowledgeItem.objects.create(bot=acme_bot, kind="doc", title="Returns", body="30 days, with the receipt.")
    second = acme_bot.publish(by=alice)
    assert (second.number, second.published_by, acme_bot.published_version) == (2, alice, 2)
    assert changes(first.config, second.config) == ["Greeting", "Temperature", "Knowledge: 1 added, 1 changed"]

    hours.delete()  # gone from the draft: the restore must bring it back under its own id
    acme_bot.restore(first)
    bot = Bot.objects.get(id=acme_bot.id)
    assert bot.draft_config() == first.config  # settings and knowledge, ids included
    assert bot.published_version == 2 and bot.published_config == second.config  # live is untouched
    assert bot.has_unpublished_changes
    third = bot.publish(by=alice)
    assert third.number == 3 and third.config == first.config
    assert changes(second.config, third.config) == ["Greeting", "Temperature", "Knowledge: 1 changed, 1 removed"]
    assert [v.number for v in bot.versions.all()] == [3, 2, 1]


def test_the_versions_tab_lists_changes_replies_and_ratings(as_alice, alice, acme_bot):
    acme_bot.instructions = "Always offer a test ride."
    acme_bot.save()
    as_alice.post(reverse("bots:publish", args=[acme_bot.id]), {"tab": "versions"})
    assert acme_bot.versions.get(number=2).published_by == alice
    conversation, inbound = make_conversation(acme_bot, thread="rated")
    for version, rating in [(1, 1), (1, -1), (2, -1), (2, None), (2, -1)]:
        reply, _ = services.record_reply(inbound, f"v{version} says hi", {"bot_version": version})
        inbound = services.receive(bot=acme_bot, channel="widget", thread_id="rated", text="again", answer=False).message
        Message.objects.filter(id=reply.id).update(rating=rating)
    acme_bot.greeting = "Hello there, rider!"
    acme_bot.save()

    page = builder(as_alice, acme_bot)
    rows = {row["version"].number: row for row in page.context["versions"]}
    assert (rows[1]["replies"], rows[1]["helpful"], rows[1]["not_helpful"]) == (2, 1, 1)
    assert (rows[2]["replies"], rows[2]["helpful"], rows[2]["not_helpful"]) == (3, 0, 2)
    assert rows[1]["changes"] == ["First version"] and rows[2]["changes"] == ["Instructions"]
    html = page.content.decode()
    assert 'id="draft-changes"' in html and "The draft changes</strong> Greeting" in html
    assert html.count("Restore into the draft") == 2  # neither version equals the draft
    assert 'data-tab="versions"' in html and 'class="badge on">live' in html


def test_a_manager_restores_from_the_tab_and_others_cannot(client, alice, acme_bot, bob, charlie, globex_bot):
    acme_bot.greeting = "Version two's greeting"
    acme_bot.save()
    acme_bot.publish()
    url = reverse("bots:version_restore", args=[acme_bot.id, 1])
    for user in (bob, charlie):  # an agent of Acme, the owner of Globex
        client.force_login(user)
        assert client.post(url).status_code == 404
    assert client.post(reverse("bots:version_restore", args=[globex_bot.id, 1])).status_code == 302  # his own: fine
    assert Bot.objects.get(id=acme_bot.id).greeting == "Version two's greeting"

    client.force_login(alice)
    assert client.post(reverse("bots:version_restore", args=[acme_bot.id, 9])).status_code == 404
    response = client.post(url)
    assert response.status_code == 302 and response["Location"].endswith("#versions")
    page = client.get(response["Location"].split("#")[0]).content.decode()
    assert "Version 1 is back in the draft. Publish to make it live again." in page
    bot = Bot.objects.get(id=acme_bot.id)
    assert bot.greeting == BotVersion.objects.get(bot=bot, number=1).config["greeting"] != "Version two's greeting"
    assert bot.published_config["greeting"] == "Version two's greeting"  # live until published
    assert client.get(reverse("bots:version_restore", args=[acme_bot.id, 1])).status_code == 405


def test_the_api_lists_versions_and_restores_one(alice, bob, charlie, acme_bot):
    def api(user):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {ApiToken.issue(user)}")
        return client

    client = api(alice)
    acme_bot.company = "Acme Cycles"
    acme_bot.save()
    assert client.post(f"/api/bots/{acme_bot.id}/publish/").json()["published_version"] == 2
    listed = client.get(f"/api/bots/{acme_bot.id}/versions/").json()
    assert [(v["number"], v["changes"], v["published_by"]) for v in listed] == [
        (2, ["Company"], alice.get_full_name() or alice.username), (1, ["First version"], None)]
    assert listed[1]["config"]["company"] == "Acme Bikes" and listed[0]["replies"] == 0
    restored = client.post(f"/api/bots/{acme_bot.id}/restore/", {"version": 1}, format="json")
    assert restored.status_code == 200 and restored.json()["company"] == "Acme Bikes"
    assert restored.json()["has_unpublished_changes"] is True
    assert client.post(f"/api/bots/{acme_bot.id}/restore/", {"version": 7}, format="json").status_code == 404
    assert client.post(f"/api/bots/{acme_bot.id}/restore/", {"version": "x"}, format="json").status_code == 400
    assert api(bob).get(f"/api/bots/{acme_bot.id}/versions/").status_code == 403  # an agent
    assert api(charlie).get(f"/api/bots/{acme_bot.id}/versions/").status_code == 404  # Globex


def test_upgrading_keeps_each_published_bots_live_config_as_its_version(acme_bot, globex):
    import importlib

    from django.apps import apps

    migration = importlib.import_module("bots.migrations.0012_bot_versions")
    never = Bot.objects.create(organization=globex, name="Draft only")
    acme_bot.publish()
    BotVersion.objects.all().delete()  # as before the upgrade
    migration.keep_current_versions(apps, None)
    [kept] = BotVersion.objects.all()
    assert (kept.bot, kept.number, kept.config) == (acme_bot, 2, Bot.objects.get(id=acme_bot.id).published_config)
    assert not never.versions.exists()
    assert version_rows_changes(acme_bot) == ["Earlier versions were not kept"]


def version_rows_changes(bot):
    from bots.versions import version_rows

    return version_rows(bot)[0]["changes"]


def test_a_form_saved_unchanged_from_a_browser_changes_nothing(as_alice, acme_bot):
    """Browsers send a textarea's line breaks as CRLF; the draft keeps LF, so saving the builder
    unchanged does not make 'unpublished changes' (it did: every multi-line field 'changed')."""
    from tests.builder.test_bot_pages import settings_data

    crlf = {field: getattr(acme_bot, field).replace("\n", "\r\n") for field in ("handoff_triggers", "topics_to_avoid")}
    assert "\r\n" in crlf["handoff_triggers"]  # the fixture's default triggers are several lines
    response = as_alice.post(reverse("bots:builder", args=[acme_bot.id]), settings_data(acme_bot, **crlf))
    assert response.status_code == 302
    bot = Bot.objects.get(id=acme_bot.id)
    assert not bot.has_unpublished_changes and "\r" not in bot.handoff_triggers
    faq = bot.knowledge.get()
    as_alice.post(reverse("bots:knowledge_edit", args=[bot.id, faq.id]), {"title": faq.title, "body": "Mon–Fri 9–6.\r\nSat 10–4."})
    assert KnowledgeItem.objects.get(id=faq.id).body == "Mon–Fri 9–6.\nSat 10–4."
    as_alice.post(reverse("bots:document_add", args=[bot.id]), {"title": "Returns", "text": "30 days.\r\nReceipt needed."})
    assert KnowledgeItem.objects.get(bot=bot, title="Returns").body == "30 days.\nReceipt needed."


@pytest.mark.parametrize("migration, new_fields", [
    ("0013_handoff_and_team_hours", ("handoff_message", "away_message")),
    ("0018_bot_no_text_message", ("no_text_message",)),
])
def test_upgrading_to_a_new_setting_marks_no_bot_changed(acme_bot, migration, new_fields):
    import importlib

    from django.apps import apps

    migration = importlib.import_module(f"bots.migrations.{migration}")
    old = {k: v for k, v in acme_bot.published_config.items() if k not in new_fields}
    Bot.objects.filter(id=acme_bot.id).update(published_config=old)
    BotVersion.objects.filter(bot=acme_bot).update(config=old)
    assert Bot.objects.get(id=acme_bot.id).has_unpublished_changes  # what the upgrade must not leave behind
    migration.publish_the_default(apps, None)
    bot = Bot.objects.get(id=acme_bot.id)
    assert not bot.has_unpublished_changes and bot.versions.get().config == bot.draft_config()
