"""Bots' rows are locked in id order by everything that locks or updates several of them at once.

A knowledge deletion locks every bot of its organisation (bots/models/bots.py), and an erasure
moves the ``erasures`` of every bot whose conversations went (bots/services.py). An UPDATE takes
its rows in the order it finds them on disk, not by id: two such transactions could each hold a
bot the other waits for. Real transactions, real PostgreSQL row locks.
"""
import threading

from django.db import connection, transaction

from bots import services
from bots.models import Bot, Conversation, KnowledgeItem
from tests.conftest import wait_for

from .conftest import make_conversation


def lock_waiters() -> int:
    """How many sessions of the test database wait for a lock now."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")  # else read once per transaction
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND wait_event_type = 'Lock'")
        return cursor.fetchone()[0]


def in_thread(work, errors):
    """Run ``work`` in a thread of its own (its own database connection); what it raises goes to ``errors``."""

    def target():
        try:
            work()
        except Exception as error:  # noqa: BLE001 - the test asserts there is none
            errors.append(error)
        finally:
            connection.close()

    thread = threading.Thread(target=target)
    thread.start()
    return thread


def test_a_knowledge_deletion_and_a_conversation_erasure_never_deadlock(transactional_db, acme):
    """The deletion locked the organisation's bots in id order, the erasure updated its bots in disk
    order: with bot 1 written last on disk ([2, 3, 1]) and bot 2 held by a third transaction, the
    deletion holds 1 and waits for 2, the erasure holds 3 and waits for 1; once 2 is free the
    deletion waits for 3 and PostgreSQL cancels one of them (deadlock detected). Both take their
    bots in id order now: the erasure waits for 1 holding nothing, and both go through."""
    first, second, third = (Bot.objects.create(organization=acme, name=f"Bot {n}") for n in (1, 2, 3))
    item = KnowledgeItem.objects.create(bot=first, kind="faq", title="Old price?", body="Code LK-DEADLOCK-17.")
    for bot in (first, third):
        make_conversation(bot, thread=f"visitor-{bot.id}")
    Bot.objects.filter(id=first.id).update(name="Bot 1, renamed")  # a new row version, after the others on disk
    with connection.cursor() as cursor:
        cursor.execute("SELECT id FROM bots_bot ORDER BY ctid")
        assert [bot_id for (bot_id,) in cursor.fetchall()] == [second.id, third.id, first.id]
    errors, threads = [], []
    try:
        with transaction.atomic():
            Bot.objects.select_for_update().get(id=second.id)  # a third transaction holds the middle bot
            threads.append(in_thread(lambda: Bot.objects.get(id=first.id).delete_knowledge(item), errors))
            wait_for(lambda: lock_waiters() == 1, timeout=10, what="the deletion to wait for bot 2")
            erased = Conversation.objects.filter(bot_id__in=[first.id, third.id])
            threads.append(in_thread(lambda: services.delete_conversations(erased), errors))
            wait_for(lambda: lock_waiters() == 2, timeout=10, what="the erasure to wait too")
        # bot 2 is free now
    finally:
        for thread in threads:
            thread.join(30)
    assert errors == []
    assert not KnowledgeItem.objects.filter(id=item.id).exists() and not Conversation.objects.exists()
    assert {bot.id: bot.erasures for bot in Bot.objects.all()} == {first.id: 1, second.id: 0, third.id: 1}
