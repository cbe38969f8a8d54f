"""The inbox list's stamp (``format=stamp``, which inbox.js polls to say the list is out of date) moves when a
row would show another state, not only when a conversation comes, goes or gets a message: flagged "needs a
human" (a reply that could not be delivered), closed or reopened, taken over or given back, assigned, tagged
or untagged."""
from django.urls import reverse

from bots import services
from bots.models import Conversation
from channels_app.tasks import flag_for_the_team

from .conftest import make_conversation


def test_the_stamp_moves_when_a_rows_state_changes_without_a_message(client, bob, alice, acme_bot):
    conversation, message = make_conversation(acme_bot, thread="v-1")
    make_conversation(acme_bot, thread="v-2")  # another row, unchanged throughout
    client.force_login(bob)

    def stamp():
        return client.get(reverse("inbox:list"), {"format": "stamp"}).json()["stamp"]

    seen = [client.get(reverse("inbox:list")).context["stamp"]]
    for change in (lambda: flag_for_the_team(message),  # its delivery failed for good
                   lambda: services.set_status(conversation, Conversation.Status.CLOSED),
                   lambda: services.set_status(conversation, Conversation.Status.OPEN),
                   lambda: services.set_bot_paused(conversation, True),
                   lambda: services.assign(conversation, alice.id),
                   lambda: services.assign(conversation, bob.id),
                   lambda: services.assign(conversation, None),
                   lambda: services.set_bot_paused(conversation, False)):
        change()
        assert stamp() != seen[-1]
        seen.append(stamp())
    assert stamp() == seen[-1]  # and stays put while nothing changes


def test_the_stamp_of_a_filtered_list_moves_only_with_its_own_rows(client, bob, acme_bot):
    from bots.models import Bot

    other = Bot.objects.create(organization=acme_bot.organization, name="Max")
    mine, _ = make_conversation(acme_bot, thread="v-1")
    theirs, message = make_conversation(other, thread="v-2")
    client.force_login(bob)

    def stamp():
        return client.get(reverse("inbox:list"), {"bot": acme_bot.id, "format": "stamp"}).json()["stamp"]

    before = stamp()
    flag_for_the_team(message)
    assert stamp() == before
    flag_for_the_team(mine.messages.get())
    assert stamp() != before


def test_the_stamp_moves_when_a_conversations_tags_change(client, bob, alice, acme_bot):
    conversation, _ = make_conversation(acme_bot, thread="v-1")
    other, _ = make_conversation(acme_bot, thread="v-2")
    client.force_login(bob)

    def stamp():
        return client.get(reverse("inbox:list"), {"format": "stamp"}).json()["stamp"]

    def tag_id(name):
        return conversation.tags.get(name=name).id

    seen = [stamp()]
    for change in (lambda: client.post(reverse("inbox:tags", args=[conversation.id]), {"add": "billing"}),
                   lambda: client.post(reverse("inbox:tags", args=[conversation.id]), {"add": "bug"}),
                   lambda: client.post(reverse("inbox:tags", args=[conversation.id]), {"remove": tag_id("billing")}),
                   lambda: client.post(reverse("inbox:bulk"), {"action": "tag", "tag": "bug", "ids": [other.id]}),
                   lambda: services.set_tags(conversation, ["billing"])):  # bug swapped for billing, as the API does
        change()
        assert stamp() != seen[-1]
        seen.append(stamp())
    client.force_login(alice)  # an owner deletes the tag: off every conversation
    client.post(reverse("org:tag-edit", args=[tag_id("billing")]), {"delete": "1"})
    assert not conversation.tags.exists() and stamp() != seen[-1]
    seen.append(stamp())
    assert stamp() == seen[-1]  # and stays put while nothing changes
