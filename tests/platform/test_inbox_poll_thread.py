"""The thread page's poll, incremental: ``?since=<version>`` answers only the messages changed past it (new
ones, and ones any write changed: a save, a queryset's update), with the count and the sum of versions
of all the conversation's messages, which the page checks what it holds against (a deletion, or a change
committed after a later one, is in no answer of changes); without ``since``, every message, as pages
from before versions poll."""
import threading
from contextlib import contextmanager

from django.db import connection, transaction
from django.urls import reverse

from bots import services
from bots.models import Message
from channels_app.tasks import flag_for_the_team

from .conftest import make_conversation


def poll(client, conversation, **params):
    response = client.get(reverse("inbox:thread-json", args=[conversation.id]), params)
    assert response.status_code == 200
    return response.json()


def take(held, data):
    """What the thread page does with an answer (inbox.js): {id: version} updated; whether it now holds what
    the server counted."""
    held.update({m["id"]: m["version"] for m in data["messages"]})
    return len(held) == data["count"] and sum(held.values()) == data["version_sum"]


@contextmanager
def committed_after(store):
    """``store()`` in a transaction of another thread that commits when the block ends: what it stores has
    its version drawn now, below those of what the block writes, and commits after them."""
    stored, release = threading.Event(), threading.Event()

    def write():
        with transaction.atomic():
            store()
            stored.set()
            release.wait(30)
        connection.close()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert stored.wait(10)
        yield
    finally:
        release.set()
        writer.join(10)


def test_a_poll_since_a_version_answers_only_what_changed_past_it(client, bob, acme_bot):
    conversation, asked = make_conversation(acme_bot, text="When are you open?")
    make_conversation(acme_bot, thread="visitor-2", text="Someone else's question")
    client.force_login(bob)
    first = poll(client, conversation)  # a page from before versions: all of it, as before
    assert [m["text"] for m in first["messages"]] == ["When are you open?"]
    held = {}
    assert take(held, first)

    Message.objects.filter(id=asked.id).update(reply_state="pending")
    reply, _ = services.record_reply(asked, "Nine to six.", {"new_tokens": 4})  # new, and the question answered
    changed = poll(client, conversation, since=max(held.values()))
    assert [(m["text"], m["reply_state"]) for m in changed["messages"]] == [("When are you open?", "done"),
                                                                          ("Nine to six.", "")]
    assert take(held, changed)
    assert poll(client, conversation, since=max(held.values()))["messages"] == []  # nothing since

    services.rate_reply(conversation.id, reply.id, Message.Rating.NOT_HELPFUL)  # a queryset's update
    flag_for_the_team(reply)  # the conversation's state: not a message's
    rated = poll(client, conversation, since=max(held.values()))
    assert [(m["id"], m["rating"]) for m in rated["messages"]] == [(reply.id, -1)]
    assert rated["conversation"]["needs_human"] and take(held, rated)
    assert [m["version"] for m in poll(client, conversation)["messages"]] == [held[asked.id], held[reply.id]]


def test_a_long_threads_poll_is_as_small_as_what_changed(client, bob, acme_bot):
    conversation, _ = make_conversation(acme_bot, text="First of many")
    for n in range(150):  # months of WhatsApp
        make_conversation(acme_bot, text=f"Message {n}: " + "words " * 40)
    client.force_login(bob)
    everything = client.get(reverse("inbox:thread-json", args=[conversation.id]))
    latest = max(m["version"] for m in everything.json()["messages"])
    idle = client.get(reverse("inbox:thread-json", args=[conversation.id]), {"since": latest})
    assert len(everything.content) > 50_000 and len(idle.content) < 500
    assert idle.json()["count"] == 151


def test_a_deleted_message_is_in_no_answer_but_the_count_and_sum_say_so(client, bob, acme_bot):
    conversation, first = make_conversation(acme_bot, text="Hello")
    make_conversation(acme_bot, text="My card number is 4111 1111 1111 1111")
    client.force_login(bob)
    held = {}
    assert take(held, poll(client, conversation))
    services.delete_messages(Message.objects.filter(text__startswith="My card"))  # as the admin and retention do
    since = poll(client, conversation, since=max(held.values()))
    assert since["messages"] == [] and not take(held, since)  # the page asks for all of them again
    assert [m["id"] for m in poll(client, conversation)["messages"]] == [first.id]


def test_every_write_moves_a_messages_version_and_none_is_used_twice(acme_bot):
    _, message = make_conversation(acme_bot, text="Hello")

    def version(of=message):
        return Message.objects.values_list("version", flat=True).get(id=of.id)

    seen = [version()]
    Message.objects.filter(id=message.id).update(delivery_error="x")  # a queryset's update: no model code runs
    seen.append(version())
    message.refresh_from_db()
    message.text = "Hello!"
    message.save(update_fields=["text"])
    seen.append(version())
    message.save()  # every field, the version read before too: the database numbers it anyway
    seen.append(version())
    Message.objects.bulk_update([message], ["meta"])
    seen.append(version())
    assert seen == sorted(set(seen)) and seen[0] > 0
    _, top = make_conversation(acme_bot, text="Anyone?")
    highest = version(top)
    top.delete()  # the highest version gone: the next message's is higher still
    _, later = make_conversation(acme_bot, text="Anyone there?")
    assert highest > seen[-1] and version(later) > highest


def test_a_message_committed_after_a_later_change_shows_in_the_count(transactional_db, client, bob, alice, acme_bot):
    conversation, first = make_conversation(acme_bot, text="Hello")
    reply, _ = services.record_reply(first, "Hi, how can I help?", {})
    client.force_login(bob)
    held = {}
    assert take(held, poll(client, conversation))
    with committed_after(lambda: services.add_note(conversation, alice, "Checking with the warehouse")):
        services.rate_reply(conversation.id, reply.id, Message.Rating.HELPFUL)
        assert take(held, poll(client, conversation, since=max(held.values())))  # the rating; the note not yet
    late = poll(client, conversation, since=max(held.values()))
    assert late["messages"] == [] and late["count"] == 3 and not take(held, late)  # below the page's highest
    assert "Checking with the warehouse" in [m["text"] for m in poll(client, conversation)["messages"]]


def test_a_since_that_is_no_version_is_refused(client, bob, acme_bot):
    conversation, _ = make_conversation(acme_bot)
    client.force_login(bob)
    for since in ("", "abc", "-1", "²", "9" * 19):
        response = client.get(reverse("inbox:thread-json", args=[conversation.id]), {"since": since})
        assert response.status_code == 400, since
