"""A knowledge item's edit page carries a stamp of the item as it showed it: a save from a page opened
before another change of the item (another tab or admin, a version restore, Fetch again) is refused
with a message, the admin's edits kept in the form and the text as it is now beside them, instead of
silently overwriting the other change. The page it returns carries the current stamp, so saving again
goes through."""
import re
import threading

import pytest
from django.db import connection, transaction
from django.test import Client
from django.urls import reverse

from bots.models import Bot, KnowledgeItem
from tests.builder.test_web_pages import website  # noqa: F401 - the fixture (a website on loopback)

pytestmark = pytest.mark.django_db

STAMP = re.compile(r'name="draft_stamp" value="([0-9a-f]+)"')


def edit_url(item):
    return reverse("bots:knowledge_edit", args=[item.bot_id, item.id])


def opened(client, item):
    """The edit page's stamp, as a browser holds it while the admin types."""
    response = client.get(edit_url(item))
    assert response.status_code == 200
    return STAMP.search(response.content.decode()).group(1)


def another_admin(user):
    client = Client()
    client.force_login(user)  # the same rights from another browser (or a colleague's)
    return client


def _another_tab_saves(alice, item):
    client = another_admin(alice)
    answer = {"title": item.title, "body": "Mon–Sat 9–7 (changed in the other tab)."}
    assert client.post(edit_url(item), {**answer, "draft_stamp": opened(client, item)}).status_code == 302


def _a_version_is_restored(alice, item):
    assert another_admin(alice).post(reverse("bots:version_restore", args=[item.bot_id, 1])).status_code == 302


@pytest.mark.parametrize("change", [_another_tab_saves, _a_version_is_restored],
                         ids=["another tab saved", "version restored"])
def test_a_save_from_a_page_opened_before_another_change_is_refused_and_keeps_the_edits(
        as_alice, alice, acme_bot, change):
    faq = acme_bot.knowledge.get()
    faq.body = "Mon–Fri 9–6, Sat 10–4."
    faq.save()
    acme_bot.publish()  # version 2: restoring version 1 changes the answer
    stamp = opened(as_alice, faq)

    change(alice, faq)
    now = KnowledgeItem.objects.get(id=faq.id).body
    assert now != faq.body

    mine = {"title": "When are you open?", "body": "Every day 8–8 (my edit)."}
    stale = as_alice.post(edit_url(faq), {**mine, "draft_stamp": stamp})
    assert stale.status_code == 400
    page = stale.content.decode()
    assert "This was changed (in another tab, by someone else, by Fetch again or by restoring a version)" in page
    assert "Nothing was saved" in page
    assert 'value="When are you open?"' in page and "Every day 8–8 (my edit).</textarea>" in page  # kept
    assert re.search(r'id="knowledge-now".*' + re.escape(now), page, re.S)  # and what it is now, to compare
    assert KnowledgeItem.objects.get(id=faq.id).body == now  # the other change stands

    fresh = STAMP.search(page).group(1)  # checked against it, the admin saves again: it goes through
    assert fresh != stamp
    assert as_alice.post(edit_url(faq), {**mine, "draft_stamp": fresh}).status_code == 302
    saved = KnowledgeItem.objects.get(id=faq.id)
    assert (saved.title, saved.body) == (mine["title"], mine["body"])


def test_a_documents_edit_opened_before_fetch_again_is_refused(as_alice, acme_bot, website):
    url = website.page("/hours", "<title>Hours</title><p>Open 9 to 5.</p>")
    as_alice.post(reverse("bots:document_add", args=[acme_bot.id]), {"url": url})
    doc = KnowledgeItem.objects.get(bot=acme_bot, source_url=url)
    stamp = opened(as_alice, doc)
    website.page("/hours", "<title>Hours</title><p>Open 8 to 6, Saturdays too.</p>")
    as_alice.post(reverse("bots:knowledge_refetch", args=[acme_bot.id, doc.id]))

    stale = as_alice.post(edit_url(doc), {"title": "Hours", "body": "Open 9 to 5. Closed on holidays.",
                                          "draft_stamp": stamp})
    assert stale.status_code == 400 and "by Fetch again" in stale.content.decode()
    assert KnowledgeItem.objects.get(id=doc.id).body == "Open 8 to 6, Saturdays too."


def test_a_save_from_an_unchanged_page_goes_through(as_alice, acme_bot):
    doc = KnowledgeItem.objects.create(bot=acme_bot, kind="doc", title="Returns", body="30 days.\nReceipt needed.")
    stamp = opened(as_alice, doc)
    response = as_alice.post(edit_url(doc), {"title": "Returns", "body": "30 days.\r\nNo receipt needed.",
                                             "draft_stamp": stamp})
    assert response.status_code == 302
    assert KnowledgeItem.objects.get(id=doc.id).body == "30 days.\nNo receipt needed."
    assert Bot.objects.get(id=acme_bot.id).has_unpublished_changes


def test_a_save_waits_for_a_change_in_progress_and_is_refused_after_it(transactional_db, as_alice, acme_bot):
    """Another save that has written the item but not committed yet: this save waits for it (the
    item's row lock, taken before the check) and is then refused, instead of checking the text as it
    was before and overwriting the other save once it commits."""
    faq = acme_bot.knowledge.get()
    stamp = opened(as_alice, faq)
    written, release = threading.Event(), threading.Event()

    def other_save():
        try:
            with transaction.atomic():
                KnowledgeItem.objects.filter(id=faq.id).update(body="Open late on Thursdays (the other save).")
                written.set()
                release.wait(10)
        finally:
            connection.close()

    other = threading.Thread(target=other_save)
    other.start()
    try:
        assert written.wait(10)
        threading.Timer(0.5, release.set).start()  # commits while the save below waits
        response = as_alice.post(edit_url(faq), {"title": faq.title, "body": "My answer.", "draft_stamp": stamp})
    finally:
        release.set()
        other.join()
    assert response.status_code == 400
    assert KnowledgeItem.objects.get(id=faq.id).body == "Open late on Thursdays (the other save)."
