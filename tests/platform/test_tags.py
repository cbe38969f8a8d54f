"""Conversation tags: put on and taken off in the thread, one per name whatever its case, per
organisation; the inbox filters by them, the CSV export and the API carry them."""
import csv
import io

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from bots.models import ApiToken, Conversation, Tag

from .conftest import make_conversation

pytestmark = pytest.mark.django_db


def tag(client, conversation, **data):
    response = client.post(reverse("inbox:tags", args=[conversation.id]), data)
    assert response.status_code == 302 and response["Location"].endswith("#tags")
    return sorted(t.name for t in Conversation.objects.get(id=conversation.id).tags.all())


def test_the_team_tags_a_conversation_and_finds_it_by_tag(client, alice, bob, acme_bot, globex, globex_bot):
    billing, _ = make_conversation(acme_bot, thread="billing-1", contact={"name": "Dana"})
    other, _ = make_conversation(acme_bot, thread="plain-1", contact={"name": "Eli"})
    theirs, _ = make_conversation(globex_bot, thread="g-1")
    Tag.objects.create(organization=globex, name="billing")  # Globex's own, never Acme's
    client.force_login(bob)  # an agent may tag
    assert tag(client, billing, add="  Billing ") == ["Billing"]
    assert tag(client, billing, add="BILLING") == ["Billing"]  # the same tag whatever its case
    assert tag(client, billing, add="refund   request") == ["Billing", "refund request"]
    assert tag(client, billing, add="   ") == ["Billing", "refund request"]  # nothing: said in words
    assert "Write the tag&#x27;s name first." in client.get(reverse("inbox:thread", args=[billing.id])).content.decode()
    assert Tag.objects.filter(organization=acme_bot.organization).count() == 2
    globex_tag = Tag.objects.get(organization=globex)
    assert tag(client, billing, remove=str(globex_tag.id)) == ["Billing", "refund request"]  # not its tag
    refund = Tag.objects.get(name="refund request")
    assert tag(client, billing, remove=str(refund.id)) == ["Billing"]
    assert client.post(reverse("inbox:tags", args=[theirs.id]), {"add": "x"}).status_code == 404

    page = client.get(reverse("inbox:list"), {"tag": "billing"})
    assert [c.id for c in page.context["page"]] == [billing.id]
    assert [t.name for t in page.context["tags"]] == ["Billing", "refund request"]  # Acme's only
    html = client.get(reverse("inbox:list")).content.decode()
    assert 'class="tag" href="?tag=Billing">Billing</a>' in html
    thread = client.get(reverse("inbox:thread", args=[billing.id])).content.decode()
    assert 'aria-label="Remove the tag Billing"' in thread and '<option value="refund request">' in thread

    client.force_login(alice)
    rows = list(csv.DictReader(io.StringIO(b"".join(client.get(reverse("inbox:export")).streaming_content).decode())))
    assert {row["conversation"]: row["tags"] for row in rows} == {str(billing.id): "Billing", str(other.id): ""}


def test_the_api_reads_sets_and_filters_tags(alice, charlie, acme_bot, globex_bot):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {ApiToken.issue(alice)}")
    conversation, _ = make_conversation(acme_bot, thread="api-tags")
    make_conversation(acme_bot, thread="api-untagged")
    url = f"/api/conversations/{conversation.id}/control/"
    assert client.post(url, {"tags": ["VIP", "vip", "Bug report"]}, format="json").json()["tags"] == ["Bug report", "VIP"]
    assert client.post(url, {"tags": [" "]}, format="json").status_code == 400
    listed = client.get("/api/conversations/", {"tag": "vip"}).json()
    assert [c["id"] for c in listed["results"]] == [conversation.id] and listed["results"][0]["tags"] == ["Bug report", "VIP"]
    assert client.post(url, {"tags": []}, format="json").json()["tags"] == []
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Token {ApiToken.issue(charlie)}")
    assert other.post(url, {"tags": ["mine"]}, format="json").status_code == 404


def test_managers_rename_and_delete_tags_on_the_team_page(client, alice, bob, acme, acme_bot, globex):
    from bots.models import AuditEvent

    conversation, _ = make_conversation(acme_bot, thread="t-manage")
    client.force_login(alice)
    tag(client, conversation, add="billing")
    tag(client, conversation, add="urgent")
    billing, urgent = Tag.objects.get(name="billing"), Tag.objects.get(name="urgent")
    theirs = Tag.objects.create(organization=globex, name="vip")
    page = client.get(reverse("org:members")).content.decode()
    assert 'id="tags"' in page and 'value="billing"' in page and "vip" not in page

    edit = lambda t, **data: client.post(reverse("org:tag-edit", args=[t.id]), data)  # noqa: E731
    assert edit(billing, name="URGENT").status_code == 302  # taken, whatever its case
    assert "There is already a tag called URGENT." in client.get(reverse("org:members")).content.decode()
    edit(billing, name="  Invoices ")
    assert Tag.objects.get(id=billing.id).name == "Invoices"
    edit(urgent, delete="1")
    assert [t.name for t in Conversation.objects.get(id=conversation.id).tags.all()] == ["Invoices"]
    assert not Tag.objects.filter(id=urgent.id).exists()
    assert edit(theirs, name="mine").status_code == 404 and Tag.objects.get(id=theirs.id).name == "vip"
    assert [e.text for e in AuditEvent.objects.filter(action__startswith="tag.").order_by("id")] == [
        "Renamed the tag billing to Invoices", "Deleted the tag urgent (on 1 conversations)"]
    client.force_login(bob)  # an agent: tags on conversations, not the list
    assert 'id="tags"' not in client.get(reverse("org:members")).content.decode()
    assert edit(Tag.objects.get(id=billing.id), delete="1").status_code == 404
