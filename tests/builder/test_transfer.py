"""A bot exported as a file and imported as a new, unpublished bot (here, or on another server):
the same draft settings and knowledge; a file that is not one, or does not pass the builder's
checks, creates nothing and says why."""
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from rest_framework.test import APIClient

from bots import transfer
from bots.models import ApiToken, Bot, KnowledgeItem
from tests.builder.test_web_pages import website  # noqa: F401 - the fixture (a website on loopback)

pytestmark = pytest.mark.django_db


def without_ids(config):
    return {**config, "knowledge": [{k: v for k, v in item.items() if k != "id"} for item in config["knowledge"]]}


def upload(client, raw: bytes):
    return client.post(reverse("bots:import"), {"file": SimpleUploadedFile("ava.chatnexus.json", raw)})


def test_a_bot_travels_as_a_file(as_alice, acme_bot, globex):
    acme_bot.instructions, acme_bot.use_emoji, acme_bot.temperature = "Offer a test ride.", True, 0.4
    acme_bot.suggestions = "When are you open?\nDo you fix e-bikes?"
    acme_bot.save()
    KnowledgeItem.objects.create(bot=acme_bot, kind="doc", title="Returns", body="30 days, with the receipt. Ünïcode ✓")
    KnowledgeItem.objects.create(bot=acme_bot, kind="faq", title="Warranty terms?", body="Long. " * 1200)  # the builder takes it
    response = as_alice.get(reverse("bots:export", args=[acme_bot.id]))
    assert response.status_code == 200 and 'filename="ava.chatnexus.json"' in response["Content-Disposition"]
    raw = response.content
    assert b'"chatnexus_bot": 1' in raw and "Ünïcode ✓".encode() in raw

    imported = upload(as_alice, raw)
    copy = Bot.objects.exclude(id=acme_bot.id).get(organization=acme_bot.organization)
    assert imported.status_code == 302 and imported["Location"].startswith(reverse("bots:builder", args=[copy.id]))
    assert without_ids(copy.draft_config()) == without_ids(acme_bot.draft_config())
    assert copy.published_version == 0 and copy.public_key != acme_bot.public_key
    assert "Imported Ava with 3 knowledge items." in as_alice.get(imported["Location"]).content.decode()


def test_a_bot_using_the_servers_default_drafter_spelled_out_travels_too(as_alice, acme_bot, settings):
    """Import checks the form on an unsaved Bot, which offered only the built-in drafters: a bot whose
    drafter is CHATNEXUS_DRAFTER written out ("model:…", as the API accepts) could not come back."""
    settings.CHATNEXUS_DRAFTER = "model:var/drafts/ava"
    Bot.objects.filter(id=acme_bot.id).update(drafter="model:var/drafts/ava")
    raw = as_alice.get(reverse("bots:export", args=[acme_bot.id])).content
    imported = upload(as_alice, raw)
    copy = Bot.objects.exclude(id=acme_bot.id).filter(organization=acme_bot.organization).first()
    assert copy is not None  # before: "drafter: Select a valid choice."
    assert imported["Location"].startswith(reverse("bots:builder", args=[copy.id]))
    assert copy.drafter == "model:var/drafts/ava"


def test_blank_settings_stay_blank_and_odd_text_or_deep_json_is_handled(as_alice, acme_bot):
    """A cleared setting came back as the default (handoff on "talk to a human" again); a NUL or a
    lone surrogate reached PostgreSQL (500); "[" * 200000 raised RecursionError (500)."""
    acme_bot.handoff_triggers, acme_bot.greeting = "", ""
    acme_bot.save()
    data = json.loads(as_alice.get(reverse("bots:export", args=[acme_bot.id])).content)
    data["settings"]["name"] = "Ava\ud800"
    data["knowledge"] = [{"kind": "doc", "title": "T\x00", "body": "Body \ud83d with a NUL \x00"}]
    assert upload(as_alice, json.dumps(data).encode()).status_code == 302
    copy = Bot.objects.exclude(id=acme_bot.id).get(organization=acme_bot.organization)
    assert (copy.handoff_triggers, copy.greeting, copy.name) == ("", "", "Ava\ufffd")
    assert copy.knowledge.get().body == "Body \ufffd with a NUL \ufffd"

    response = upload(as_alice, b"[" * 200_000)
    assert response.status_code == 302
    assert "That is not a JSON file exported from ChatNexus." in as_alice.get(reverse("bots:list")).content.decode()


def test_an_older_export_takes_the_defaults_of_what_it_lacks(acme):
    data = {"chatnexus_bot": 1, "settings": {"name": "Old", "tone": "formal"},
            "knowledge": [{"kind": "doc", "title": "Returns", "body": "30 days."}]}  # no page: text only
    bot = transfer.import_bot(acme, transfer.read(json.dumps(data).encode()))
    assert (bot.name, bot.tone, bot.handoff_message) == ("Old", "formal", Bot().handoff_message)
    doc = bot.knowledge.get()
    assert (doc.body, doc.source_url, doc.fetched_at) == ("30 days.", "", None)


def test_a_fetched_documents_page_travels_with_the_file_and_is_read_again_there(as_alice, alice, acme_bot, website):
    """The file carried a document's text but not its page: the imported bot's document could not be
    read again (no **Fetch again**), though the page it came from was still there."""
    url = website.page("/delivery", "<title>Delivery</title><p>We deliver in 2 days.</p>")
    assert as_alice.post(reverse("bots:document_add", args=[acme_bot.id]), {"url": url}).status_code == 302
    original = KnowledgeItem.objects.get(bot=acme_bot, source_url=url)
    raw = as_alice.get(reverse("bots:export", args=[acme_bot.id])).content
    assert json.loads(raw)["knowledge"][0] == {"kind": "faq", "title": "What are your opening hours?",
                                               "body": "We are open Monday to Friday, 9am to 6pm."}  # no page: none

    imported = upload(as_alice, raw)
    copy = Bot.objects.exclude(id=acme_bot.id).get(organization=acme_bot.organization)
    assert imported["Location"].startswith(reverse("bots:builder", args=[copy.id]))
    doc = copy.knowledge.get(kind="doc")
    assert (doc.body, doc.source_url, doc.fetched_at) == ("We deliver in 2 days.", url, original.fetched_at)
    assert not copy.knowledge.exclude(id=doc.id).get().source_url
    page = as_alice.get(imported["Location"]).content.decode()
    assert reverse("bots:knowledge_refetch", args=[copy.id, doc.id]) in page  # Fetch again, on the copy

    website.page("/delivery", "<title>Delivery</title><p>We deliver in 1 day now.</p>")
    assert as_alice.post(reverse("bots:knowledge_refetch", args=[copy.id, doc.id])).status_code == 302
    again = KnowledgeItem.objects.get(id=doc.id)
    assert again.body == "We deliver in 1 day now." and again.fetched_at > original.fetched_at

    api = APIClient()  # the API's export and import carry it too
    api.credentials(HTTP_AUTHORIZATION=f"Token {ApiToken.issue(alice)}")
    created = api.post("/api/bots/import/", api.get(f"/api/bots/{copy.id}/export/").json(), format="json")
    assert created.status_code == 201
    third = Bot.objects.get(id=created.json()["id"]).knowledge.get(kind="doc")
    assert (third.source_url, third.fetched_at) == (url, again.fetched_at)


@pytest.mark.parametrize("raw, says", [
    (b"not json", "That is not a JSON file exported from ChatNexus."),
    (b'{"name": "Ava"}', 'not a ChatNexus bot export'),
    (json.dumps({"chatnexus_bot": 1, "settings": {"name": "X", "temperature": 5}}).encode(),
     "temperature: Ensure this value is less than or equal to 2.0."),
    (json.dumps({"chatnexus_bot": 1, "settings": {"name": "X", "drafter": "model:/etc/passwd"}}).encode(),
     "drafter: Select a valid choice."),
    (json.dumps({"chatnexus_bot": 1, "settings": {"name": "X"}, "knowledge": [{"kind": "faq", "title": "", "body": "b"}]})
     .encode(), "Knowledge item 1: a FAQ pair needs its question"),
    (json.dumps({"chatnexus_bot": 1, "settings": {"name": "X"}, "knowledge": [{"kind": "zzz", "body": "b"}]}).encode(),
     'Knowledge item 1: "kind" must be one of faq, doc.'),
    *((json.dumps({"chatnexus_bot": 1, "settings": {"name": "X"}, "knowledge": [
        {"kind": "doc", "title": "Delivery", "body": "We deliver.", **page}]}).encode(), says) for page, says in [
        ({"source_url": "javascript:alert(1)"}, 'Knowledge item 1, "source_url": Enter a valid URL.'),
        ({"source_url": "https://shop.example/" + "a" * 500}, "at most 500 characters"),
        ({"source_url": ["https://shop.example/"]}, 'Knowledge item 1: "source_url" must be text.'),
        ({"source_url": "https://shop.example/delivery", "fetched_at": "yesterday"},
         'Knowledge item 1, "fetched_at": a date and time'),
    ]),
])
def test_a_file_that_is_not_a_good_export_creates_nothing(as_alice, acme_bot, raw, says):
    before = Bot.objects.count(), KnowledgeItem.objects.count()
    response = upload(as_alice, raw)
    assert response.status_code == 302 and response["Location"] == reverse("bots:list")
    page = as_alice.get(reverse("bots:list")).content.decode()
    assert "Nothing imported: " in page and says in page.replace("&quot;", '"').replace("&#x27;", "'")
    assert (Bot.objects.count(), KnowledgeItem.objects.count()) == before


def test_only_managers_import_and_export_and_the_api_does_both(client, bob, charlie, alice, acme_bot):
    client.force_login(bob)  # an agent
    assert client.get(reverse("bots:export", args=[acme_bot.id])).status_code == 404
    assert upload(client, json.dumps(transfer.export(acme_bot)).encode()).status_code == 404
    client.force_login(charlie)  # another organisation
    assert client.get(reverse("bots:export", args=[acme_bot.id])).status_code == 404

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {ApiToken.issue(alice)}")
    exported = api.get(f"/api/bots/{acme_bot.id}/export/").json()
    created = api.post("/api/bots/import/", exported, format="json")
    assert created.status_code == 201 and created.json()["name"] == "Ava" and created.json()["published_version"] == 0
    bad = api.post("/api/bots/import/", {"chatnexus_bot": 2}, format="json")
    assert bad.status_code == 400 and "not a ChatNexus bot export" in bad.json()["detail"]
