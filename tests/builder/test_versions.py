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


def stored_anywhere(marker: str) -> bool:
    """Whether ``marker`` is anywhere in the database, as a backup (``dumpdata``) would have it."""
    from io import StringIO

    from django.core.management import call_command

    dump = StringIO()
    call_command("dumpdata", stdout=dump)
    return marker in dump.getvalue()


def test_deleting_a_document_removes_it_from_every_version(as_alice, alice, acme_bot):
    """A deleted document lived on in every version published with it (and a restore brought it
    back). Deleting is for good now: from the draft, the live config and each version, which keeps
    everything else and says what went; a restore brings the version back without it."""
    acme_bot.greeting = "Hello, rider!"  # leave the settings of the versions apart
    acme_bot.save()
    doc = KnowledgeItem.objects.create(bot=acme_bot, kind="doc", title="Warranty ZX-FIRST-41",
                                       body="Frames: lifetime. Code ZX-FIRST-41.")
    second = acme_bot.publish(by=alice)
    doc.body = "Frames: ten years. Code ZX-SECOND-41."
    doc.save()
    page = KnowledgeItem.objects.create(bot=acme_bot, kind="doc", title="Fitting", body="Book a fitting online.",
                                        source_url="https://example.com/fitting")  # a web page: kept
    acme_bot.instructions = "Offer a test ride."
    acme_bot.save()
    third = acme_bot.publish(by=alice)
    doc.body = "Frames: five years. Code ZX-DRAFT-41."  # the draft's own text, never published
    doc.save()
    first = acme_bot.versions.get(number=1)
    before = {v.number: v.config for v in (first, second, third)}
    assert stored_anywhere("ZX-FIRST-41") and stored_anywhere("ZX-SECOND-41")

    response = as_alice.post(reverse("bots:knowledge_delete", args=[acme_bot.id, doc.id]))
    assert response.status_code == 302
    for marker in ("ZX-FIRST-41", "ZX-SECOND-41", "ZX-DRAFT-41"):
        assert not stored_anywhere(marker), marker
    bot = Bot.objects.get(id=acme_bot.id)
    assert [item["id"] for item in bot.published_config["knowledge"]] == [first.config["knowledge"][0]["id"], page.id]
    assert not bot.has_unpublished_changes  # the draft and the live bot lost the same document
    for version in bot.versions.all():  # everything else kept: settings, the other knowledge
        old = before[version.number]
        kept = [item for item in old["knowledge"] if item["id"] != doc.id]
        deleted = {"knowledge_deleted": 1} if len(kept) < len(old["knowledge"]) else {}
        assert version.config == {**old, "knowledge": kept, **deleted}
    rows = {row["version"].number: row["changes"] for row in builder(as_alice, bot).context["versions"]}
    assert rows == {1: ["First version"], 2: ["Greeting", "Knowledge deleted since: 1 item"],
                    3: ["Instructions", "Knowledge: 1 added", "Knowledge deleted since: 1 item"]}
    assert builder(as_alice, bot).content.decode().count("Restore into the draft") == 2  # version 3 is the draft

    as_alice.post(reverse("bots:version_restore", args=[bot.id, 2]))
    restored = Bot.objects.get(id=bot.id)
    assert restored.greeting == "Hello, rider!" and restored.instructions == ""
    assert list(restored.knowledge.values_list("title", flat=True)) == ["What are your opening hours?"]
    restored.publish(by=alice)
    assert not stored_anywhere("ZX-FIRST-41") and not KnowledgeItem.objects.filter(id=doc.id).exists()


def test_deleting_knowledge_through_the_api_is_for_good_too(alice, acme_bot):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {ApiToken.issue(alice)}")
    faq = acme_bot.knowledge.get()
    faq.body = "Open 9 to 6. Ask for code QX-HOURS-77."
    faq.save()
    acme_bot.publish(by=alice)
    assert stored_anywhere("QX-HOURS-77")
    assert client.delete(f"/api/knowledge/{faq.id}/").status_code == 204
    assert not stored_anywhere("QX-HOURS-77") and not stored_anywhere("We are open Monday to Friday")
    listed = client.get(f"/api/bots/{acme_bot.id}/versions/").json()
    assert [(v["number"], v["changes"]) for v in listed] == [
        (2, ["Nothing: published again unchanged", "Knowledge deleted since: 1 item"]),
        (1, ["First version", "Knowledge deleted since: 1 item"])]
    assert all(v["config"]["knowledge"] == [] and "knowledge_deleted" not in v["config"] for v in listed)
    restored = client.post(f"/api/bots/{acme_bot.id}/restore/", {"version": 1}, format="json")
    assert restored.status_code == 200 and not KnowledgeItem.objects.filter(bot=acme_bot).exists()


def test_the_django_admin_deletes_knowledge_for_good_too(admin_client, acme_bot):
    faq = acme_bot.knowledge.get()
    doc = KnowledgeItem.objects.create(bot=acme_bot, kind="doc", title="Staff notes", body="Code AX-ADMIN-12.")
    acme_bot.publish()
    response = admin_client.post(f"/admin/bots/knowledgeitem/{doc.id}/delete/", {"post": "yes"})
    assert response.status_code == 302 and not stored_anywhere("AX-ADMIN-12")
    response = admin_client.post("/admin/bots/knowledgeitem/", {"action": "delete_selected", "_selected_action": [faq.id],
                                                                 "post": "yes"})
    assert response.status_code == 302 and not stored_anywhere("We are open Monday to Friday")
    assert [v.config["knowledge_deleted"] for v in acme_bot.versions.order_by("number")] == [1, 2]


def test_an_item_stays_with_the_bot_it_was_made_for(alice, acme, acme_bot, admin_client):
    """Moving an item to another bot left it in the versions of the first (a restore brought it
    back): the API and the admin no longer change an item's bot."""
    other = Bot.objects.create(organization=acme, name="Other")
    faq = acme_bot.knowledge.get()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {ApiToken.issue(alice)}")
    response = client.patch(f"/api/knowledge/{faq.id}/", {"bot": other.id}, format="json")
    assert response.status_code == 400 and "bot" in response.json()
    response = client.patch(f"/api/knowledge/{faq.id}/", {"bot": acme_bot.id, "body": "Open 9 to 5."}, format="json")
    assert response.status_code == 200 and response.json()["bot"] == acme_bot.id  # the same bot again: fine
    page = admin_client.get(f"/admin/bots/knowledgeitem/{faq.id}/change/").content.decode()
    assert 'name="bot"' not in page  # shown, not editable
    response = admin_client.post(f"/admin/bots/knowledgeitem/{faq.id}/change/",
                                 {"bot": other.id, "kind": "faq", "title": faq.title, "body": "Open 9 to 4."})
    assert response.status_code == 302
    assert KnowledgeItem.objects.get(id=faq.id).bot_id == acme_bot.id
    assert KnowledgeItem.objects.get(id=faq.id).body == "Open 9 to 4."


def test_deleting_an_item_moved_before_cleans_the_bot_it_came_from(alice, acme, acme_bot, globex_bot):
    """An item moved between bots (as the API and the admin once allowed) is in the live config and
    versions of the bot it came from: deleting it cleans every bot of its organisation, and only
    of its organisation."""
    doc = KnowledgeItem.objects.create(bot=acme_bot, kind="doc", title="Codes", body="Code MV-FIRST-93.")
    acme_bot.publish(by=alice)
    other = Bot.objects.create(organization=acme, name="Other")
    KnowledgeItem.objects.filter(id=doc.id).update(bot=other, body="Code MV-MOVED-93.")
    other.publish(by=alice)
    globex_version = globex_bot.versions.get()  # another organisation's config naming the same id: not ours to touch
    globex_version.config = {**globex_version.config, "knowledge": [{"id": doc.id, "kind": "doc", "title": "Theirs",
                                                                     "body": "Code GX-THEIRS-93."}]}
    globex_version.save()
    assert stored_anywhere("MV-FIRST-93") and stored_anywhere("MV-MOVED-93")

    Bot.objects.get(id=other.id).delete_knowledge(KnowledgeItem.objects.get(id=doc.id), by=alice)
    assert not stored_anywhere("MV-FIRST-93") and not stored_anywhere("MV-MOVED-93")
    first = Bot.objects.get(id=acme_bot.id)
    assert [item["title"] for item in first.published_config["knowledge"]] == ["What are your opening hours?"]
    assert [v.config.get("knowledge_deleted") for v in first.versions.order_by("number")] == [None, 1]
    first.restore(first.versions.get(number=2), by=alice)
    assert not KnowledgeItem.objects.filter(id=doc.id).exists() and not stored_anywhere("MV-FIRST-93")
    assert stored_anywhere("GX-THEIRS-93") and "knowledge_deleted" not in globex_bot.versions.get().config


def test_a_restore_does_not_bring_back_what_was_deleted_after_its_version_was_loaded(alice, acme_bot):
    """A restore request loads the version, then a deletion commits, then the restore goes on: the
    version is read again under the bot's lock, so the item stays deleted."""
    doc = KnowledgeItem.objects.create(bot=acme_bot, kind="doc", title="Codes", body="Code RS-LOADED-58.")
    acme_bot.publish(by=alice)
    loaded = BotVersion.objects.get(bot=acme_bot, number=2)  # the restore view has it
    Bot.objects.get(id=acme_bot.id).delete_knowledge(KnowledgeItem.objects.get(id=doc.id), by=alice)
    assert not stored_anywhere("RS-LOADED-58")
    Bot.objects.get(id=acme_bot.id).restore(loaded, by=alice)
    assert not KnowledgeItem.objects.filter(id=doc.id).exists() and not stored_anywhere("RS-LOADED-58")
    assert list(acme_bot.knowledge.values_list("title", flat=True)) == ["What are your opening hours?"]


def test_a_restore_waits_for_a_deletion_in_progress(transactional_db, alice, acme_bot, monkeypatch):
    """A restore that starts while a deletion has not committed yet waits for it (the bot's row
    lock, taken before the version is read again) and restores the version without the item."""
    import threading

    from django.db import connection

    from bots import audit

    doc = KnowledgeItem.objects.create(bot=acme_bot, kind="doc", title="Codes", body="Code RS-WAIT-58.")
    acme_bot.publish(by=alice)
    loaded = BotVersion.objects.get(bot=acme_bot, number=2)
    deleting, release = threading.Event(), threading.Event()
    record = audit.record

    def record_then_pause(*args, **kwargs):  # the deletion's last step, inside its transaction
        record(*args, **kwargs)
        if threading.current_thread() is not threading.main_thread():
            deleting.set()
            release.wait(10)

    monkeypatch.setattr(audit, "record", record_then_pause)

    def delete():
        try:
            Bot.objects.get(id=acme_bot.id).delete_knowledge(KnowledgeItem.objects.get(id=doc.id), by=alice)
        finally:
            connection.close()

    deleter = threading.Thread(target=delete)
    deleter.start()
    try:
        assert deleting.wait(10)
        threading.Timer(0.5, release.set).start()  # commits while the restore below waits (or before it starts)
        Bot.objects.get(id=acme_bot.id).restore(loaded, by=alice)
    finally:
        release.set()
        deleter.join()
    assert not KnowledgeItem.objects.filter(id=doc.id).exists() and not stored_anywhere("RS-WAIT-58")
