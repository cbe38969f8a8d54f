"""The API takes what the builder takes, no more: bot settings within the builder form's limits,
knowledge within a document's length and FAQ pairs with their question — so a bot edited through
the API still saves in the builder, and its export imports."""
import json

import pytest
from rest_framework.test import APIClient

from bots import transfer
from bots.documents import MAX_DOC_CHARS
from bots.forms import MAX_REPLY_TOKENS, MAX_SUGGESTION_CHARS
from bots.models import ApiToken, Bot, KnowledgeItem
from bots.models.bots import MAX_SUGGESTIONS

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(alice):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {ApiToken.issue(alice)}")
    return client


@pytest.mark.parametrize("field, value, says", [
    ("avatar_color", "blue", "Use a hex colour like #4f46e5."),
    ("avatar_color", "#12345", "Use a hex colour like #4f46e5."),
    ("suggestions", "\n".join(f"Question {n}?" for n in range(MAX_SUGGESTIONS + 1)),
     f"At most {MAX_SUGGESTIONS} suggested questions."),
    ("suggestions", "x" * (MAX_SUGGESTION_CHARS + 1), f"Keep each suggested question under {MAX_SUGGESTION_CHARS} characters."),
    ("max_reply_tokens", MAX_REPLY_TOKENS + 1, f"Between 1 and {MAX_REPLY_TOKENS}."),
])  # fmt: skip
def test_bot_settings_the_builder_refuses_are_refused(api, acme_bot, field, value, says):
    before = getattr(acme_bot, field)
    response = api.patch(f"/api/bots/{acme_bot.id}/", {field: value}, format="json")
    assert response.status_code == 400 and response.json() == {field: [says]}
    acme_bot.refresh_from_db()
    assert getattr(acme_bot, field) == before


def test_settings_at_the_builders_limits_are_taken_and_the_export_imports(api, acme, acme_bot):
    suggestions = "\n".join("x" * MAX_SUGGESTION_CHARS for _ in range(MAX_SUGGESTIONS))
    response = api.patch(f"/api/bots/{acme_bot.id}/", {"avatar_color": " #ABCDEF ", "suggestions": suggestions,
                                                       "max_reply_tokens": MAX_REPLY_TOKENS}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["avatar_color"] == "#abcdef"
    api.post("/api/knowledge/", {"bot": acme_bot.id, "kind": "doc", "title": "Terms", "body": "y" * MAX_DOC_CHARS},
             format="json")
    exported = json.dumps(transfer.export(Bot.objects.get(id=acme_bot.id))).encode()
    copy = transfer.import_bot(acme, transfer.read(exported))  # a TransferError if the builder refused it
    assert copy.avatar_color == "#abcdef" and copy.max_reply_tokens == MAX_REPLY_TOKENS


def test_a_document_longer_than_the_builder_takes_is_refused(api, acme_bot):
    before = KnowledgeItem.objects.count()
    response = api.post("/api/knowledge/", {"bot": acme_bot.id, "kind": "doc", "title": "Terms",
                                            "body": "y" * (MAX_DOC_CHARS + 1)}, format="json")
    assert response.status_code == 400 and "body" in response.json()
    item = KnowledgeItem.objects.filter(bot=acme_bot).first()
    assert api.patch(f"/api/knowledge/{item.id}/", {"body": "y" * (MAX_DOC_CHARS + 1)}, format="json").status_code == 400
    assert KnowledgeItem.objects.count() == before


@pytest.mark.parametrize("title", ["", "   "])
def test_a_faq_pair_without_its_question_is_refused(api, acme_bot, title):
    response = api.post("/api/knowledge/", {"bot": acme_bot.id, "kind": "faq", "title": title, "body": "A."}, format="json")
    assert response.status_code == 400 and response.json() == {"title": ["A FAQ pair needs its question."]}
    response = api.post("/api/knowledge/", {"bot": acme_bot.id, "body": "A."}, format="json")  # kind: FAQ by default
    assert response.status_code == 400 and response.json() == {"title": ["A FAQ pair needs its question."]}
    faq = KnowledgeItem.objects.filter(bot=acme_bot, kind="faq").first()
    assert api.patch(f"/api/knowledge/{faq.id}/", {"title": title}, format="json").status_code == 400
    doc = api.post("/api/knowledge/", {"bot": acme_bot.id, "kind": "doc", "title": title, "body": "Text."}, format="json")
    assert doc.status_code == 201  # a document's title is optional


def test_a_customer_address_longer_than_the_column_is_refused_not_cut(api, acme_bot):
    email = "a" * 64 + "@" + ".".join(["b" * 63] * 3) + ".example"  # 265 characters: a valid address, over 254
    body = {"bot": acme_bot.id, "thread": "user-8", "text": "Hello?", "contact_email": email}
    response = api.post("/api/conversations/inbound/", body, format="json")
    assert response.status_code == 400 and "contact_email" in response.json()
    assert not acme_bot.conversations.filter(channel="api").exists()
