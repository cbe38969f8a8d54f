"""Work a lost broker forgot is queued again: the beat job ``bots.tasks.sweep_unfinished``
(services.requeue_unfinished) on real PostgreSQL, Redis and Celery workers, and the embedded
platform (``manage.py serve``: SQLite, in-memory broker) running it from its own beat thread."""
import sys
from datetime import timedelta

import kombu.exceptions

from django.conf import settings
from django.db.models.functions import Now
from django.utils import timezone

from bots import services
from bots.models import Conversation, Message, ReplyBeat
from bots.tasks import sweep_unfinished
from chatnexus.celery import app
from tests.conftest import Service, embedded_env, free_port, manage, wait_for


def stored_without_a_task(bot, thread, text, age_s, channel="preview"):
    """An inbound message as receive() stores it, whose task never reached the broker."""
    conversation, _ = Conversation.objects.get_or_create(
        organization=bot.organization, bot=bot, channel=channel, external_id=thread
    )
    message = Message.objects.create(
        organization=bot.organization, bot=bot, conversation=conversation, channel=channel,
        direction="in", sender="customer", text=text, reply_state="pending",
    )
    Message.objects.filter(id=message.id).update(created=timezone.now() - timedelta(seconds=age_s))
    return message


def claimed_reply(bot, thread, claimed_s_ago):
    """A bot reply whose send a worker claimed `claimed_s_ago` seconds ago and never finished."""
    conversation, _ = Conversation.objects.get_or_create(
        organization=bot.organization, bot=bot, channel="preview", external_id=thread
    )
    message = Message.objects.create(
        organization=bot.organization, bot=bot, conversation=conversation, channel="preview",
        direction="out", sender="bot", text="We open at nine.", delivery_status="sending",
        delivery_claimed_at=timezone.now() - timedelta(seconds=claimed_s_ago),
    )
    Message.objects.filter(id=message.id).update(created=timezone.now() - timedelta(hours=1))
    return message


def test_the_sweep_answers_and_delivers_what_the_broker_lost(transactional_db, celery_workers, acme_bot):
    age = settings.CHATNEXUS_SWEEP_AFTER_S
    lost = stored_without_a_task(acme_bot, "sweep-1", "When are you open?", age_s=age + 60)
    young = stored_without_a_task(acme_bot, "sweep-2", "Hello?", age_s=age // 2)  # may still be queued
    dead_send = claimed_reply(acme_bot, "sweep-3", claimed_s_ago=settings.CHATNEXUS_DELIVERY_LEASE_S + 60)
    live_send = claimed_reply(acme_bot, "sweep-4", claimed_s_ago=0)  # its worker is still at it

    assert sweep_unfinished.apply().get() == (1, 1)  # the job's body, queueing to the real workers

    reply = wait_for(lambda: Message.objects.filter(reply_to=lost).first(), timeout=300, what="the lost message's reply")
    assert reply.text.strip() and reply.sender == "bot"
    wait_for(lambda: Message.objects.get(id=reply.id).delivery_status == "sent", what="the reply's delivery")
    wait_for(lambda: Message.objects.get(id=dead_send.id).delivery_status == "sent", what="the dead send, redone")
    assert Message.objects.get(id=young.id).reply_state == "pending"
    assert not Message.objects.filter(reply_to=young).exists()
    assert Message.objects.get(id=live_send.id).delivery_status == "sending"
    assert sweep_unfinished.apply().get() == (0, 0)  # nothing left over


def test_the_beat_schedule_names_real_tasks():
    app.loader.import_default_modules()
    for name, entry in settings.CELERY_BEAT_SCHEDULE.items():
        assert entry["task"] in app.tasks, name
    assert "sweep-unfinished" in settings.CELERY_BEAT_SCHEDULE


LOSE_A_MESSAGE = """
from datetime import timedelta
from django.utils import timezone
from bots.models import Bot, Conversation, Message
bot = Bot.objects.get(organization__slug="demo-bikes")
conversation = Conversation.objects.create(organization=bot.organization, bot=bot, channel="preview", external_id="lost")
message = Message.objects.create(organization=bot.organization, bot=bot, conversation=conversation, channel="preview",
                                 direction="in", sender="customer", text="What are your opening hours?",
                                 reply_state="pending")
Message.objects.filter(id=message.id).update(created=timezone.now() - timedelta(seconds=30))
print(message.id)
"""


def test_the_embedded_platform_sweeps_from_its_own_beat_thread(tmp_path):
    """`serve` (no Redis, SQLite) runs the beat schedule in-process: a message stored while it
    runs, with no task queued for it, is answered by the sweep alone."""
    env = embedded_env(tmp_path, CHATNEXUS_SWEEP_SECONDS="2", CHATNEXUS_SWEEP_AFTER_S="10", CHATNEXUS_DTYPE="fp32",
                       CHATNEXUS_MAX_REPLY_TOKENS="24", PYTHONUNBUFFERED="1")
    manage(env, "migrate", "--noinput")
    manage(env, "demo")
    server = Service("serve", [sys.executable, "manage.py", "serve", "--port", str(free_port()), "--no-preload"],
                     env, "ChatNexus is up", tmp_path)
    try:
        server.wait_ready(timeout=120)
        message_id = int(manage(env, "shell", "-c", LOSE_A_MESSAGE).strip().splitlines()[-1])
        check = f"from bots.models import Message; print(Message.objects.filter(reply_to_id={message_id}).count())"
        wait_for(lambda: manage(env, "shell", "-c", check).strip().endswith("1"), timeout=180, interval=2,
                 what="the swept message's reply")
        assert "sweep_unfinished" in server.output()
    finally:
        server.stop()


def test_a_message_whose_task_the_broker_refused_is_stored_for_the_sweep(transactional_db, acme_bot, monkeypatch):
    """The broker refuses the reply task after the message was committed: the caller (a webhook, the
    IMAP poller) is not told the message failed, which would make it store or send it again."""
    from inference.tasks import generate_reply

    def refuse(*args, **kwargs):
        raise kombu.exceptions.OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(generate_reply, "delay", refuse)
    received = services.receive(bot=acme_bot, channel="api", thread_id="refused", text="Are you open today?")
    assert received.created
    stored = Message.objects.get(id=received.message.id)
    assert stored.reply_state == "pending" and stored.text == "Are you open today?"
    Message.objects.filter(id=stored.id).update(created=timezone.now() - timedelta(
        seconds=settings.CHATNEXUS_SWEEP_AFTER_S + 60))
    queued = []
    monkeypatch.setattr(generate_reply, "delay", queued.append)  # the broker is back
    assert services.requeue_unfinished(older_than_s=settings.CHATNEXUS_SWEEP_AFTER_S)[0] == 1
    assert queued == [stored.id]


def test_a_message_whose_reply_task_dies_every_time_goes_to_the_team(db, settings, client, bob, acme_bot):
    """A message the reply task dies on every time (a worker killed at the hard time limit, or by the
    crash the message causes) was queued again by every sweep, for good, and nobody was told. Once its
    task started STARTS_BEFORE_HANDOFF times it is handed to the team as a failed reply is, the reason
    in the inbox. (Each start below is the task's first step, the task dying right after it.)"""
    age = settings.CHATNEXUS_SWEEP_AFTER_S
    poison = stored_without_a_task(acme_bot, "poison", "Here is my 4 MB log file: ...", age_s=age + 60,
                                   channel="widget")
    for _ in range(services.STARTS_BEFORE_HANDOFF):  # each task queued starts and dies: the message still waits
        assert services.requeue_unfinished(older_than_s=age) == (1, 0)
        services.reply_started(poison.id)
        started_long_ago(poison, services.ALIVE_S)  # its task gone: the start not beaten since
    # the last start may still be under way for as long as a task may run: queued again, not failed
    assert services.requeue_unfinished(older_than_s=age) == (1, 0)
    started_long_ago(poison, settings.CHATNEXUS_TASK_TIME_LIMIT + 60)
    assert services.requeue_unfinished(older_than_s=age) == (0, 0)

    poison.refresh_from_db()
    assert poison.reply_state == "failed"
    notice = Message.objects.get(reply_to=poison)  # the customer is told, not left in silence
    assert notice.sender == "system" and notice.text == services.HANDOFF_REPLY
    conversation = Conversation.objects.get(id=poison.conversation_id)
    assert conversation.needs_human and conversation.bot_paused
    client.force_login(bob)
    shown = {m["id"]: m for m in client.get(f"/inbox/{conversation.id}/messages.json").json()["messages"]}[poison.id]
    assert shown["reply_state_label"] == "Failed"
    assert shown["skip_reason"] == "its reply was started 3 times and never finished"
    assert services.requeue_unfinished(older_than_s=age) == (0, 0)  # and the sweep is done with it


def started_long_ago(message, seconds):
    """The model's last start on ``message`` (services.reply_started) ``seconds`` ago, not beaten since."""
    message.refresh_from_db()
    start = (timezone.now() - timedelta(seconds=seconds)).isoformat()
    Message.objects.filter(id=message.id).update(meta={**message.meta, "started_at": start})
    long_ago = Now() - timedelta(seconds=seconds)  # the database's clock, as the beats
    ReplyBeat.objects.filter(message=message).update(start=start, started_at=long_ago, alive_at=long_ago)


def test_giving_the_conversation_back_starts_the_count_again(db, settings, bob, acme_bot):
    """Each takeover while the model answered left a start counted: given back twice, the bot's next try
    was failed by the sweep as the third start of a message its task dies on."""
    age = settings.CHATNEXUS_SWEEP_AFTER_S
    message = stored_without_a_task(acme_bot, "taken", "Do you fix e-bikes?", age_s=60, channel="widget")
    conversation = Conversation.objects.get(id=message.conversation_id)
    for _ in range(services.STARTS_BEFORE_HANDOFF):
        services.reply_started(message.id)  # the model starts on it; the team takes over meanwhile
        services.set_bot_paused(Conversation.objects.get(id=conversation.id), True, by=bob)
        services.set_bot_paused(Conversation.objects.get(id=conversation.id), False)
        message.refresh_from_db()
        assert message.reply_state == "pending"
    Message.objects.filter(id=message.id).update(created=timezone.now() - timedelta(seconds=age + 60))
    started_long_ago(message, 0)  # (no start since the give-back)
    assert services.requeue_unfinished(older_than_s=age) == (1, 0)
    message.refresh_from_db()
    assert message.reply_state == "pending"


def test_a_message_waiting_behind_a_long_queue_is_queued_again_never_failed(db, settings, acme_bot):
    """Its task has not started yet (the inference worker slow, or stopped): however many sweeps pass,
    it waits for the bot, and the queue gets it again."""
    age = settings.CHATNEXUS_SWEEP_AFTER_S
    waiting = stored_without_a_task(acme_bot, "queued", "Do you rent e-bikes?", age_s=age + 60, channel="widget")
    for _ in range(services.STARTS_BEFORE_HANDOFF + 2):
        assert services.requeue_unfinished(older_than_s=age) == (1, 0)
    waiting.refresh_from_db()
    assert waiting.reply_state == "pending" and not Message.objects.filter(reply_to=waiting).exists()
