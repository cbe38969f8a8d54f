"""Odd input typed or posted by members (or put in a URL by anyone) — a NUL character, a browser's
CRLF line breaks, an address longer than the column — is stored as PostgreSQL can keep it or
refused in words: never a 500, never an agent's text lost to a count the form did not show."""
import pytest
from django.test import Client
from django.urls import reverse

from bots.models import Invitation, Message, SavedReply, Tag
from bots.views.inbox import MAX_AGENT_REPLY

from .conftest import make_conversation

pytestmark = pytest.mark.django_db


def test_an_invitation_to_an_address_longer_than_the_column_is_a_form_error(client, alice, smtp_settings):
    client.force_login(alice)
    email = "a" * 64 + "@" + ".".join(["b" * 63] * 3) + ".example"  # 265 characters: a valid address, over 254
    response = client.post(reverse("org:members"), {"email": email, "role": "agent"})
    assert response.status_code == 400
    assert "at most 254 characters" in str(response.context["form"].errors["email"])
    assert not Invitation.objects.exists()


@pytest.mark.parametrize("note", ["", "1"], ids=["reply", "note"])
def test_a_nul_in_an_agents_reply_or_note_is_stored_as_replacement_text(client, bob, acme_bot, note):
    conversation, _ = make_conversation(acme_bot)
    client.force_login(bob)
    response = client.post(reverse("inbox:reply", args=[conversation.id]), {"text": "Hi\x00 there", "note": note})
    assert response.status_code == 302
    assert Message.objects.get(direction="out").text == "Hi\ufffd there"


def test_a_nul_in_a_tag_name_added_in_the_thread_is_stored_as_replacement_text(client, bob, acme_bot):
    conversation, _ = make_conversation(acme_bot)
    client.force_login(bob)
    assert client.post(reverse("inbox:tags", args=[conversation.id]), {"add": "vip\x00"}).status_code == 302
    assert [t.name for t in conversation.tags.all()] == ["vip\ufffd"]


def test_a_nul_in_a_tag_name_added_to_many_is_stored_as_replacement_text(client, bob, acme_bot):
    conversation, _ = make_conversation(acme_bot)
    client.force_login(bob)
    response = client.post(reverse("inbox:bulk"), {"action": "tag", "ids": [conversation.id], "tag": "bulk\x00"})
    assert response.status_code == 302
    assert [t.name for t in conversation.tags.all()] == ["bulk\ufffd"]


def test_a_nul_in_a_tags_new_name_is_stored_as_replacement_text(client, alice, acme):
    tag = Tag.objects.create(organization=acme, name="vip")
    client.force_login(alice)
    assert client.post(reverse("org:tag-edit", args=[tag.id]), {"name": "gold\x00"}).status_code == 302
    tag.refresh_from_db()
    assert tag.name == "gold\ufffd"


def test_a_reply_of_the_longest_length_with_browser_line_breaks_is_sent(client, bob, acme_bot):
    """The textarea counts a line break as one character; the browser posts it as CRLF, two."""
    conversation, _ = make_conversation(acme_bot)
    client.force_login(bob)
    text = ("x" * 999 + "\r\n") * 10
    assert len(text.replace("\r\n", "\n").strip()) <= MAX_AGENT_REPLY < len(text.strip())
    client.post(reverse("inbox:reply", args=[conversation.id]), {"text": text})
    assert Message.objects.get(direction="out").text == ("x" * 999 + "\n") * 9 + "x" * 999


def test_a_saved_reply_of_the_longest_length_with_browser_line_breaks_is_saved(client, alice):
    client.force_login(alice)
    text = ("x" * 999 + "\r\n") * 10
    response = client.post(reverse("inbox:replies"), {"title": "Long", "text": text})
    assert response.status_code == 302
    assert SavedReply.objects.get().text == ("x" * 999 + "\n") * 9 + "x" * 999


@pytest.mark.parametrize("method, path", [
    ("get", "/channels/widget/ab%00cd/config/"), ("post", "/channels/widget/ab%00cd/upload/"),
    ("post", "/channels/whatsapp/ab%00cd/"), ("post", "/channels/whatsapp/ab%00cd/status/"),
    ("post", "/channels/email/ab%00cd/inbound/"),
])
def test_a_nul_in_a_urls_path_is_a_400_in_words(method, path):
    """A ``<str:key>`` route takes a NUL too, and the view looked the key up: PostgreSQL refused the
    query (a 500). Anyone can type such a URL, signed in or not."""
    response = getattr(Client(raise_request_exception=False), method)(path, HTTP_ORIGIN="https://shop.example")
    assert response.status_code == 400
    assert response.json() == {"error": "the address (URL) may not contain NUL characters"}
