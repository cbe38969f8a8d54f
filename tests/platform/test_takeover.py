"""Taking a conversation over: what the bot had not answered yet is the team's, never the bot's.
A queued reply task finds it skipped, a reply generated meanwhile is not stored, and a reply
being streamed stops. Giving it back: the bot answers what the customer wrote that nobody answered.
A customer writing while the team has it needs a human again."""
import pytest

from bots import services
from bots.models import Message
from tests.conftest import wait_for
from tests.platform.conftest import make_conversation

pytestmark = pytest.mark.django_db


def waiting(bot, text="Do you fix e-bikes?", thread="visitor-1"):
    """A customer message waiting for the bot (its reply task not run: this test runs it)."""
    conversation, inbound = make_conversation(bot, text=text, thread=thread)
    Message.objects.filter(id=inbound.id).update(reply_state=Message.ReplyState.PENDING)
    inbound.refresh_from_db()
    return conversation, inbound


def test_taking_over_skips_what_waits_for_the_bot_and_its_queued_task_answers_nothing(bob, acme_bot):
    from inference.tasks import generate_reply

    conversation, inbound = waiting(acme_bot)
    _, elsewhere = waiting(acme_bot, thread="visitor-2")  # another conversation keeps its turn
    services.set_bot_paused(conversation, True, by=bob)

    inbound.refresh_from_db()
    assert inbound.reply_state == Message.ReplyState.SKIPPED
    assert inbound.meta["skip_reason"] == "agent has the conversation"
    assert generate_reply(inbound.id) is None  # the queued task, run here: no model asked, nothing stored
    assert not Message.objects.filter(reply_to=inbound).exists()
    assert Message.objects.get(id=elsewhere.id).reply_state == Message.ReplyState.PENDING
    assert services.requeue_unfinished() == (1, 0)  # a lost broker's sweep queues only the other one


def test_an_agents_reply_and_a_handoff_take_what_waits_too(bob, acme_bot):
    conversation, first = waiting(acme_bot, thread="agent")
    services.agent_reply(conversation, bob, "Yes, we do.")
    assert Message.objects.get(id=first.id).reply_state == Message.ReplyState.SKIPPED

    acme_bot.handoff_triggers = "human please"
    acme_bot.save()
    acme_bot.publish()
    conversation, earlier = waiting(acme_bot, thread="handoff")
    services.receive(bot=acme_bot, channel="widget", thread_id="handoff", text="human please")
    earlier = Message.objects.get(id=earlier.id)
    assert earlier.reply_state == Message.ReplyState.SKIPPED
    assert earlier.meta["skip_reason"] == "handed to the team before an answer"  # the request is the message that asked


def test_a_reply_generated_before_the_takeover_is_not_stored(bob, acme_bot):
    conversation, inbound = waiting(acme_bot)
    services.set_bot_paused(conversation, True, by=bob)  # while the model was answering
    assert services.record_reply(inbound, "We do!", {}, while_pending=True) == (None, False)
    assert not Message.objects.filter(reply_to=inbound).exists()

    _, answered = waiting(acme_bot, thread="visitor-2")
    reply, created = services.record_reply(answered, "We do!", {}, while_pending=True)
    assert created and reply.text == "We do!"
    assert Message.objects.get(id=answered.id).reply_state == Message.ReplyState.DONE
    # a second task for the same message (a redelivery) gets the stored reply back, stores none
    assert services.record_reply(answered, "Again", {}, while_pending=True) == (reply, False)


def test_a_reply_being_streamed_stops_when_the_team_takes_over(settings, monkeypatch, tiny_target_dir, bob, acme_bot):
    from inference import runtime, tasks

    settings.CHATNEXUS_TARGET, settings.CHATNEXUS_DTYPE = tiny_target_dir, "fp32"
    settings.CHATNEXUS_DRAFTER, settings.CHATNEXUS_DEVICE = "none", "cpu"
    monkeypatch.setattr(tasks, "TAKEN_OVER_CHECK_S", 0.0)  # look before every delta
    engine = runtime.engine_for()
    messages = [{"role": "user", "content": "Hello there, do you fix e-bikes?"}]

    _, answered = waiting(acme_bot, thread="visitor-2")
    text, _ = tasks._stream(engine, messages, answered, 24, 0.0)
    assert text  # the model's words, streamed

    conversation, inbound = waiting(acme_bot)
    services.set_bot_paused(conversation, True, by=bob)
    assert tasks._stream(engine, messages, inbound, 24, 0.0) == ("", None)  # taken over: nothing said, no stop


def test_a_second_task_for_a_message_answered_while_it_waited_for_the_model_does_nothing(
        transactional_db, settings, tiny_target_dir, acme_bot):
    """The sweep queues again what waited long; in the embedded server that copy runs beside the
    first and waits for the model. Once the first has answered, the copy must neither answer again
    nor tell the widget the bot is typing (dots that never went away)."""
    import threading

    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    from bots import events
    from inference import runtime, tasks

    settings.CHATNEXUS_TARGET, settings.CHATNEXUS_DTYPE = tiny_target_dir, "fp32"
    settings.CHATNEXUS_DRAFTER, settings.CHATNEXUS_DEVICE = "none", "cpu"
    runtime.engine_for()  # loaded before the race below
    conversation, inbound = waiting(acme_bot, thread="visitor-sweep")
    layer = get_channel_layer()
    listener = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(events.group_for(conversation.id), listener)

    with runtime.generation_lock:  # the first task is generating
        copy = threading.Thread(target=tasks.generate_reply, args=[inbound.id])
        copy.start()
        wait_for(lambda: waiting_for_the_model(copy), what="the copy waiting for the model")
        services.record_reply(inbound, "We fix e-bikes.", {"new_tokens": 4}, while_pending=True)
    copy.join(60)

    async def drained():
        import asyncio

        got = []
        while True:
            try:
                got.append(await asyncio.wait_for(layer.receive(listener), 0.5))
            except asyncio.TimeoutError:
                return got

    kinds = [m["event"] for m in async_to_sync(drained)()]
    assert "reply.start" not in kinds and "reply.delta" not in kinds
    assert Message.objects.filter(reply_to=inbound).count() == 1


def waiting_for_the_model(thread) -> bool:
    """Is ``thread`` (running inference.tasks) blocked at the generation lock?"""
    import linecache
    import sys

    frame = sys._current_frames().get(thread.ident)
    while frame is not None:
        if frame.f_code.co_name == "_generate" and "generation_lock" in linecache.getline(frame.f_code.co_filename,
                                                                                          frame.f_lineno):
            return True
        frame = frame.f_back
    return False


def test_closing_a_conversation_gives_it_back_to_the_bot(bob, acme_bot):
    """The team finished the hand-off: when the customer writes again weeks later (a widget visitor or a
    WhatsApp number is one conversation for good), the bot answers, and nobody is asked to step in."""
    from bots.models import Conversation

    acme_bot.handoff_triggers = "human please"
    acme_bot.save()
    acme_bot.publish()
    asked = services.receive(bot=acme_bot, channel="widget", thread_id="asked", text="human please").conversation
    answered = services.receive(bot=acme_bot, channel="widget", thread_id="answered", text="human please").conversation
    services.agent_reply(answered, bob, "Sorted: your refund is on its way.")
    for conversation in (asked, answered):  # settled by phone, or in the thread
        services.set_status(conversation, Conversation.Status.CLOSED)
        conversation.refresh_from_db()
        assert not conversation.needs_human and not conversation.bot_paused

        again = services.receive(bot=acme_bot, channel="widget", thread_id=conversation.external_id,
                                 text="Do you fix e-bikes?")
        assert again.message.reply_state == Message.ReplyState.PENDING and not again.message.meta.get("skip_reason")
        assert again.conversation.status == Conversation.Status.OPEN and not again.conversation.needs_human


def test_a_customer_who_writes_after_the_agents_answer_needs_a_human_again(client, smtp_settings, bob, acme_bot):
    """The agent's first answer took the conversation out of "Needs a human"; the customer writing
    again while the team has it waits for a person again, until one answers."""
    from bots.models import Conversation
    from bots.tasks import notify_team_of_message

    acme_bot.handoff_triggers = "human please"
    acme_bot.save()
    acme_bot.publish()
    conversation = services.receive(bot=acme_bot, channel="widget", thread_id="order", text="human please").conversation
    services.agent_reply(conversation, bob, "Let me check.")
    assert not Conversation.objects.get(id=conversation.id).needs_human

    later = services.receive(bot=acme_bot, channel="widget", thread_id="order", text="Order #123 — still nothing?")
    assert later.message.reply_state == Message.ReplyState.SKIPPED  # the bot still leaves it to the team
    assert Conversation.objects.get(id=conversation.id).needs_human
    client.force_login(bob)
    assert f"/inbox/{conversation.id}/" in client.get("/inbox/", {"needs_human": "on"}).content.decode()
    notify_team_of_message(later.message.id)  # run here, as the worker would
    assert [m["to"] for m in smtp_settings.messages] == [["bob@example.com"]]  # the assignee is still told

    services.agent_reply(conversation, bob, "Found it: it ships today.")
    services.receive(bot=acme_bot, channel="widget", thread_id="order", text="Out of office until Monday",
                     answer=False, skip_reason="automatic reply", automated=True)  # a machine: nobody waits
    assert not Conversation.objects.get(id=conversation.id).needs_human
    assert f"/inbox/{conversation.id}/" not in client.get("/inbox/", {"needs_human": "on"}).content.decode()


def test_giving_back_gets_the_bot_to_answer_what_the_customer_wrote_meanwhile(transactional_db, celery_workers, bob,
                                                                              acme_bot):
    """Taking over skipped what the customer wrote; giving back without answering left them waiting in
    silence. The bot answers their latest message (a real worker), once however often it is given back."""
    from bots.models import Conversation

    conversation = services.receive(bot=acme_bot, channel="widget", thread_id="back", text="Hi").conversation
    wait_for(lambda: Message.objects.filter(conversation=conversation, sender=Message.Sender.BOT).exists(),
             timeout=300, what="the bot's first reply (the worker loading its model)")
    services.set_bot_paused(conversation, True, by=bob)
    first = services.receive(bot=acme_bot, channel="widget", thread_id="back", text="Do you fix e-bikes?").message
    latest = services.receive(bot=acme_bot, channel="widget", thread_id="back", text="And how long does it take?").message
    assert Message.objects.get(id=latest.id).reply_state == Message.ReplyState.SKIPPED

    services.set_bot_paused(Conversation.objects.get(id=conversation.id), False)
    services.set_bot_paused(Conversation.objects.get(id=conversation.id), False)  # clicked twice
    reply = wait_for(lambda: Message.objects.filter(reply_to=latest).first(), what="the bot's answer")
    assert reply.sender == Message.Sender.BOT
    wait_for(lambda: Message.objects.get(id=latest.id).reply_state == Message.ReplyState.DONE, what="it answered")
    assert Message.objects.get(id=first.id).reply_state == Message.ReplyState.SKIPPED  # one answer, to the latest

    services.set_bot_paused(Conversation.objects.get(id=conversation.id), True, by=bob)
    services.set_bot_paused(Conversation.objects.get(id=conversation.id), False)  # answered already: nothing more
    assert not Message.objects.filter(direction=Message.Direction.INBOUND, conversation=conversation,
                                      reply_state=Message.ReplyState.PENDING).exists()
    assert Message.objects.filter(conversation=conversation, sender=Message.Sender.BOT).count() == 2


def test_giving_back_leaves_alone_what_a_person_answered(bob, acme_bot):
    """Only a message nobody answered goes back to the bot: not one an agent answered, not the request
    for a human (the handoff message answered it), not an auto-reply; an internal note is no answer."""
    from bots.models import Conversation

    def given_back(thread):
        conversation = Conversation.objects.get(bot=acme_bot, external_id=thread)
        services.set_bot_paused(conversation, False)
        return Message.objects.filter(conversation=conversation, direction=Message.Direction.INBOUND).order_by("id")

    def taken_over(thread, text="Do you fix e-bikes?"):
        conversation = services.receive(bot=acme_bot, channel="widget", thread_id=thread, text="Hi",
                                        answer=False).conversation
        services.set_bot_paused(conversation, True, by=bob)
        return conversation, services.receive(bot=acme_bot, channel="widget", thread_id=thread, text=text).message

    conversation, _ = taken_over("answered")
    services.agent_reply(conversation, bob, "Yes, we do.")
    assert [m.reply_state for m in given_back("answered")] == ["skipped", "skipped"]

    conversation, asked = taken_over("noted")
    services.add_note(conversation, bob, "Ask the workshop.")  # the team's, never the customer's
    services.receive(bot=acme_bot, channel="widget", thread_id="noted", text="Out of office until Monday",
                     answer=False, skip_reason="automatic reply", automated=True)  # a machine's, not answered
    assert [m.reply_state for m in given_back("noted")] == ["skipped", "pending", "skipped"]
    assert "skip_reason" not in Message.objects.get(id=asked.id).meta
    assert services.requeue_unfinished()[0] == 1  # a broker that lost its task: the sweep queues it again
    assert [m.reply_state for m in given_back("noted")] == ["skipped", "pending", "skipped"]  # not paused: as it was

    acme_bot.handoff_triggers = "human please"
    acme_bot.save()
    acme_bot.publish()
    services.receive(bot=acme_bot, channel="widget", thread_id="handoff", text="human please")
    assert [m.reply_state for m in given_back("handoff")] == ["skipped"]  # the handoff message answered it

    conversation, _ = taken_over("closed")
    services.set_status(conversation, Conversation.Status.CLOSED)  # the team is done: no answer owed
    assert [m.reply_state for m in given_back("closed")] == ["skipped", "skipped"]


def test_a_reply_to_what_waited_for_the_team_is_timed_from_the_give_back(bob, acme_bot):
    """A customer wrote at 10:00, the team gave the conversation back at 15:00: the bot's answer took
    seconds, not five hours. Timed from the customer's message, the team's hours showed as the bot's reply
    latency (the dashboards' median, p95 and daily chart) and as its wait before the model."""
    from datetime import timedelta

    from django.utils import timezone

    from bots import stats
    from bots.models import Conversation

    conversation, _ = make_conversation(acme_bot, text="Hi", thread="late")
    services.set_bot_paused(conversation, True, by=bob)
    asked = services.receive(bot=acme_bot, channel="widget", thread_id="late", text="Do you fix e-bikes?").message
    Message.objects.filter(id=asked.id).update(created=timezone.now() - timedelta(hours=5))

    services.set_bot_paused(Conversation.objects.get(id=conversation.id), False)
    reply, _ = services.record_reply(Message.objects.get(id=asked.id), "We do!", {"total_s": 0.5},
                                     while_pending=True)  # as the reply task stores it
    assert 0 <= reply.latency_s < 60
    dashboard = stats.summary(acme_bot.organization)
    assert dashboard["latency_p95_s"] < 60 and dashboard["queue_p95_s"] < 60


def test_giving_back_leaves_a_request_for_a_person_and_a_day_old_message_to_the_team(bob, acme_bot):
    """The customer asked for a person while the team had the conversation (typed, or the widget's button):
    the model answering "human please" helps nobody. A message older than a day is no question to answer out
    of the blue either. Both stay skipped when the conversation is given back, no reply task queued."""
    from datetime import timedelta

    from django.utils import timezone

    from bots.models import Conversation

    acme_bot.handoff_triggers = "human please"
    acme_bot.save()
    acme_bot.publish()

    def given_back(thread, text, **how):
        conversation = services.receive(bot=acme_bot, channel="widget", thread_id=thread, text="Hi",
                                        answer=False).conversation
        services.set_bot_paused(conversation, True, by=bob)
        latest = services.receive(bot=acme_bot, channel="widget", thread_id=thread, text=text, **how).message
        assert latest.reply_state == Message.ReplyState.SKIPPED
        return conversation, latest

    typed = given_back("typed", "Human please, now")
    button = given_back("button", "I'd like to talk to a person", answer=False, skip_reason="handoff")
    old = given_back("old", "Do you fix e-bikes?")
    Message.objects.filter(id=old[1].id).update(created=timezone.now() - timedelta(hours=25))
    for conversation, latest in (typed, button, old):
        services.set_bot_paused(Conversation.objects.get(id=conversation.id), False)
        assert Message.objects.get(id=latest.id).reply_state == Message.ReplyState.SKIPPED
    assert services.requeue_unfinished() == (0, 0)  # nothing waits for the bot

    recent = given_back("recent", "Do you fix e-bikes?")  # a day at most: the bot answers it
    Message.objects.filter(id=recent[1].id).update(created=timezone.now() - timedelta(hours=23))
    services.set_bot_paused(Conversation.objects.get(id=recent[0].id), False)
    assert Message.objects.get(id=recent[1].id).reply_state == Message.ReplyState.PENDING


def test_a_reply_being_stored_and_a_takeover_lock_the_conversation_and_message_in_one_order(transactional_db,
                                                                                           acme_bot):
    """The takeover locks the conversation, then the customer's waiting messages (skip_pending); storing
    the bot's reply locked the message, then waited on the conversation: each waited on the other, and
    PostgreSQL aborted one (the agent's click a 500). Storing now waits for the conversation first,
    leaving the message alone: the takeover, holding the conversation, still takes the message at once."""
    import threading

    from django.db import OperationalError, connection, transaction

    from bots.models import Conversation
    from tests.platform.test_double_submit import waiting

    def waiting_now():  # in a transaction, pg_stat_activity is read once and kept: read it afresh
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_stat_clear_snapshot()")
        return waiting()

    inbound = services.receive(bot=acme_bot, channel="widget", thread_id="order", text="Hi", answer=False).message
    Message.objects.filter(id=inbound.id).update(reply_state=Message.ReplyState.PENDING)
    stored = []

    def store():
        try:
            stored.append(services.record_reply(inbound, "Hello!", {}, while_pending=True))
        finally:
            connection.close()

    with transaction.atomic():
        Conversation.objects.select_for_update().get(id=inbound.conversation_id)  # the takeover's first step
        storing = threading.Thread(target=store)
        storing.start()
        wait_for(lambda: waiting_now() >= 1, what="the reply's store waiting on a lock")
        try:  # its second: the waiting messages, which the store must not be holding
            Message.objects.select_for_update(nowait=True).filter(id=inbound.id).exists()
            took_the_message = True
        except OperationalError:
            took_the_message = False
    storing.join(30)
    assert took_the_message
    assert stored and stored[0][1]  # and the reply was stored once the takeover let go
