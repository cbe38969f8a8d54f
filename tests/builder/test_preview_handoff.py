"""The builder's test chat after a handoff, over the real preview websocket (bots.consumers).

A handoff (a trigger phrase, or a reply the model could not give) pauses the bot as in any chat;
a test chat has no team to answer it and no inbox to give it back from, so the next test message
gives it back to the bot: it waits for the model's reply instead of being skipped for good.
No inference worker runs here: the reply task is queued, and the message waits for it.
"""
import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async

from bots.models import Conversation, Message

from .test_preview_consumer import communicator

pytestmark = pytest.mark.usefixtures("fresh_channel_layer")  # tests/conftest.py


async def _until(comm, predicate):
    """The socket's events up to and including the first that ``predicate`` accepts."""
    seen = []
    while not seen or not predicate(seen[-1]):
        seen.append(await comm.receive_json_from(timeout=30))
    return seen


def _is(kind, client_id=None):
    return lambda event: event["event"] == kind and (client_id is None or event.get("client_id") == client_id)


async def _hand_off_then_ask(user, bot_id, hand_off):
    """Send a first message, ``hand_off(first accepted event)`` (sync, database), then ask again."""
    comm = communicator(user, bot_id)
    await comm.connect()
    await comm.receive_json_from(timeout=30)  # ready
    await comm.send_json_to({"type": "message", "id": "c1", "text": "Can I talk to a human please?"})
    first = (await _until(comm, _is("accepted", "c1")))[-1]
    await database_sync_to_async(hand_off)(first)
    await comm.send_json_to({"type": "message", "id": "c2", "text": "What are your opening hours?"})
    second = (await _until(comm, _is("accepted", "c2")))[-1]
    await comm.disconnect()
    return first, second


def _trigger(first):
    pass  # the first message's own trigger phrase hands it off


def _model_failed(first):
    # what the inference worker does when the model cannot answer (inference/tasks.py _mark_failed)
    from inference.tasks import _mark_failed

    _mark_failed(Message.objects.get(id=first["message_id"]), RuntimeError("the model broke"))


@pytest.mark.parametrize("hand_off", [_trigger, _model_failed], ids=["trigger phrase", "model failed"])
def test_the_next_test_message_after_a_handoff_is_answered_by_the_bot(transactional_db, alice, acme_bot, hand_off):
    acme_bot.handoff_triggers = "talk to a human" if hand_off is _trigger else ""
    acme_bot.save()  # the draft: what the test chat answers from
    first, second = async_to_sync(_hand_off_then_ask)(alice, acme_bot.id, hand_off)

    conversation = Conversation.objects.get(id=first["conversation_id"])
    assert second["conversation_id"] == conversation.id  # the same test conversation, not a reset
    handoff = conversation.messages.get(sender=Message.Sender.SYSTEM)  # the bot's handoff message was said
    assert handoff.reply_to_id == first["message_id"]
    asked = Message.objects.get(id=second["message_id"])
    assert asked.reply_state == Message.ReplyState.PENDING  # queued for the model, not skipped
    assert "skip_reason" not in asked.meta
    assert not conversation.bot_paused

