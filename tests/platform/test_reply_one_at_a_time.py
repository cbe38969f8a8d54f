"""One reply per conversation at a time across worker processes, and a message that kills its worker
process handed to the team after three starts.

Each inference worker process holds its own generation lock: two processes (Celery prefork with
concurrency above 1, several worker containers) each took a message of one conversation at once, and
the second was answered from a history that lacked the reply to the first (the model answered the
first question again). The model's start on a message is decided holding the conversation's row
(services.reply_started): while another message of it is being answered the task is queued again.

Celery redelivers a task whose worker process died (acks_late + reject_on_worker_lost) at once and
without a count: a message that crashes the process looped. The task counts the model's starts and,
at STARTS_BEFORE_HANDOFF, hands the message to the team instead of starting the model again.

Real parts: Celery prefork workers on Redis and the test database, the suite's tiny random Llama,
separate processes racing on PostgreSQL and on the embedded default's SQLite.
"""
import subprocess
import sys
from datetime import timedelta

import psutil
from django.db import connection, transaction
from django.utils import timezone

from bots import services
from bots.models import Bot, Conversation, Message
from tests.conftest import ROOT, embedded_env, manage, service_env, start_worker, wait_for
from tests.platform.test_quick_messages import roomy_target_dir  # noqa: F401 - a fixture

TINY_MODEL = {"CHATNEXUS_DTYPE": "fp32", "CHATNEXUS_DRAFTER": "none", "CHATNEXUS_DEVICE": "cpu"}


def waiting_on_locks(statement=""):
    """The database sessions of the test database waiting for a lock (running ``statement``...)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")  # read afresh, not as first read in this transaction
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                       "AND wait_event_type = 'Lock' AND query LIKE %s", [statement + "%"])
        return [pid for pid, in cursor.fetchall()]


def pending(bot, thread, *texts):
    """Customer messages of one conversation waiting for the bot, their reply tasks not queued."""
    messages = [services.receive(bot=bot, channel="widget", thread_id=thread, text=text, answer=False).message
                for text in texts]
    Message.objects.filter(id__in=[m.id for m in messages]).update(reply_state=Message.ReplyState.PENDING, meta={})
    return [Message.objects.get(id=m.id) for m in messages]


def test_two_worker_processes_answer_a_conversation_one_message_after_the_other(
        transactional_db, settings, smtp_server, _redis_clean, tmp_path, roomy_target_dir, acme_bot):  # noqa: F811
    """Two worker processes, one message of the conversation each: the second is answered knowing the
    reply to the first. (The first task is held at its message's row until the second task has come as
    far as it can: before, to its own reply, stored.)"""
    from inference import runtime, tasks

    queue = "inference-one-at-a-time"
    model = {"CHATNEXUS_TARGET": roomy_target_dir, **TINY_MODEL}
    for name, value in model.items():
        setattr(settings, name, value)
    engine = runtime.engine_for()  # the prompts the worker wrote, counted here
    worker = start_worker("one-at-a-time", queue, tmp_path, service_env(smtp_server, CHATNEXUS_PRELOAD_MODEL="1",
                                                                        **model), concurrency=2)
    try:
        worker.wait_ready(timeout=240)
        worker.wait_model(processes=2)  # both answer: each loads its own
        first, second = pending(acme_bot, "v-two-processes", "When are you open?", "And where is the shop?")
        with transaction.atomic():
            Message.objects.select_for_update().get(id=first.id)
            tasks.generate_reply.apply_async(args=[first.id], queue=queue)
            wait_for(lambda: len(waiting_on_locks()) == 1, what="the first task at its message's row")
            tasks.generate_reply.apply_async(args=[second.id], queue=queue)  # the worker's other process
            wait_for(lambda: len(waiting_on_locks()) == 2 or Message.objects.filter(reply_to=second).exists(),
                     what="the second task as far as it goes")
        wait_for(lambda: Message.objects.filter(reply_to__in=[first, second]).count() == 2, timeout=120,
                 what="both replies")

        replies = {m.reply_to_id: m for m in Message.objects.filter(reply_to__in=[first, second], sender="bot")}
        assert replies[first.id].id < replies[second.id].id
        # what the second reply was written from: the two questions, the first's reply between them
        history = tasks._history(second)
        assert [turn["role"] for turn in history] == ["user", "assistant", "user"]
        assert history[1]["content"] == replies[first.id].text
        prompt = tasks._prompt(second, Bot.objects.get(id=acme_bot.id).live_config(), engine)
        assert replies[second.id].stats["prompt_tokens"] == runtime.count_tokens(engine, prompt)
        assert f"message {first.id} of the conversation is answered first" in worker.output()  # queued again
        assert Message.objects.get(id=second.id).meta["starts"] == 1  # waiting counted no start
    finally:
        worker.stop()


RACE = """
import os, time
from pathlib import Path
from bots import services
from bots.models import Message
Message.objects.exists()  # connected before the start signal
Path(os.environ["READY"]).touch()
while not Path(os.environ["GO"]).exists():
    time.sleep(0.005)
try:
    print("started" if services.reply_started(int(os.environ["MESSAGE_ID"])) else "not started")
except Exception as error:
    print(type(error).__name__)
"""


def race_to_start(env, message_ids, tmp_path):
    """Two processes, each starting the model on one of ``message_ids`` at the same moment
    (services.reply_started, as the reply task does): what each was told."""
    go = tmp_path / "go"
    racers = []
    for message_id in message_ids:
        ready = tmp_path / f"ready-{message_id}"
        racers.append((ready, subprocess.Popen(
            [sys.executable, "manage.py", "shell", "-c", RACE], cwd=ROOT, text=True, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, env={**env, "READY": str(ready), "GO": str(go), "MESSAGE_ID": str(message_id)})))
    wait_for(lambda: all(ready.exists() for ready, _ in racers), timeout=120, what="both processes connected")
    go.touch()
    return sorted(racer.communicate(timeout=120)[0].strip().splitlines()[-1] for _, racer in racers)


def test_of_two_processes_starting_on_one_conversation_at_once_one_starts_the_model_on_postgresql(
        transactional_db, tmp_path, acme_bot):
    # both older than a task may run: neither waits for the other as the earlier message, only as the one answered
    messages = pending(acme_bot, "v-race", "When are you open?", "And where is the shop?")
    Message.objects.filter(id__in=[m.id for m in messages]).update(created=timezone.now() - timedelta(hours=1))
    assert race_to_start(service_env(), [m.id for m in messages], tmp_path) == ["AnotherReplyFirst", "started"]
    assert sorted(Message.objects.get(id=m.id).meta.get("starts", 0) for m in messages) == [0, 1]


SQLITE_CONVERSATION = """
from datetime import timedelta
from django.utils import timezone
from bots.models import Bot, Conversation, Message, Organization
org = Organization.objects.create(name="Acme", slug="acme")
bot = Bot.objects.create(organization=org, name="Ava")
conversation = Conversation.objects.create(organization=org, bot=bot, channel="widget", external_id="v-race")
for text in ("When are you open?", "And where is the shop?"):
    message = Message.objects.create(organization=org, bot=bot, conversation=conversation, channel="widget",
                                     direction="in", sender="customer", text=text, reply_state="pending")
    Message.objects.filter(id=message.id).update(created=timezone.now() - timedelta(hours=1))
    print(message.id)
"""

SQLITE_STARTS = "from bots.models import Message; print(sorted(m.meta.get('starts', 0) for m in Message.objects.all()))"


def test_of_two_processes_starting_on_one_conversation_at_once_one_starts_the_model_on_sqlite(tmp_path):
    """The embedded default's database: no row locks, but every transaction takes the write lock as it
    begins (settings: IMMEDIATE), so the second process reads the first's start."""
    env = embedded_env(tmp_path)
    manage(env, "migrate", "--noinput")
    message_ids = [int(line) for line in manage(env, "shell", "-c", SQLITE_CONVERSATION).splitlines()[-2:]]
    assert race_to_start(env, message_ids, tmp_path) == ["AnotherReplyFirst", "started"]
    assert manage(env, "shell", "-c", SQLITE_STARTS).splitlines()[-1] == "[0, 1]"


def test_a_message_whose_task_killed_its_worker_process_three_times_goes_to_the_team(
        transactional_db, smtp_server, _redis_clean, tmp_path, tiny_target_dir, acme_bot):
    """Celery hands the task of a worker process that died (an out-of-memory kill) to the next one at
    once, for good. Here the process is killed three times after the model started (the test holds the
    bot's row, so the task cannot commit its reply meanwhile); the fourth delivery does not start the model
    again: the customer gets the handoff message and the team the conversation."""
    queue = "inference-killed-thrice"
    worker = start_worker("killed-thrice", queue, tmp_path, service_env(
        smtp_server, CHATNEXUS_PRELOAD_MODEL="1", CHATNEXUS_TARGET=tiny_target_dir, **TINY_MODEL))
    try:
        worker.wait_ready(timeout=240)
        worker.wait_model()
        [crashing] = pending(acme_bot, "v-crash", "Here is my log file: ...")
        from inference.tasks import generate_reply

        with transaction.atomic():
            # the reply's commit waits for it (Django's foreign keys are checked at commit)
            Bot.objects.select_for_update().get(id=acme_bot.id)
            generate_reply.apply_async(args=[crashing.id], queue=queue)
            for start in range(1, services.STARTS_BEFORE_HANDOFF + 1):
                stuck = wait_for(lambda: Message.objects.get(id=crashing.id).meta.get("starts") == start
                                 and waiting_on_locks("COMMIT"), timeout=120,
                                 what=f"the model's start {start}, its reply held")
                [child] = [c for c in psutil.Process(worker.proc.pid).children() if c.status() != psutil.STATUS_ZOMBIE]
                child.kill()  # SIGKILL, as the kernel's out-of-memory killer
                child.wait(30)
                with connection.cursor() as cursor:  # the dead process's session, as the server drops it
                    cursor.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", [stuck])
        try:
            answer = wait_for(lambda: Message.objects.filter(reply_to=crashing).first(), timeout=120,
                              what="the fourth delivery's answer")
        except pytest.fail.Exception:
            crashing.refresh_from_db()
            pytest.fail(f"no answer: {crashing.reply_state} {crashing.meta}; locks waited on: {waiting_on_locks()}\n"
                        f"{worker.output()[-6000:]}")

        assert answer.sender == Message.Sender.SYSTEM and answer.text == services.HANDOFF_REPLY  # not the model's
        crashing.refresh_from_db()
        assert crashing.reply_state == Message.ReplyState.FAILED
        assert crashing.meta["starts"] == services.STARTS_BEFORE_HANDOFF  # no fourth start
        assert crashing.meta["skip_reason"] == "its reply was started 3 times and never finished"
        conversation = Conversation.objects.get(id=crashing.conversation_id)
        assert conversation.needs_human and conversation.bot_paused
        assert worker.output().count("WorkerLostError") >= services.STARTS_BEFORE_HANDOFF
    finally:
        worker.stop()
