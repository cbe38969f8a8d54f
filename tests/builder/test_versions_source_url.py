"""A document read from a web page keeps its page through publish and restore: the version keeps the
page's address and when it was read, so a restore that brings the document back brings back **Fetch
again** and where it came from (it came back as pasted text, its address lost). A real HTTP server on
loopback plays the business's website (``tests/builder/test_web_pages.py``)."""
import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from bots.models import ApiToken, Bot, KnowledgeItem
from tests.builder.test_versions import builder, stored_anywhere
from tests.builder.test_web_pages import website  # noqa: F401 - the fixture

pytestmark = pytest.mark.django_db


def fetched(client, bot, site, path, text):
    """A document read from a page of ``site`` (the ``website`` fixture) through the builder's form."""
    url = site.page(path, f"<title>{path}</title><p>{text}</p>")
    assert client.post(reverse("bots:document_add", args=[bot.id]), {"url": url}).status_code == 302
    return KnowledgeItem.objects.get(bot=bot, source_url=url)


def publish(client, bot):
    assert client.post(reverse("bots:publish", args=[bot.id]), {"tab": "versions"}).status_code == 302
    return Bot.objects.get(id=bot.id).published_version


def restore(client, bot, number):
    assert client.post(reverse("bots:version_restore", args=[bot.id, number])).status_code == 302


def test_a_restore_brings_back_a_fetched_documents_page(as_alice, acme_bot, website):
    doc = fetched(as_alice, acme_bot, website, "/delivery", "We deliver in 2 days.")
    read = doc.fetched_at
    assert publish(as_alice, acme_bot) == 2
    restore(as_alice, acme_bot, 1)  # version 1 has no such document: it leaves the draft
    assert not KnowledgeItem.objects.filter(id=doc.id).exists()

    restore(as_alice, acme_bot, 2)
    back = KnowledgeItem.objects.get(id=doc.id)
    assert (back.body, back.source_url, back.fetched_at) == ("We deliver in 2 days.", doc.source_url, read)
    page = builder(as_alice, acme_bot).content.decode()
    assert doc.source_url in page and reverse("bots:knowledge_refetch", args=[acme_bot.id, doc.id]) in page
    bot = Bot.objects.get(id=acme_bot.id)
    assert not bot.has_unpublished_changes  # the draft is version 2 again: the address is no change
    assert builder(as_alice, bot).content.decode().count("Restore into the draft") == 1  # version 1 only

    website.page("/delivery", "<title>Delivery</title><p>We deliver in 1 day now.</p>")
    assert as_alice.post(reverse("bots:knowledge_refetch", args=[acme_bot.id, doc.id])).status_code == 302
    assert KnowledgeItem.objects.get(id=doc.id).body == "We deliver in 1 day now."  # Fetch again works again


def test_a_restore_brings_back_the_text_and_the_time_it_was_read_together(as_alice, acme_bot, website):
    """Read again after a publish, the document has newer text read later; restoring the version puts
    back its text and when that text was read, not the newer time with the older text."""
    doc = fetched(as_alice, acme_bot, website, "/hours", "Open 9 to 5.")
    read = doc.fetched_at
    publish(as_alice, acme_bot)
    website.page("/hours", "<title>Hours</title><p>Open 8 to 6.</p>")
    as_alice.post(reverse("bots:knowledge_refetch", args=[acme_bot.id, doc.id]))
    assert KnowledgeItem.objects.get(id=doc.id).fetched_at > read

    restore(as_alice, acme_bot, 2)
    back = KnowledgeItem.objects.get(id=doc.id)
    assert (back.body, back.source_url, back.fetched_at) == ("Open 9 to 5.", doc.source_url, read)


def test_the_api_restores_a_fetched_documents_page_too_and_a_deletion_takes_it_from_every_version(
        alice, as_alice, acme_bot, website):
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {ApiToken.issue(alice)}")
    doc = fetched(as_alice, acme_bot, website, "/fitting", "Book a fitting online.")
    assert api.post(f"/api/bots/{acme_bot.id}/publish/").status_code == 200
    assert api.post(f"/api/bots/{acme_bot.id}/restore/", {"version": 1}, format="json").status_code == 200
    assert api.post(f"/api/bots/{acme_bot.id}/restore/", {"version": 2}, format="json").status_code == 200
    listed = api.get(f"/api/knowledge/{doc.id}/").json()
    assert (listed["source_url"], listed["body"]) == (doc.source_url, "Book a fitting online.")
    versions = api.get(f"/api/bots/{acme_bot.id}/versions/").json()
    assert [v["changes"] for v in versions] == [["Knowledge: 1 added"], ["First version"]]

    assert api.delete(f"/api/knowledge/{doc.id}/").status_code == 204
    assert not stored_anywhere(doc.source_url)  # the page's address went with the document
