"""Bot list, create, delete, draft save and publish: who may do what, and what is stored."""
from django.urls import reverse

from bots.models import Bot


def settings_data(bot, **changes):
    data = {field: getattr(bot, field) for field in Bot.DRAFT_FIELDS}
    data["use_emoji"] = "on" if data["use_emoji"] else ""
    data.update(changes)
    return {k: v for k, v in data.items() if v != ""}


def test_it_lists_only_the_organisations_bots(as_alice, acme_bot, globex_bot):
    page = as_alice.get(reverse("bots:list"))
    assert page.status_code == 200
    assert b"Ava" in page.content
    assert b"Gus" not in page.content


def test_it_creates_a_bot_in_the_managers_organisation(as_alice, acme):
    response = as_alice.post(reverse("bots:create"), {"name": "Max", "company": "Acme Bikes"})
    bot = Bot.objects.get(name="Max")
    assert bot.organization == acme
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("bots:builder", args=[bot.id]))


def test_the_new_bot_forms_start_with_the_organisations_name_as_company(as_alice, acme):
    for page in (reverse("bots:create"), reverse("bots:list")):
        form = as_alice.get(page).context["form"]
        assert form["company"].value() == acme.name, page
    # a posted value wins over the suggestion, an emptied one stays empty
    as_alice.post(reverse("bots:create"), {"name": "Max", "company": ""})
    assert Bot.objects.get(name="Max").company == ""


def test_it_refuses_a_bot_without_a_name(as_alice):
    response = as_alice.post(reverse("bots:create"), {"name": ""})
    assert response.status_code == 400
    assert b"This field is required" in response.content
    assert not Bot.objects.exists()


def test_it_hides_the_builder_from_agents(as_bob, acme_bot):
    assert as_bob.get(reverse("bots:list")).status_code == 200  # agents may see the list
    assert as_bob.get(reverse("bots:builder", args=[acme_bot.id])).status_code == 404
    assert as_bob.post(reverse("bots:create"), {"name": "X"}).status_code == 404
    assert as_bob.post(reverse("bots:delete", args=[acme_bot.id])).status_code == 404
    assert as_bob.post(reverse("bots:publish", args=[acme_bot.id])).status_code == 404
    assert Bot.objects.filter(id=acme_bot.id).exists()


def test_it_returns_404_for_another_organisations_bot(as_charlie, acme_bot):
    item = acme_bot.knowledge.first()
    urls = [
        ("get", reverse("bots:builder", args=[acme_bot.id])),
        ("post", reverse("bots:builder", args=[acme_bot.id])),
        ("post", reverse("bots:publish", args=[acme_bot.id])),
        ("post", reverse("bots:delete", args=[acme_bot.id])),
        ("post", reverse("bots:prompt_preview", args=[acme_bot.id])),
        ("post", reverse("bots:faq_add", args=[acme_bot.id])),
        ("post", reverse("bots:document_add", args=[acme_bot.id])),
        ("get", reverse("bots:knowledge_edit", args=[acme_bot.id, item.id])),
        ("post", reverse("bots:knowledge_delete", args=[acme_bot.id, item.id])),
    ]
    for method, url in urls:
        assert getattr(as_charlie, method)(url).status_code == 404, url
    acme_bot.refresh_from_db()
    assert acme_bot.knowledge.count() == 1


def test_it_deletes_a_bot(as_alice, acme_bot):
    response = as_alice.post(reverse("bots:delete", args=[acme_bot.id]))
    assert response.status_code == 302
    assert not Bot.objects.filter(id=acme_bot.id).exists()


def test_it_saves_edits_to_the_draft_only(as_alice, acme_bot):
    url = reverse("bots:builder", args=[acme_bot.id])
    response = as_alice.post(url, settings_data(acme_bot, name="Ava 2", tone="formal", tab="voice"))
    assert response.status_code == 302
    assert response["Location"].endswith("#voice")
    acme_bot.refresh_from_db()
    assert acme_bot.name == "Ava 2"
    assert acme_bot.published_config["name"] == "Ava"  # live config untouched
    assert acme_bot.has_unpublished_changes
    assert b"Unpublished changes" in as_alice.get(url).content


def test_a_never_published_bot_says_so_once_without_an_unpublished_changes_badge(as_alice):
    as_alice.post(reverse("bots:create"), {"name": "Max", "company": "Acme"})
    page = as_alice.get(reverse("bots:builder", args=[Bot.objects.get(name="Max").id])).content
    assert b"Not published yet" in page
    assert b"channels answer with the saved draft" in page  # what live_config does (and the channels page says)
    assert b"Unpublished changes" not in page  # everything is unpublished: the line above says it


def test_channels_answer_a_never_published_bot_from_its_saved_draft(as_alice):
    as_alice.post(reverse("bots:create"), {"name": "Max", "company": "Acme"})
    bot = Bot.objects.get(name="Max")
    bot.greeting = "Saved, never published"
    bot.save()
    assert bot.published_config is None
    assert bot.live_config()["greeting"] == "Saved, never published"
    bot.publish()
    bot.greeting = "Saved after publishing"
    bot.save()
    assert bot.live_config()["greeting"] == "Saved, never published"  # the published one, not the newer draft


def test_a_never_published_bot_answers_files_without_text_in_its_saved_words(as_alice):
    """The reply to files without text was read from published_config, None until a first publish:
    a never-published bot said the platform's English default whatever its builder said."""
    from bots import services
    from bots.models import Message

    as_alice.post(reverse("bots:create"), {"name": "Max", "company": "Acme"})
    bot = Bot.objects.get(name="Max")
    bot.no_text_message = "Danke für das Foto! Bilder kann ich nicht sehen: schreiben Sie mir bitte, worum es geht?"
    bot.save()
    photo = services.receive(bot=bot, channel="widget", thread_id="v1", text="", answer=False,  # as the widget's upload
                             skip_reason="image only", files=[("photo.jpg", "image/jpeg", b"\xff\xd8\xff")])
    services.canned_reply(photo)
    assert Message.objects.get(reply_to=photo.message).text == bot.no_text_message


def test_it_publishes_the_draft(as_alice, acme_bot):
    as_alice.post(reverse("bots:builder", args=[acme_bot.id]), settings_data(acme_bot, greeting="Hello there"))
    response = as_alice.post(reverse("bots:publish", args=[acme_bot.id]))
    assert response.status_code == 302
    acme_bot.refresh_from_db()
    assert acme_bot.published_version == 2
    assert acme_bot.published_config["greeting"] == "Hello there"
    assert not acme_bot.has_unpublished_changes
    page = as_alice.get(reverse("bots:builder", args=[acme_bot.id]))
    assert b"Unpublished changes" not in page.content
    assert b'id="published-version">2<' in page.content


def test_it_rejects_invalid_settings_and_saves_nothing(as_alice, acme_bot):
    bad = settings_data(acme_bot, name="Changed", avatar_color="red", temperature="5", drafter="model:evil")
    response = as_alice.post(reverse("bots:builder", args=[acme_bot.id]), bad)
    assert response.status_code == 400
    body = response.content.decode()
    assert "Use a hex colour" in body
    assert "less than or equal to 2" in body
    assert "Select a valid choice" in body
    acme_bot.refresh_from_db()
    assert acme_bot.name == "Ava"


def test_it_accepts_only_known_drafters(as_alice, acme_bot):
    url = reverse("bots:builder", args=[acme_bot.id])
    assert as_alice.post(url, settings_data(acme_bot, drafter="none")).status_code == 302
    acme_bot.refresh_from_db()
    assert acme_bot.drafter == "none"
    assert as_alice.post(url, settings_data(acme_bot, drafter="suffix")).status_code == 302
    acme_bot.refresh_from_db()
    assert acme_bot.drafter == "suffix"
    assert as_alice.post(url, settings_data(acme_bot, drafter="bogus")).status_code == 400  # the form, with its error
    acme_bot.refresh_from_db()
    assert acme_bot.drafter == "suffix"
    default = {**settings_data(acme_bot), "drafter": ""}  # the select's first option, as a browser posts it
    assert as_alice.post(url, default).status_code == 302  # back to the platform default
    acme_bot.refresh_from_db()
    assert acme_bot.drafter == ""


def test_it_links_the_channels_tab_when_the_channels_page_exists(as_alice, acme_bot):
    from django.urls import NoReverseMatch

    page = as_alice.get(reverse("bots:builder", args=[acme_bot.id])).content.decode()
    try:
        url = reverse("channels:bot", args=[acme_bot.id])
    except NoReverseMatch:
        assert 'class="tab-disabled"' in page
    else:
        assert f'href="{url}"' in page


def test_it_saves_suggested_questions_and_the_widget_serves_the_published_ones(as_alice, client, acme_bot):
    from channels_app.models import ChannelConfig

    ChannelConfig.objects.create(organization=acme_bot.organization, bot=acme_bot, kind="widget")
    url = reverse("bots:builder", args=[acme_bot.id])
    response = as_alice.post(url, settings_data(acme_bot, suggestions="  When are you open?\n\nDo you fix e-bikes?  \n"))
    assert response.status_code == 302
    acme_bot.refresh_from_db()
    assert acme_bot.suggestions == "When are you open?\nDo you fix e-bikes?"
    config = reverse("channels:widget-config", args=[acme_bot.public_key])
    assert client.get(config).json()["suggestions"] == []  # the draft is not live yet
    acme_bot.publish()
    assert client.get(config).json()["suggestions"] == ["When are you open?", "Do you fix e-bikes?"]

    for bad, says in (("\n".join(f"Q{i}?" for i in range(5)), "At most 4"), ("x" * 121, "under 120 characters")):
        response = as_alice.post(url, settings_data(acme_bot, suggestions=bad))
        assert response.status_code == 400 and says in response.content.decode(), says
    acme_bot.refresh_from_db()
    assert acme_bot.suggestions == "When are you open?\nDo you fix e-bikes?"


def test_upgrading_gives_old_published_configs_the_new_default_without_marking_them_changed(acme_bot):
    import importlib

    from django.apps import apps

    migration = importlib.import_module("bots.migrations.0008_bot_suggestions")
    acme_bot.publish()
    old = {k: v for k, v in acme_bot.published_config.items() if k != "suggestions"}  # as published before
    Bot.objects.filter(id=acme_bot.id).update(published_config=old)
    assert Bot.objects.get(id=acme_bot.id).has_unpublished_changes  # what the upgrade must not leave behind
    migration.publish_the_default(apps, None)
    assert not Bot.objects.get(id=acme_bot.id).has_unpublished_changes


def test_a_save_from_a_page_opened_before_another_save_is_refused_and_keeps_both(as_alice, acme_bot):
    import re

    url = reverse("bots:builder", args=[acme_bot.id])
    page = as_alice.get(url).content.decode()
    stamp = re.search(r'name="draft_stamp" value="([0-9a-f]+)"', page).group(1)
    # another tab (or person), opened at the same time, saves a new greeting first
    assert as_alice.post(url, settings_data(acme_bot, greeting="Hello from tab two", draft_stamp=stamp)).status_code == 302
    # the first tab still shows the old greeting; saving it would put that back
    stale = as_alice.post(url, settings_data(acme_bot, name="Avery", draft_stamp=stamp))
    assert stale.status_code == 400 and "were changed (in another tab" in stale.content.decode()
    acme_bot.refresh_from_db()
    assert (acme_bot.name, acme_bot.greeting) == ("Ava", "Hello from tab two")
    # the page it got back carries the current stamp: checked and sent again, it saves
    fresh = re.search(r'name="draft_stamp" value="([0-9a-f]+)"', stale.content.decode()).group(1)
    again = as_alice.post(url, settings_data(acme_bot, name="Avery", draft_stamp=fresh))
    assert again.status_code == 302
    acme_bot.refresh_from_db()
    assert (acme_bot.name, acme_bot.greeting) == ("Avery", "Hello from tab two")


def test_saving_settings_does_not_undo_a_publish_or_a_purge_made_meanwhile(acme_bot):
    from django.db.models import F

    from bots.api.serializers import BotSerializer
    from bots.forms import BotSettingsForm

    def builder_save(bot):
        BotSettingsForm(settings_data(bot, name="Avery"), instance=bot).save()

    def api_save(bot):
        serializer = BotSerializer(bot, data={"greeting": "Hey"}, partial=True)
        serializer.is_valid(raise_exception=True)
        serializer.save()

    for save in (builder_save, api_save):
        loaded = Bot.objects.get(id=acme_bot.id)  # what the request loaded
        Bot.objects.get(id=acme_bot.id).publish()  # meanwhile: a publish ...
        Bot.objects.filter(id=acme_bot.id).update(erasures=F("erasures") + 1)  # ... and a purge
        live = Bot.objects.get(id=acme_bot.id)
        save(loaded)
        after = Bot.objects.get(id=acme_bot.id)
        assert (after.published_version, after.erasures, after.published_config) == (
            live.published_version, live.erasures, live.published_config), save.__name__
    assert (after.name, after.greeting) == ("Avery", "Hey")
