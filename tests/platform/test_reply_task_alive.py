"""A reply task's start is kept alive while the model answers (services.answering): a second copy of the
task waits for it, and so do the conversation's later messages, only while that task lives.

A copy of a message's task (the sweep queues again what waited long, a broker redelivers) that ran while
the first was generating started the model on the message a second time: two generations, and a start
counted for each. And a later message of the conversation waited for an earlier one whose task was lost
after it started until that task's hard time limit had passed (CHATNEXUS_TASK_TIME_LIMIT + 30 s).

The beats are a row of their own (ReplyBeat) on the database's clock, and the start ends with the answer,
however it ends. Written into the message's row, each beat moved the message's version and the thread
page's poll sent it again; a task retried after a database error inside its answer found its own start
alive and waited ALIVE_S for itself; and a worker machine's clock behind another's made its live start
look dead to that one.

Real parts: two Celery prefork workers on Redis and the test database, the suite's tiny random Llama. The
first worker reaches Redis through a relay that holds its live events of the conversation, so its task
stays in the middle of its answer (alive, its start beaten) for as long as the test needs. And separate
processes on the embedded default's SQLite, and a connection of the test's that the server ends.
"""
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import timedelta
from urllib.parse import urlparse

import pytest
from django.db import OperationalError, connection
from django.utils import timezone

from bots import services
from bots.models import Conversation, Message, ReplyBeat
from tests.conftest import ROOT, embedded_env, manage, service_env, start_worker, wait_for
from tests.platform.test_inbox_poll_thread import poll
from tests.platform.test_quick_messages import roomy_target_dir  # noqa: F401 - a fixture
from tests.platform.test_reply_one_at_a_time import SQLITE_CONVERSATION, SQLITE_STARTS, TINY_MODEL, pending


class HeldRelay:
    """A TCP relay to the suite's Redis: what a client sends from the first command naming ``trigger`` on
    (a conversation's group of live events) is held until ``release()``."""

    def __init__(self, trigger: bytes):
        redis = urlparse(os.environ["REDIS_URL"])
        self.upstream = (redis.hostname, redis.port or 6379)
        self.trigger = trigger
        self.held, self.released = threading.Event(), threading.Event()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"redis://127.0.0.1:{self.server.getsockname()[1]}{redis.path}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:  # closed
                return
            upstream = socket.create_connection(self.upstream)
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source, sink, from_client):
        holding = False
        try:
            while data := source.recv(65536):
                if from_client and not self.released.is_set() and (holding or self.trigger in data):
                    holding = True
                    self.held.set()
                    self.released.wait()
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def release(self):
        self.released.set()

    def close(self):
        self.release()
        self.server.close()


def workers(tmp_path, relay, model_dir, **later_env):
    """The worker that answers first, through ``relay``, and the one that comes after it (``later_env``)."""
    # the relay holds the first worker's pushes: each gives up only after CHATNEXUS_PUSH_TIMEOUT_S, so
    # a long one keeps its task in the answer for as long as a test needs
    env = service_env(None, CHATNEXUS_PRELOAD_MODEL="1", CHATNEXUS_TARGET=model_dir, CHATNEXUS_PUSH_TIMEOUT_S="60",
                      **TINY_MODEL)
    first = start_worker("answering", "inference-answering", tmp_path, {**env, "REDIS_URL": relay.url})
    then = start_worker("coming-after", "inference-coming-after", tmp_path, {**env, **later_env})
    first.wait_ready(timeout=240)
    then.wait_ready(timeout=240)
    first.wait_model()  # Celery's "ready." comes before the process has loaded the model
    then.wait_model()
    return first, then


def meta(message):
    return Message.objects.get(id=message.id).meta or {}


def reply_to(message):
    return Message.objects.filter(reply_to=message).first()


def beaten_for(message):
    """Seconds from the model's start on ``message`` to its last beat (0 without a start being answered)."""
    beat = ReplyBeat.objects.filter(message=message).first()
    return (beat.alive_at - beat.started_at).total_seconds() if beat else 0


def test_a_copy_of_the_task_waits_while_the_first_answers_its_message(
        transactional_db, _redis_clean, tmp_path, roomy_target_dir, acme_bot):  # noqa: F811
    """The sweep queues the message's task again while its first task is generating: the copy waits
    (queued again, no start counted), as does the conversation's next message, for as long as the first
    task keeps its start beaten, longer than the start alone counts; the first task's reply is the one."""
    from inference import tasks

    asked, next_one = pending(acme_bot, "v-copy", "When are you open?", "And where is the shop?")
    relay = HeldRelay(f"conversation-{asked.conversation_id}".encode())
    first, then = workers(tmp_path, relay, roomy_target_dir)
    try:
        tasks.generate_reply.apply_async(args=[asked.id], queue="inference-answering")
        wait_for(relay.held.is_set, timeout=120, what="the first task answering, its live events held")
        tasks.generate_reply.apply_async(args=[asked.id], queue="inference-coming-after")  # as the sweep does
        copy_waits = f"message {asked.id} is being answered by another task"
        wait_for(lambda: copy_waits in then.output() or meta(asked).get("starts", 0) > 1 or reply_to(asked),
                 timeout=120, what="the copy's decision")
        assert meta(asked)["starts"] == 1, "the copy started the model on the message a second time"
        assert not reply_to(asked)

        tasks.generate_reply.apply_async(args=[next_one.id], queue="inference-coming-after")
        next_waits = f"message {asked.id} of the conversation is answered first"
        # the first task beats its start for as long as it answers: past the time the start alone counts,
        # both still wait, each asked again after that
        wait_for(lambda: beaten_for(asked) > services.ALIVE_S, timeout=120,
                 what="the first task's start beaten past ALIVE_S")
        asked_so_far = then.output().count(copy_waits), then.output().count(next_waits)
        wait_for(lambda: then.output().count(copy_waits) > asked_so_far[0]
                 and then.output().count(next_waits) > asked_so_far[1], timeout=60, what="both waiting still")
        assert meta(asked)["starts"] == 1 and "starts" not in meta(next_one)
        assert not Message.objects.filter(reply_to__in=[asked, next_one]).exists()

        relay.release()
        first_reply = wait_for(lambda: reply_to(asked), timeout=120, what="the first task's reply")
        next_reply = wait_for(lambda: reply_to(next_one), timeout=120, what="the next message's reply")
        assert Message.objects.filter(reply_to=asked).count() == 1 and first_reply.sender == "bot"
        assert meta(asked)["starts"] == 1 and meta(next_one)["starts"] == 1
        assert first_reply.id < next_reply.id
        assert tasks._history(Message.objects.get(id=next_one.id))[1]["content"] == first_reply.text
    finally:
        relay.close()
        first.stop()
        then.stop()


def test_a_later_message_waits_for_an_earlier_ones_task_only_while_that_task_lives(
        transactional_db, _redis_clean, tmp_path, roomy_target_dir, acme_bot):  # noqa: F811
    """The earlier message's task is lost with its worker while it answers: the later message is answered
    once that task's start is no longer beaten. Before, it waited out the earlier task's time limit (here
    20 minutes). The earlier message is answered when the sweep queues it again."""
    from inference import tasks

    earlier, later = pending(acme_bot, "v-lost", "When are you open?", "And where is the shop?")
    relay = HeldRelay(f"conversation-{earlier.conversation_id}".encode())
    first, then = workers(tmp_path, relay, roomy_target_dir, CHATNEXUS_TASK_TIME_LIMIT="1200")
    try:
        tasks.generate_reply.apply_async(args=[earlier.id], queue="inference-answering")
        wait_for(relay.held.is_set, timeout=120, what="the earlier message's task answering, its live events held")
        tasks.generate_reply.apply_async(args=[later.id], queue="inference-coming-after")
        wait_for(lambda: f"message {earlier.id} of the conversation is answered first" in then.output(),
                 timeout=120, what="the later message waiting for the earlier one")
        assert "starts" not in meta(later)

        os.killpg(first.proc.pid, signal.SIGKILL)  # the worker lost, its task with it (unacknowledged for an hour)
        first.proc.wait(30)
        later_reply = wait_for(lambda: reply_to(later), timeout=180, what="the later message's reply")
        assert later_reply.sender == "bot" and meta(later)["starts"] == 1
        assert Message.objects.get(id=earlier.id).reply_state == Message.ReplyState.PENDING
        assert meta(earlier)["starts"] == 1 and not reply_to(earlier)

        tasks.generate_reply.apply_async(args=[earlier.id], queue="inference-coming-after")  # as the sweep queues it
        earlier_reply = wait_for(lambda: reply_to(earlier), timeout=120, what="the earlier message's reply")
        assert earlier_reply.sender == "bot" and meta(earlier)["starts"] == 2
    finally:
        relay.close()
        first.stop()
        then.stop()


ANSWERING = """
import os, time
from pathlib import Path
from bots import services
message_id = int(os.environ["MESSAGE_ID"])
start = services.reply_started(message_id)
assert start
with services.answering(message_id, start):  # the model answering, until this process is killed
    Path(os.environ["READY"]).touch()
    while True:
        time.sleep(0.1)
"""

START = """
from bots import services
try:
    print("started" if services.reply_started({id}) else "not started")
except Exception as error:
    print(type(error).__name__)
"""

BEATEN_FOR = """
from bots.models import ReplyBeat
beat = ReplyBeat.objects.get(message_id={id})
print((beat.alive_at - beat.started_at).total_seconds())
"""


def test_on_sqlite_another_process_sees_the_start_alive_while_it_is_beaten_and_gone_once_its_process_is(tmp_path):
    """The embedded default's database, across processes: the start is beaten into its ReplyBeat row."""
    env = embedded_env(tmp_path)
    manage(env, "migrate", "--noinput")
    message_id = int(manage(env, "shell", "-c", SQLITE_CONVERSATION).splitlines()[-2])
    ready = tmp_path / "ready"
    answering = subprocess.Popen([sys.executable, "manage.py", "shell", "-c", ANSWERING], cwd=ROOT, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 env={**env, "READY": str(ready), "MESSAGE_ID": str(message_id)})
    try:
        wait_for(ready.exists, timeout=120, what="the process answering")
        wait_for(lambda: float(manage(env, "shell", "-c", BEATEN_FOR.format(id=message_id)).split()[-1])
                 > services.ALIVE_S, timeout=120, interval=1, what="the start beaten past ALIVE_S")
        assert manage(env, "shell", "-c", START.format(id=message_id)).split()[-1] == "AnsweredElsewhere"
        answering.kill()  # its task gone
        answering.wait(30)
        wait_for(lambda: manage(env, "shell", "-c", START.format(id=message_id)).split()[-1] == "started",
                 timeout=120, interval=1, what="another start, once the dead one is no longer beaten")
        assert manage(env, "shell", "-c", SQLITE_STARTS).splitlines()[-1] == "[0, 2]"
    finally:
        if answering.poll() is None:
            answering.kill()
            answering.wait(30)


def answered_elsewhere(message):
    """Whether a copy of the task, starting on ``message`` now, is told another task answers it."""
    try:
        started = services.reply_started(message.id)
    except services.AnsweredElsewhere:
        return True
    pytest.fail(f"a copy of the task was {'let start' if started else 'turned away'}, the start being beaten")


def test_the_thread_pages_poll_does_not_send_a_message_again_while_the_model_answers_it(
        transactional_db, client, bob, acme_bot, monkeypatch):
    """Every beat was a write to the message's row, and every write moves a message's version (migration
    0024): while the model answered, the thread page's poll (``?since=``, every 3 s) sent the customer's
    message again after each beat, and the page drew it anew (an agent's selection in it lost). Beats
    faster here, to have several past ALIVE_S in a moment."""
    monkeypatch.setattr(services, "BEAT_S", 0.1)
    monkeypatch.setattr(services, "ALIVE_S", 2)
    [asked] = pending(acme_bot, "v-poll", "When are you open?")
    conversation = Conversation.objects.get(id=asked.conversation_id)
    client.force_login(bob)
    start = services.reply_started(asked.id)
    assert start
    started = time.monotonic()
    with services.answering(asked.id, start):
        since = max(m["version"] for m in poll(client, conversation)["messages"])  # the page, the start in it
        wait_for(lambda: time.monotonic() - started > services.ALIVE_S and answered_elsewhere(asked),
                 what="the start beaten past ALIVE_S")
        assert poll(client, conversation, since=since)["messages"] == [], "the message sent again"
    assert services.reply_started(asked.id)  # the answer over (its reply not stored here): a copy starts at once


def test_a_task_retried_after_a_database_error_in_its_answer_starts_again_at_once(transactional_db, acme_bot):
    """generate_reply is retried a second or so after a database error (autoretry_for OperationalError):
    one inside its answer (here the server ends its connection) left its start beaten a moment before,
    and the retry was told another task answered the message: it, and the conversation's later messages,
    waited up to ALIVE_S for a task that was no more. The start ends with the answer, however it ends."""
    [asked] = pending(acme_bot, "v-retried", "When are you open?")
    start = services.reply_started(asked.id)
    assert start
    with pytest.raises(OperationalError), services.answering(asked.id, start), connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")
    connection.close_if_unusable_or_obsolete()  # as Celery does before each task, the retry among them
    assert services.reply_started(asked.id)  # the retry: the model starts again
    assert meta(asked)["starts"] == 2


def test_a_workers_clock_behind_the_databases_does_not_make_its_start_look_dead(db, acme_bot, monkeypatch):
    """The beats were read against the clock of the machine reading them, written by the worker's own: a
    worker's clock a minute behind made its start look dead to every other machine from the start, and a
    copy of its task started the model on the message a second time. The database's clock writes and
    reads them."""
    [asked] = pending(acme_bot, "v-clock", "When are you open?")
    behind = timezone.now
    monkeypatch.setattr(timezone, "now", lambda: behind() - timedelta(minutes=1))  # the worker's machine
    assert services.reply_started(asked.id)
    monkeypatch.undo()  # another machine, its clock right
    assert answered_elsewhere(asked)


def test_a_conversation_erased_while_the_model_answers_it_takes_the_start_with_it(db, acme_bot):
    """A message's beat goes with the message (retention, an agent's delete): nothing left behind, nothing
    refused."""
    [asked] = pending(acme_bot, "v-erased", "When are you open?")
    assert services.reply_started(asked.id)
    assert services.delete_conversations(Conversation.objects.filter(id=asked.conversation_id)) == 1
    assert not ReplyBeat.objects.filter(message_id=asked.id).exists()
