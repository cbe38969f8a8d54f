"""The REST API: token auth (only digests stored), bots CRUD + publish, knowledge, conversations, agent replies, stats, schema."""
import hashlib

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from bots.models import ApiToken, Bot, Conversation, KnowledgeItem

from .conftest import make_conversation


@pytest.fixture
def api():
    def as_user(user):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {ApiToken.issue(user)}")
        return client

    return as_user


def test_it_requires_authentication(db):
    assert APIClient().get("/api/bots/").status_code == 401


def test_it_creates_edits_and_publishes_a_bot(api, alice, acme):
    client = api(alice)
    response = client.post("/api/bots/", {"name": "Zed", "tone": "formal"}, format="json")
    assert response.status_code == 201, response.content
    bot = Bot.objects.get(id=response.json()["id"])
    assert bot.organization == acme and bot.tone == "formal"
    assert client.patch(f"/api/bots/{bot.id}/", {"greeting": "Hey"}, format="json").json()["greeting"] == "Hey"
    published = client.post(f"/api/bots/{bot.id}/publish/").json()
    assert published["published_version"] == 1 and published["has_unpublished_changes"] is False
    assert client.get("/api/bots/").json()["count"] == 1
    assert client.post("/api/bots/", {"tone": "grumpy"}, format="json").status_code == 400
    assert client.delete(f"/api/bots/{bot.id}/").status_code == 204


def test_it_manages_knowledge_only_for_its_own_bots(api, alice, acme_bot, globex_bot):
    client = api(alice)
    response = client.post("/api/knowledge/", {"bot": acme_bot.id, "kind": "faq", "title": "Q?", "body": "A."}, format="json")
    assert response.status_code == 201
    assert client.post("/api/knowledge/", {"bot": globex_bot.id, "title": "x", "body": "y"}, format="json").status_code == 400
    listed = client.get("/api/knowledge/", {"bot": acme_bot.id}).json()
    assert {item["bot"] for item in listed["results"]} == {acme_bot.id} and listed["count"] == 2
    assert KnowledgeItem.objects.filter(bot=globex_bot).count() == 1
    assert client.get("/api/knowledge/", {"bot": "x"}).status_code == 400


def test_it_lists_conversations_and_takes_an_agent_reply(api, bob, acme_bot, globex_bot):
    make_conversation(acme_bot, channel="preview", thread="p")
    conversation, _ = make_conversation(acme_bot, channel="widget", thread="w")
    make_conversation(globex_bot, channel="widget", thread="g")
    client = api(bob)  # agents may use conversations
    listed = client.get("/api/conversations/").json()
    assert listed["count"] == 1  # the widget one; preview threads and Globex's are not listed
    response = client.post(f"/api/conversations/{conversation.id}/reply/", {"text": "Bob here"}, format="json")
    assert response.status_code == 201 and response.json()["sender"] == "agent"
    assert client.post(f"/api/conversations/{conversation.id}/reply/", {"text": ""}, format="json").status_code == 400
    messages = client.get(f"/api/conversations/{conversation.id}/messages/").json()
    assert [m["text"] for m in messages] == ["Hello there", "Bob here"]
    state = client.post(f"/api/conversations/{conversation.id}/control/", {"status": "closed", "bot_paused": False}, format="json").json()
    assert state["status"] == "closed" and state["bot_paused"] is False
    assert client.get("/api/bots/").status_code == 403  # but not bots
    assert client.get("/api/stats/").status_code == 403


def test_it_serves_stats(api, alice, acme_bot):
    client = api(alice)
    assert client.get("/api/stats/", {"days": 7}).json()["days"] == 7
    assert client.get(f"/api/bots/{acme_bot.id}/stats/").json()["conversations"] == 0
    assert client.get("/api/stats/", {"days": 9999}).status_code == 400


@pytest.mark.parametrize("path, name, value", [
    ("/api/stats/", "days", "0"), ("stats", "days", "0"), ("/api/conversations/", "bot", "0"),
    ("/api/conversations/", "bot", "-1"), ("/api/knowledge/", "bot", "0"), ("/api/messages/", "conversation", "0"),
    ("/api/messages/", "reply_to", "0"), ("/api/messages/", "after", "-1")])
def test_a_number_no_id_or_count_can_be_is_a_400_naming_it(api, alice, acme_bot, path, name, value):
    """``?days=0`` meant 14 days, ``?bot=0`` no filter, and ``?reply_to=0`` every message: a poller
    waiting for a reply took the first message listed for it."""
    path = f"/api/bots/{acme_bot.id}/stats/" if path == "stats" else path
    response = api(alice).get(path, {name: value})
    assert response.status_code == 400 and name in response.json(), response.content


@pytest.mark.parametrize("name, value, accepted", [
    ("status", "weird", "open, closed"), ("status", "Closed", "open, closed"),
    ("channel", "sms", "widget, whatsapp, email, api"), ("channel", "preview", "widget, whatsapp, email, api")])
def test_an_unknown_status_or_channel_is_a_400_naming_it_and_the_values_it_takes(api, bob, acme_bot, name, value,
                                                                                   accepted):
    """They answered 200 with an empty list, as if no conversation matched (test chats are never listed)."""
    make_conversation(acme_bot, channel="widget", thread="w")
    response = api(bob).get("/api/conversations/", {name: value})
    assert response.status_code == 400, response.content
    assert response.json() == {name: f"Must be one of: {accepted}."}


def test_conversations_are_filtered_by_status_and_channel(api, bob, acme_bot):
    widget, _ = make_conversation(acme_bot, channel="widget", thread="w")
    email, _ = make_conversation(acme_bot, channel="email", thread="e")
    Conversation.objects.filter(id=email.id).update(status=Conversation.Status.CLOSED)
    client = api(bob)
    ids = lambda **params: [c["id"] for c in client.get("/api/conversations/", params).json()["results"]]  # noqa: E731
    assert ids(channel="widget") == [widget.id] and ids(channel="email") == [email.id] and ids(channel="api") == []
    assert ids(status="open") == [widget.id] and ids(status="closed") == [email.id]
    assert set(ids(status="", channel="")) == {widget.id, email.id}  # empty: no filter


def test_it_serves_the_schema_and_docs_without_a_cdn(client, db):
    schema = client.get("/api/schema/")
    assert schema.status_code == 200 and b"/api/conversations/{id}/reply/" in schema.content
    docs = client.get("/api/docs/").content.decode()
    assert "swagger-ui" in docs.lower() and "cdn.jsdelivr" not in docs and "/static/drf_spectacular_sidecar/" in docs

    # Every member operation documents the organisation header (and nothing else gains it); the
    # knowledge writes take If-Match too (tests/platform/test_api_knowledge_etag.py).
    paths = client.get("/api/schema/", {"format": "json"}).json()["paths"]
    operations = [op for item in paths.values() for method, op in item.items() if method in ("get", "post", "put", "patch", "delete")]
    assert len(operations) > 10
    conditional = {"knowledge_update", "knowledge_partial_update", "knowledge_destroy"}
    for op in operations:
        headers = {p["name"]: p for p in op.get("parameters", []) if p["in"] == "header"}
        wanted = {"X-Organization", *({"If-Match"} if op["operationId"] in conditional else ())}
        assert set(headers) == wanted, op["operationId"]
        organization = headers["X-Organization"]
        assert not organization.get("required", False) and "organisation" in organization["description"]


def test_it_shows_a_new_token_once_and_stores_only_its_digest(client, alice):
    from django.db import connection

    client.force_login(alice)
    assert b"You have no token yet" in client.get("/accounts/api-token/").content
    made = client.post("/accounts/api-token/", follow=True)
    assert made["Cache-Control"] == "no-store"
    first = made.context["new_key"]
    assert first.startswith("cnx_") and len(first) > 40 and first.encode() in made.content
    assert b"previous one" not in made.content  # nothing was replaced
    later = client.get("/accounts/api-token/").content.decode()
    assert first not in later and first[:12] in later  # shown once; afterwards how it starts
    with connection.cursor() as cursor:  # the token is nowhere in the database, only its SHA-256
        cursor.execute("SELECT digest, start FROM bots_apitoken")
        [(digest, start)] = cursor.fetchall()
    assert first not in (digest, start) and digest == hashlib.sha256(first.encode()).hexdigest()

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {first}")
    assert api.get("/api/bots/").status_code == 200
    assert ApiToken.objects.get(user=alice).last_used is not None
    replaced = client.post("/accounts/api-token/", follow=True)
    second = replaced.context["new_key"]
    assert second != first and b"previous one no longer works" in replaced.content
    assert api.get("/api/bots/").status_code == 401  # the old token is dead
    api.credentials(HTTP_AUTHORIZATION=f"Token {second}")
    assert api.get("/api/bots/").status_code == 200
    api.credentials(HTTP_AUTHORIZATION=f"Token {second[:-1]}")
    assert api.get("/api/bots/").status_code == 401


def test_reloading_the_page_that_shows_a_new_token_makes_no_other(client, alice):
    """POST/redirect/GET: the POST makes the token and redirects; the GET shows it once, not kept by
    the browser. Reloading that page (or going back to it) repeats the GET, not the POST, so the
    token just copied keeps working."""
    client.force_login(alice)
    made = client.post("/accounts/api-token/")
    assert made.status_code == 302 and ApiToken.objects.filter(user=alice).exists()
    assert "cnx_" not in made["Location"]  # the token waits in the session, not in the URL
    shown = client.get(made["Location"])
    assert shown.status_code == 200 and shown["Cache-Control"] == "no-store"
    key = shown.context["new_key"]
    assert key.startswith("cnx_") and f'<code id="api-token">{key}</code>' in shown.content.decode()
    digest = ApiToken.objects.get(user=alice).digest

    reloaded = client.get(made["Location"])  # the same URL again: nothing left to show
    assert reloaded.status_code == 200 and key not in reloaded.content.decode() and key[:12] in reloaded.content.decode()
    assert reloaded.context.get("new_key") is None and "no-store" not in reloaded.get("Cache-Control", "")
    assert ApiToken.objects.get(user=alice).digest == digest  # no new token made
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert api.get("/api/bots/").status_code == 200  # the shown token works


def test_a_token_waiting_for_its_page_is_not_in_the_session_table_in_clear(client, alice, monkeypatch):
    """A redirect never followed leaves the session row for its 14 days: a copy of ``django_session``
    must not hold a working token, where only its digest is stored. The page still shows it."""
    from .test_invites import stored_sessions

    issued = []
    issue = ApiToken.issue
    monkeypatch.setattr(ApiToken, "issue", staticmethod(lambda user: issued.append(issue(user)) or issued[-1]))
    client.force_login(alice)
    made = client.post("/accounts/api-token/")
    [key] = issued
    rows = stored_sessions()
    assert rows and not any(key in raw or key in decoded for raw, decoded in rows)
    assert client.get(made["Location"]).context["new_key"] == key  # the redirect, followed: shown once
    assert client.get(made["Location"]).context.get("new_key") is None


def test_a_token_stashed_under_an_earlier_encryption_key_is_still_shown(client, alice, settings):
    """Key rotation (``channels_app/crypto.py``): a page opened just after CHATNEXUS_ENCRYPTION_KEY
    changed, with the old key listed in CHATNEXUS_ENCRYPTION_OLD_KEYS, still shows its token."""
    from cryptography.fernet import Fernet

    old = Fernet.generate_key().decode()
    settings.ENCRYPTION_KEY = old
    client.force_login(alice)
    made = client.post("/accounts/api-token/")
    settings.ENCRYPTION_KEY, settings.ENCRYPTION_OLD_KEYS = Fernet.generate_key().decode(), [old]
    key = client.get(made["Location"]).context["new_key"]
    assert ApiToken.objects.get(user=alice).digest == hashlib.sha256(key.encode()).hexdigest()


def test_a_token_replaced_before_its_page_is_shown_is_not_shown(client, alice):
    """Two tabs: the first POST's redirect, followed after the second POST, shows no dead token."""
    client.force_login(alice)
    first = client.post("/accounts/api-token/")
    second = client.post("/accounts/api-token/")
    assert client.get(first["Location"]).context.get("new_key") is None
    key = client.get(second["Location"]).context["new_key"]
    assert ApiToken.objects.get(user=alice).digest == hashlib.sha256(key.encode()).hexdigest()


def test_a_token_whose_page_is_not_opened_in_time_is_not_shown(client, alice, monkeypatch):
    """A redirect not followed within ``once.MAX_AGE_S`` (a tab closed mid-way) shows nothing later."""
    from bots.views import once

    client.force_login(alice)
    made = client.post("/accounts/api-token/")
    monkeypatch.setattr(once, "MAX_AGE_S", 0)  # as if 10 minutes had passed
    late = client.get(made["Location"])
    assert late.context.get("new_key") is None and "api_tokens_to_show" not in " ".join(client.session.keys())


def test_the_token_page_names_the_organisation_the_token_acts_for(client, alice, acme, globex, acme_bot, globex_bot):
    """Working in Globex (switched to it in the web app), alice reads that her token acts for Acme,
    her oldest membership, without the header — what the API then does — and the slugs it takes."""
    from bots.models import Membership

    Membership.objects.create(user=alice, organization=globex, role="admin")
    client.force_login(alice)
    client.post(reverse("switch-organization"), {"organization": globex.id})
    made = client.post("/accounts/api-token/", follow=True)
    text = " ".join(made.content.decode().split())
    assert "acts for <strong>Acme</strong> (<code>acme</code>, your oldest membership), as owner" in text
    assert "not Globex, the organisation you work in here" in text
    assert "<code>X-Organization: acme</code>" in text and "<code>X-Organization: globex</code>" in text
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {made.context['new_key']}")
    assert [b["name"] for b in api.get("/api/bots/").json()["results"]] == [acme_bot.name]
    picked = api.get("/api/bots/", HTTP_X_ORGANIZATION="globex").json()["results"]
    assert [b["name"] for b in picked] == [globex_bot.name]


def test_the_token_page_of_a_single_organisation_names_it_without_a_list_of_slugs(client, bob):
    client.force_login(bob)
    text = " ".join(client.get("/accounts/api-token/").content.decode().split())
    assert "acts for <strong>Acme</strong> (<code>acme</code>, your oldest membership), as agent." in text
    assert "X-Organization: &lt;slug&gt;" not in text  # nothing else to pick


def test_the_migration_turns_stored_plaintext_tokens_into_digests_that_still_work(alice):
    import importlib

    from django.apps import apps
    from rest_framework.authtoken.models import Token

    key = Token.objects.create(user=alice).key  # a token made before 0011
    importlib.import_module("bots.migrations.0011_api_token").hash_existing_tokens(apps, None)
    assert not Token.objects.exists()  # no plaintext left
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert api.get("/api/bots/").status_code == 200


def test_it_takes_customer_messages_on_the_api_channel(api, alice, acme_bot, globex_bot):
    client = api(alice)
    body = {"bot": acme_bot.id, "thread": "user-7", "text": "Hello?", "external_id": "m1"}
    response = client.post("/api/conversations/inbound/", body, format="json")
    assert response.status_code == 201 and response.json()["reply_state"] == "pending"
    assert client.post("/api/conversations/inbound/", body, format="json").status_code == 200  # a retry: stored once
    conversation = client.get("/api/conversations/", {"channel": "api"}).json()["results"][0]
    assert conversation["external_id"] == "user-7"
    other = {**body, "bot": globex_bot.id, "external_id": "m2"}
    assert client.post("/api/conversations/inbound/", other, format="json").status_code == 400
    assert client.post("/api/conversations/inbound/", {"bot": acme_bot.id}, format="json").status_code == 400


def test_a_backend_polls_for_the_bots_reply_to_its_message(transactional_db, celery_workers, api, alice, charlie,
                                                            acme_bot):
    """As a backend without a widget would: post the customer's message, then poll for the reply
    the real worker writes (``?reply_to=``), and for what is new in the conversation (``?after=``)."""
    from tests.conftest import wait_for

    client = api(alice)
    posted = client.post("/api/conversations/inbound/", {"bot": acme_bot.id, "thread": "user-9", "text": "Open today?"},
                         format="json").json()
    replies = lambda: client.get("/api/messages/", {"reply_to": posted["id"]}).json()["results"]  # noqa: E731
    [reply] = wait_for(replies, timeout=180, what="the bot's reply through the API")
    assert reply["reply_to"] == posted["id"] and reply["sender"] == "bot" and reply["text"].strip()
    newer = client.get("/api/messages/", {"conversation": posted["conversation"], "after": posted["id"]}).json()
    assert [m["id"] for m in newer["results"]] == [reply["id"]]
    assert client.get("/api/messages/", {"conversation": posted["conversation"], "after": reply["id"]}).json()["results"] == []
    assert api(charlie).get("/api/messages/", {"reply_to": posted["id"]}).json()["results"] == []  # Globex sees none
    assert client.get("/api/messages/", {"reply_to": "soon"}).status_code == 400
    assert client.get("/api/messages/", {"after": "x"}).status_code == 400


def test_a_member_of_two_organisations_picks_one_with_a_header(api, alice, acme, globex, acme_bot, globex_bot):
    from bots.models import Membership

    Membership.objects.create(user=alice, organization=globex, role="agent")  # newer: not the default
    client = api(alice)
    names = lambda response: sorted(b["name"] for b in response.json()["results"])  # noqa: E731
    assert names(client.get("/api/bots/")) == [acme_bot.name]  # no header: the oldest membership (owner)
    assert names(client.get("/api/bots/", HTTP_X_ORGANIZATION="acme")) == [acme_bot.name]
    # In Globex alice is an agent: conversations yes, bots (owners and admins only) no.
    assert client.get("/api/bots/", HTTP_X_ORGANIZATION="globex").status_code == 403
    make_conversation(globex_bot, "in globex")
    make_conversation(acme_bot, "in acme")
    in_globex = client.get("/api/conversations/", HTTP_X_ORGANIZATION="globex").json()
    assert in_globex["count"] == 1 and in_globex["results"][0]["bot"] == globex_bot.id
    assert client.get("/api/conversations/").json()["results"][0]["bot"] == acme_bot.id
    refused = client.get("/api/conversations/", HTTP_X_ORGANIZATION="initech")  # not hers: no fallback
    assert refused.status_code == 403 and "X-Organization" in refused.json()["detail"]


def test_owners_and_admins_delete_a_conversation_agents_and_strangers_cannot(api, alice, bob, charlie, acme_bot):
    conversation, _ = make_conversation(acme_bot, channel="widget", thread="api-erase")
    assert api(bob).delete(f"/api/conversations/{conversation.id}/").status_code == 403  # an agent
    assert api(charlie).delete(f"/api/conversations/{conversation.id}/").status_code == 404  # Globex
    assert Conversation.objects.filter(id=conversation.id).exists()
    assert api(alice).delete(f"/api/conversations/{conversation.id}/").status_code == 204
    assert not Conversation.objects.filter(id=conversation.id).exists()
    assert Bot.objects.get(id=acme_bot.id).erasures == 1


def test_messages_list_the_customers_files_and_the_api_serves_them(api, alice, charlie, acme_bot):
    conversation, inbound = make_conversation(acme_bot, channel="email", thread="files",
                                              files=[("menu.pdf", "application/pdf", b"%PDF-1.4 menu")])
    client = api(alice)
    [listed] = [m for m in client.get(f"/api/conversations/{conversation.id}/messages/").json() if m["id"] == inbound.id]
    [attachment] = listed["attachments"]
    assert (attachment["filename"], attachment["content_type"], attachment["size"]) == ("menu.pdf", "application/pdf", 13)
    response = client.get(attachment["url"])
    assert response.status_code == 200 and b"".join(response.streaming_content) == b"%PDF-1.4 menu"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert api(charlie).get(attachment["url"]).status_code == 404  # another organisation
    assert client.get("/api/messages/", {"conversation": conversation.id}).json()["results"][0]["attachments"]


def test_the_api_assigns_members_only(api, alice, bob, charlie, acme_bot):
    conversation, _ = make_conversation(acme_bot, thread="api-assign")
    url = f"/api/conversations/{conversation.id}/control/"
    client = api(alice)
    assert client.post(url, {"assignee": bob.id}, format="json").json()["assignee"] == bob.id
    assert client.post(url, {"assignee": charlie.id}, format="json").status_code == 400
    assert client.post(url, {"assignee": None}, format="json").json()["assignee"] is None
    assert client.post(url, {"bot_paused": True}, format="json").json()["assignee"] == alice.id  # taking over


def test_the_api_adds_an_internal_note_that_is_never_sent(api, bob, acme_bot):
    conversation, _ = make_conversation(acme_bot, channel="widget", thread="api-note")
    response = api(bob).post(f"/api/conversations/{conversation.id}/reply/", {"text": "Refund approved", "note": True},
                             format="json")
    assert response.status_code == 201 and response.json()["sender"] == "note"
    assert response.json()["delivery_status"] == ""
    assert not Conversation.objects.get(id=conversation.id).bot_paused


def test_staff_can_revoke_tokens_in_the_admin_but_not_make_or_read_them(client, alice, django_user_model):
    staff = django_user_model.objects.create_superuser("root", "root@example.com", "pw-long-enough-1")
    ApiToken.issue(alice)
    client.force_login(staff)
    listing = client.get("/admin/bots/apitoken/").content.decode()
    assert "alice" in listing and "cnx_" in listing
    assert client.get("/admin/bots/apitoken/add/").status_code == 403
    assert client.get("/admin/authtoken/tokenproxy/").status_code == 404  # DRF's plaintext tokens: not offered


def test_conversations_are_searched_as_in_the_inbox(api, bob, acme_bot, globex_bot):
    chain, _ = make_conversation(acme_bot, text="My chain keeps slipping", thread="v1")
    eve, _ = make_conversation(acme_bot, channel="email", thread="t1", contact={"email": "eve@shop.example"})
    make_conversation(globex_bot, text="chain for eve@shop.example", thread="g1")  # another organisation's
    client = api(bob)
    ids = lambda q: [c["id"] for c in client.get("/api/conversations/", {"q": q}).json()["results"]]  # noqa: E731
    assert ids("CHAIN") == [chain.id] and ids("eve@shop") == [eve.id] and ids("nothing like it") == []


def test_it_offers_bots_only_the_drafters_this_server_allows(api, alice, acme_bot, settings):
    """A drafter spec is loaded in every shared worker: a tenant picks among the operator's, never
    a path, a model id or endless variants (each would be another engine in every worker)."""
    from inference.tasks import _engine

    client = api(alice)
    url = f"/api/bots/{acme_bot.id}/"
    for spec in ("model:/etc/passwd", "lookup+lookup", "suffix:wide"):
        response = client.patch(url, {"drafter": spec}, format="json")
        assert response.status_code == 400 and "Not a drafter this server offers" in response.json()["drafter"][0]
    assert client.patch(url, {"drafter": "suffix+lookup"}, format="json").json()["drafter"] == "suffix+lookup"
    settings.CHATNEXUS_BOT_DRAFTERS = ["suffix:wide"]  # the operator offers one more
    assert client.patch(url, {"drafter": "suffix:wide"}, format="json").json()["drafter"] == "suffix:wide"

    # One stored before the operator took it off the list (or imported): the worker uses its default.
    settings.CHATNEXUS_BOT_DRAFTERS = []
    assert client.patch(url, {"greeting": "Hey"}, format="json").status_code == 200  # kept, other edits go on
    settings.CHATNEXUS_DRAFTER = "none"
    assert _engine("suffix:wide").drafter.name == "none"


@pytest.mark.parametrize("param", ["q", "channel", "status", "tag"])
def test_a_nul_in_a_query_parameter_is_a_400_not_a_database_error(api, alice, acme_bot, param, client):
    response = api(alice).get("/api/conversations/", {param: "a\x00b"})
    assert response.status_code == 400 and "NUL" in response.json()["error"]
    client.force_login(alice)
    assert client.get("/inbox/", {param: "a\x00b"}).status_code == 400


def test_a_new_password_ends_the_api_token_and_signing_in_does_not(client, acme, smtp_settings):
    """A token an intruder made keeps no access once the owner changes or resets the password."""
    import re as _re

    from tests.conftest import make_member

    alice = make_member(acme, "tokenholder", "owner")  # her own address: reset mails are capped per address per run
    client.force_login(alice)
    client.post("/accounts/api-token/")
    assert ApiToken.objects.filter(user=alice).exists()
    client.logout()
    assert client.login(username="tokenholder", password="correct-horse-battery")  # signing in keeps it
    assert ApiToken.objects.filter(user=alice).exists()

    client.post(reverse("password_change"), {"old_password": "correct-horse-battery",
                                             "new_password1": "a-new-passphrase-77", "new_password2": "a-new-passphrase-77"})
    assert not ApiToken.objects.filter(user=alice).exists()

    token = ApiToken.issue(alice)
    assert APIClient(HTTP_AUTHORIZATION=f"Token {token}").get("/api/bots/").status_code == 200
    client.logout()
    client.post(reverse("password_reset"), {"email": "tokenholder@example.com"})
    link = _re.search(r"https?://[^/\s]+(/accounts/password/reset/\S+/)", smtp_settings.messages[-1]["message"].get_content()).group(1)
    form_url = client.get(link, follow=True).redirect_chain[-1][0]
    client.post(form_url, {"new_password1": "another-passphrase-88", "new_password2": "another-passphrase-88"})
    assert APIClient(HTTP_AUTHORIZATION=f"Token {token}").get("/api/bots/").status_code == 401


def test_a_poller_following_after_never_misses_a_message_that_commits_late(transactional_db, api, alice, acme_bot):
    """Ids are handed out when a message is inserted, not when it commits: a message still being stored
    (its files written) while a later one commits used to be skipped for good by ``?after=``."""
    import threading

    from django.db import connection, transaction

    from bots import services
    from bots.models import Message

    before = make_conversation(acme_bot, thread="seen")[1].id
    inserted, release = threading.Event(), threading.Event()

    def slow_store():  # a message whose transaction stays open a while after its insert
        with transaction.atomic():
            services.receive(bot=acme_bot, channel="api", thread_id="slow", text="First, slowly", answer=False)
            inserted.set()
            release.wait(10)
        connection.close()

    slow = threading.Thread(target=slow_store)
    slow.start()
    inserted.wait(10)
    make_conversation(acme_bot, thread="fast", text="Second, at once")  # a later id, committed first
    threading.Timer(1.0, release.set).start()  # the slow one commits a moment later
    client = api(alice)
    seen = [m["text"] for m in client.get("/api/messages/", {"after": before}).json()["results"]]
    newest = max(Message.objects.filter(text__in=seen).values_list("id", flat=True), default=before)
    seen += [m["text"] for m in client.get("/api/messages/", {"after": newest}).json()["results"]]
    slow.join()
    assert sorted(seen) == ["First, slowly", "Second, at once"]


def test_a_poller_following_after_gets_the_oldest_unseen_first_and_skips_none(api, alice, acme_bot):
    """More messages than a page between two polls: ``?after=`` returns the oldest unseen first, so a
    poller following the newest id it saw gets the rest next time (newest first, it skipped the
    oldest for good); ``?after=0`` is everything, not "no filter"."""
    from bots.models import Message

    first = make_conversation(acme_bot, thread="busy", text="m0")[1].id
    for i in range(1, 61):
        make_conversation(acme_bot, thread="busy", text=f"m{i}")
    client = api(alice)
    page = client.get("/api/messages/", {"after": first}).json()
    ids = [m["id"] for m in page["results"]]
    assert len(ids) == 50 and ids == sorted(ids) and page["next"]
    ids += [m["id"] for m in client.get("/api/messages/", {"after": max(ids)}).json()["results"]]
    assert ids == list(Message.objects.filter(id__gt=first).order_by("id").values_list("id", flat=True))
    everything = [m["id"] for m in client.get("/api/messages/", {"after": 0}).json()["results"]]
    assert everything[0] == first and everything == sorted(everything)
    newest_first = [m["id"] for m in client.get("/api/messages/").json()["results"]]  # without after: as before
    assert newest_first == sorted(newest_first, reverse=True)


def test_a_token_request_acts_for_the_tokens_user_whatever_session_cookie_comes_with_it(client, alice, acme, globex,
                                                                                        acme_bot, globex_bot):
    """A browser signed in as alice (Acme's owner) sending gina's token (a Globex agent): the request
    is gina's, with gina's organisation and role, not alice's."""
    from tests.conftest import make_member

    gina = make_member(globex, "gina", "agent")
    key = ApiToken.issue(gina)
    make_conversation(acme_bot, thread="acme-visitor", text="Acme's customer")
    make_conversation(globex_bot, thread="globex-visitor", text="Globex's customer")
    client.force_login(alice)
    assert client.get("/api/stats/", HTTP_AUTHORIZATION=f"Token {key}").status_code == 403  # managers only
    listed = client.get("/api/conversations/", HTTP_AUTHORIZATION=f"Token {key}").json()["results"]
    assert [c["bot"] for c in listed] == [globex_bot.id]
    assert client.get("/api/stats/").status_code == 200  # the session alone is still alice's
