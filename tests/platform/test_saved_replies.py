"""Saved replies: owners and admins keep an organisation's canned answers, every member
sees them in the thread's reply box, nobody sees another organisation's; in Chromium,
picking one inserts it with the customer's name."""
from django.urls import reverse

from bots.models import SavedReply

from .conftest import make_conversation


def test_managers_add_and_delete_saved_replies_agents_only_use_them(client, alice, bob, acme, acme_bot):
    client.force_login(alice)
    response = client.post(reverse("inbox:replies"), {"title": "Hours", "text": "Hi {name}, we open at 9."})
    assert response.status_code == 302
    reply = SavedReply.objects.get(organization=acme)
    assert (reply.title, reply.text, reply.created_by) == ("Hours", "Hi {name}, we open at 9.", alice)
    again = client.post(reverse("inbox:replies"), {"title": "hours", "text": "Duplicate"})
    assert again.status_code == 400 and "already a saved reply" in again.content.decode()

    conversation, _ = make_conversation(acme_bot, thread="saved", contact={"name": "Carla"})
    client.force_login(bob)  # an agent
    page = client.get(reverse("inbox:thread", args=[conversation.id])).content.decode()
    assert 'id="saved-reply"' in page and 'data-name="Carla"' in page and "Hi {name}, we open at 9." in page
    assert client.post(reverse("inbox:replies"), {"title": "X", "text": "Y"}).status_code == 404
    assert client.post(reverse("inbox:reply-delete", args=[reply.id])).status_code == 404
    assert "Add a saved reply" not in client.get(reverse("inbox:replies")).content.decode()
    client.force_login(alice)
    assert client.post(reverse("inbox:reply-delete", args=[reply.id])).status_code == 302
    assert not SavedReply.objects.exists()


def test_another_organisations_saved_replies_stay_theirs(client, charlie, acme, globex_bot):
    SavedReply.objects.create(organization=acme, title="Acme secret", text="Only for Acme")
    conversation, _ = make_conversation(globex_bot, thread="g")
    client.force_login(charlie)
    assert "Acme secret" not in client.get(reverse("inbox:replies")).content.decode()
    assert 'id="saved-reply"' not in client.get(reverse("inbox:thread", args=[conversation.id])).content.decode()


def test_picking_a_saved_reply_inserts_it_with_the_customers_name(transactional_db, alice, acme, acme_bot,
                                                                   live_server_url, page):
    from tests.ui.conftest import log_in

    SavedReply.objects.create(organization=acme, title="Hours", text="Hi {name}, we open at 9.")
    conversation, _ = make_conversation(acme_bot, thread="browser", contact={"name": "Carla"})
    log_in(page, live_server_url, "alice")
    page.goto(f"{live_server_url}/inbox/{conversation.id}/")
    box = page.get_by_role("textbox", name="Reply as alice")
    box.fill("Thanks for writing.")
    page.get_by_role("combobox", name="Insert a saved reply").select_option(label="Hours")
    assert box.input_value() == "Thanks for writing.\n\nHi Carla, we open at 9."


def test_the_api_lets_managers_keep_them_members_read_them_and_nobody_else_see_them(alice, bob, charlie, acme,
                                                                                     globex):
    from bots.models import ApiToken
    from rest_framework.test import APIClient

    def api(user):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {ApiToken.issue(user)}")
        return client

    manager, agent, outsider = api(alice), api(bob), api(charlie)
    created = manager.post("/api/saved-replies/", {"title": " Hours ", "text": "Hi {name}, we open at 9."},
                           format="json")
    assert created.status_code == 201, created.content
    reply = SavedReply.objects.get(id=created.json()["id"])
    assert (reply.organization, reply.title, reply.created_by) == (acme, "Hours", alice)
    duplicate = manager.post("/api/saved-replies/", {"title": "HOURS", "text": "again"}, format="json")
    assert duplicate.status_code == 400 and "already a saved reply" in duplicate.json()["title"][0]
    too_long = manager.post("/api/saved-replies/", {"title": "Long", "text": "x" * 10_001}, format="json")
    assert too_long.status_code == 400 and "text" in too_long.json()
    renamed = manager.patch(f"/api/saved-replies/{reply.id}/", {"title": "Opening hours"}, format="json")
    assert renamed.status_code == 200 and renamed.json()["title"] == "Opening hours"
    assert manager.patch(f"/api/saved-replies/{reply.id}/", {"title": "opening HOURS"}, format="json").status_code == 200

    listed = agent.get("/api/saved-replies/").json()  # an agent reads them...
    assert [r["title"] for r in listed["results"]] == ["opening HOURS"]
    assert agent.post("/api/saved-replies/", {"title": "X", "text": "Y"}, format="json").status_code == 403
    assert agent.delete(f"/api/saved-replies/{reply.id}/").status_code == 403  # ...but does not keep them

    SavedReply.objects.create(organization=globex, title="Globex only", text="Theirs")
    assert [r["title"] for r in outsider.get("/api/saved-replies/").json()["results"]] == ["Globex only"]
    assert outsider.get(f"/api/saved-replies/{reply.id}/").status_code == 404  # another tenant's id
    assert outsider.patch(f"/api/saved-replies/{reply.id}/", {"text": "hijack"}, format="json").status_code == 404
    assert manager.delete(f"/api/saved-replies/{reply.id}/").status_code == 204
    assert not SavedReply.objects.filter(organization=acme).exists()
