"""Tenant isolation: every page and API endpoint that takes an object id answers 404
when alice (Acme) names an object of charlie's organisation (Globex).

The routes are collected from the URL configuration itself, so a new route with an
id is covered automatically — and fails loudly below if its id kind is unknown.
"""
import re

import pytest
from django.urls import get_resolver, reverse
from django.urls.resolvers import URLResolver

from bots import services
from bots.models import Invitation, Membership, SavedReply

from .conftest import make_conversation

# URL keyword -> which kind of object it names; ``pk`` is decided by the API route prefix.
KWARG_KINDS = {
    "bot_id": "bot",
    "item_id": "knowledge",
    "conversation_id": "conversation",
    "membership_id": "membership",
    "invitation_id": "invitation",
    "message_id": "message",
    "index": "attachment",  # a position in the message's attachments, not an id: always 0
    "attachment_id": "file",
    "saved_reply_id": "saved_reply",
    "number": "version",
    "tag_id": "tag",  # a published version's number within its bot (each fixture bot has version 1)
}
API_PK_KINDS = {"bots": "bot", "knowledge": "knowledge", "conversations": "conversation", "messages": "message",
                "saved-replies": "saved_reply"}
PUBLIC_KWARGS = {"public_key", "key", "token", "uidb64", "format"}  # public ids by design, or not ids


def _walk(patterns, prefix="", namespace=None):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern.url_patterns, prefix + str(pattern.pattern), pattern.namespace or namespace)
        elif pattern.name:
            yield prefix + str(pattern.pattern), (f"{namespace}:" if namespace else "") + pattern.name, pattern


def routes_with_ids():
    found = {}
    for route, name, pattern in _walk(get_resolver().url_patterns):
        if route.startswith("admin/") or "format" in pattern.pattern.regex.groupindex:
            continue
        kwargs = [k for k in pattern.pattern.regex.groupindex if k not in PUBLIC_KWARGS]
        if not kwargs:
            continue
        kinds = {}
        for kwarg in kwargs:
            if kwarg == "pk":
                prefix = re.match(r"api/\^?([\w-]+)", route).group(1)
                kinds[kwarg] = API_PK_KINDS[prefix]
            else:
                assert kwarg in KWARG_KINDS, f"{route}: add the id kind of {kwarg!r} to KWARG_KINDS"
                kinds[kwarg] = KWARG_KINDS[kwarg]
        found[name] = kinds
    return sorted(found.items())


ROUTES = routes_with_ids()


def objects_of(org, bot, owner):
    conversation, message = make_conversation(bot, thread=f"iso-{org.slug}", channel="whatsapp")
    message.meta = {"media": [{"url": "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1",
                               "content_type": "image/jpeg"}]}  # an attachment (the bot has no WhatsApp: 409)
    message.save(update_fields=["meta"])
    file = services.store_attachment(message, 1, "invoice.pdf", "application/pdf", b"%PDF-1.4 " + org.slug.encode())
    return {
        "bot": bot.id,
        "knowledge": bot.knowledge.first().id,
        "conversation": conversation.id,
        "message": message.id,
        "membership": Membership.objects.get(user=owner, organization=org).id,
        "invitation": Invitation.objects.create(organization=org, email=f"x@{org.slug}.example").id,
        "attachment": 0,
        "file": file.id,
        "saved_reply": SavedReply.objects.create(organization=org, title="Hours", text="9 to 17").id,
        "version": bot.versions.get(number=1).number,
        "tag": services.organization_tag(org.id, "billing").id,
    }


@pytest.fixture
def setup(alice, charlie, acme, globex, acme_bot, globex_bot):
    return {"acme": objects_of(acme, acme_bot, alice), "globex": objects_of(globex, globex_bot, charlie)}


def test_it_covers_the_routes_we_know(setup):
    names = {name for name, _ in ROUTES}
    for expected in ("inbox:thread", "dashboards:bot", "bots:builder", "bot-detail", "conversation-reply", "org:member-role"):
        assert expected in names


@pytest.mark.parametrize("name,kinds", ROUTES, ids=[name for name, _ in ROUTES])
def test_it_answers_404_for_another_organisations_object(client, setup, alice, name, kinds):
    client.force_login(alice)
    url = reverse(name, kwargs={k: setup["globex"][kind] for k, kind in kinds.items()})
    statuses = {
        "GET": client.get(url).status_code,
        "POST": client.post(url, {"text": "hi", "role": "agent", "status": "closed", "title": "t", "body": "b"}).status_code,
        "DELETE": client.delete(url).status_code,
    }
    assert all(code in (404, 405) for code in statuses.values()), statuses
    assert 404 in statuses.values(), statuses


@pytest.mark.parametrize("name,kinds", ROUTES, ids=[name for name, _ in ROUTES])
def test_it_finds_the_same_route_for_alices_own_object(client, setup, alice, name, kinds):
    """The control: the same URL with Acme's ids is not a 404 (so the test above can fail)."""
    client.force_login(alice)
    url = reverse(name, kwargs={k: setup["acme"][kind] for k, kind in kinds.items()})
    assert client.get(url).status_code != 404  # 405 (POST-only) is fine: it means the route exists
