"""A thread page's reply form stores one message however often it is sent: a double-click on Send, a
second click on a slow page, the browser sending the form again. Each rendered form carries a one-time
token; the message it stored keeps it, and a second post with it stores (and delivers) nothing. No
JavaScript here: the server alone must hold. The page's state for polling (messages.json) says what the
page shows: the status in its words, who has the conversation, whether it needs a human."""
import re
import threading

from django.db import connection, transaction
from django.test import Client
from django.urls import reverse

from bots import services
from bots.models import Conversation

from tests.conftest import wait_for

from .conftest import make_conversation


def reply_token(client, conversation):
    """The one-time token of the reply form, as the thread page draws it ("" where it draws none)."""
    page = client.get(reverse("inbox:thread", args=[conversation.id])).content.decode()
    found = re.search(r'name="form_token" value="([^"]+)"', page[page.index('id="reply-form"'):])
    return found.group(1) if found else ""


def test_a_reply_form_sent_twice_stores_one_reply(client, bob, acme_bot):
    conversation, _ = make_conversation(acme_bot)
    client.force_login(bob)
    token = reply_token(client, conversation)
    url = reverse("inbox:reply", args=[conversation.id])
    for _ in range(2):
        response = client.post(url, {"text": "Bring it in today.", "form_token": token})
        assert response.status_code == 302 and response["Location"] == reverse("inbox:thread", args=[conversation.id])
    assert list(conversation.messages.filter(sender="agent").values_list("text", flat=True)) == ["Bring it in today."]

    client.post(url, {"text": "Bring it in today.", "form_token": reply_token(client, conversation)})  # a new page
    assert conversation.messages.filter(sender="agent").count() == 2


def test_a_note_form_sent_twice_stores_one_note(client, bob, acme_bot):
    conversation, _ = make_conversation(acme_bot)
    client.force_login(bob)
    token = reply_token(client, conversation)
    for _ in range(2):
        client.post(reverse("inbox:reply", args=[conversation.id]), {"text": "VIP", "note": "1", "form_token": token})
    assert conversation.messages.filter(sender="note").count() == 1
    assert not conversation.messages.filter(sender="agent").exists()


def test_the_same_form_posted_twice_at_the_same_moment_stores_one_reply(transactional_db, bob, acme_bot):
    """Both posts arrive while the first has not stored its message yet (the conversation's row held by
    something else): one reply between them."""
    conversation, _ = make_conversation(acme_bot)
    agent = Client()
    agent.force_login(bob)
    token = reply_token(agent, conversation)
    tabs = [Client(), Client()]  # a client each: one is not for two threads at once
    for tab in tabs:
        tab.force_login(bob)
    held, release = threading.Event(), threading.Event()

    def hold_the_conversation():
        with transaction.atomic():
            Conversation.objects.select_for_update().get(id=conversation.id)
            held.set()
            release.wait(30)
        connection.close()

    def post(tab):
        try:
            tab.post(reverse("inbox:reply", args=[conversation.id]), {"text": "On my way.", "form_token": token})
        finally:
            connection.close()

    holder = threading.Thread(target=hold_the_conversation)
    holder.start()
    assert held.wait(10)
    posts = [threading.Thread(target=post, args=[tab]) for tab in tabs]
    for thread in posts:
        thread.start()
    wait_for(lambda: waiting_for_a_lock() == len(posts), timeout=30, what="both posts waiting for the row")
    release.set()
    holder.join(10)
    for thread in posts:
        thread.join(30)
    assert conversation.messages.filter(sender="agent").count() == 1


def waiting_for_a_lock() -> int:
    """How many other sessions of the test database wait for a lock (a row another holds) now."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'")
        return cursor.fetchone()[0]


def test_the_polled_state_is_what_the_page_shows(client, alice, bob, acme_bot):
    conversation, _ = make_conversation(acme_bot)
    client.force_login(bob)
    url = reverse("inbox:thread-json", args=[conversation.id])
    state = client.get(url).json()["conversation"]
    assert (state["status_label"], state["assignee"], state["needs_human"], state["bot_paused"]) == \
        ("Open", None, False, False)
    services.set_bot_paused(conversation, True, by=alice)
    services.set_status(conversation, Conversation.Status.CLOSED)
    Conversation.objects.filter(id=conversation.id).update(needs_human=True)
    state = client.get(url).json()["conversation"]
    assert (state["status"], state["status_label"], state["assignee"], state["needs_human"]) == \
        ("closed", "Closed", {"id": alice.id, "name": "alice"}, True)
