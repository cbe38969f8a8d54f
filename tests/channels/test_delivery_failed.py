"""A reply that will never reach the customer (the channel refused it for good, or stayed down through
every try) puts its conversation under "Needs a human", and pages open on it are told: before, only the
message was marked failed, the inbox list showed "Bot: ..." as if the customer had been answered, and
nobody on the team knew. A reply the customer's own opt-out refused flags nothing
(test_whatsapp_optout.py): silence is what they asked for.

Replies go out through the real ``deliver`` task body, in this process, to the stub Twilio API or to
an SMTP port nothing listens on."""
import asyncio

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.urls import reverse

from bots import events, services
from bots.models import Conversation, Message
from channels_app.base import DeliveryError
from channels_app.tasks import MAX_ATTEMPTS, deliver
from tests.conftest import free_port

from .conftest import whatsapp_params
from .mails import mail

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_channel_layer")]  # tests/conftest.py

OUTSIDE_THE_WINDOW = {"code": 63016, "message": "Failed to send freeform message because you are outside the allowed window."}


def listen(conversation):
    """Join ``conversation``'s live group; returns what was pushed to it since, once called."""
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(events.group_for(conversation.id), channel)

    async def drained():
        got = []
        while True:
            try:
                got.append(await asyncio.wait_for(layer.receive(channel), 0.5))
            except asyncio.TimeoutError:  # deliver pushed before it returned: nothing more is coming
                return got

    return lambda: async_to_sync(drained)()


def flagged(conversation) -> bool:
    return Conversation.objects.get(id=conversation.id).needs_human


def needing_a_human(client, user) -> str:
    """The inbox list, filtered to "Needs a human", as ``user`` sees it."""
    client.force_login(user)
    return client.get(reverse("inbox:list"), {"needs_human": "on"}).content.decode()


@pytest.fixture
def whatsapp_question(whatsapp_channel, signed_post):
    assert signed_post(f"/channels/whatsapp/{whatsapp_channel.key}/", whatsapp_params()).status_code == 200
    return Message.objects.get()


def test_a_bot_reply_twilio_refuses_for_good_puts_the_conversation_under_needs_a_human(
        whatsapp_question, twilio_stub, client, alice):
    conversation = whatsapp_question.conversation
    reply, _ = services.record_reply(whatsapp_question, "We are open Monday to Friday, 9am to 6pm.", {})
    assert not flagged(conversation) and f"/inbox/{conversation.id}/" not in needing_a_human(client, alice)
    heard = listen(conversation)
    twilio_stub.fail_next(400, **OUTSIDE_THE_WINDOW)

    deliver(reply.id)
    reply.refresh_from_db()
    assert reply.delivery_status == Message.Delivery.FAILED and reply.delivery_error.startswith("63016")
    assert flagged(conversation)
    assert {"type": "conversation.event", "event": "conversation", "needs_human": True} in heard()
    assert f"/inbox/{conversation.id}/" in needing_a_human(client, alice)


def test_an_agents_reply_that_fails_for_good_flags_the_conversation_again(whatsapp_question, twilio_stub, alice):
    """Answering cleared the flag; the agent has moved on by the time the channel gave up."""
    conversation = whatsapp_question.conversation
    Conversation.objects.filter(id=conversation.id).update(needs_human=True)  # the customer asked for a person
    answer = services.agent_reply(conversation, alice, "Hi, Alice here: we open at 9.")
    assert not flagged(conversation)
    twilio_stub.fail_next(400, **OUTSIDE_THE_WINDOW)

    deliver(answer.id)
    answer.refresh_from_db()
    assert answer.delivery_status == Message.Delivery.FAILED
    assert flagged(conversation)


def test_an_email_reply_is_flagged_once_smtp_stayed_down_through_every_try(email_channel, post_mail, client, alice):
    email_channel.settings["smtp_port"] = free_port()  # nothing listens: "unreachable", a transient failure
    email_channel.save()
    post_mail(email_channel.key, mail())
    question = Message.objects.get()
    conversation = question.conversation
    reply, _ = services.record_reply(question, "We open at 9am.", {})

    with pytest.raises(DeliveryError, match="unreachable"):  # called directly, the retry re-raises
        deliver(reply.id)
    reply.refresh_from_db()
    assert reply.delivery_status == Message.Delivery.PENDING
    assert not flagged(conversation)  # tried again later: nothing for the team yet

    Message.objects.filter(id=reply.id).update(delivery_attempts=MAX_ATTEMPTS - 1)  # every try but the last failed
    heard = listen(conversation)
    deliver(reply.id)
    reply.refresh_from_db()
    assert reply.delivery_status == Message.Delivery.FAILED and reply.delivery_attempts == MAX_ATTEMPTS
    assert flagged(conversation)
    assert {"type": "conversation.event", "event": "conversation", "needs_human": True} in heard()
    assert f"/inbox/{conversation.id}/" in needing_a_human(client, alice)
