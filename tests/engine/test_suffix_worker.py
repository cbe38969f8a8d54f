"""The worker glue: a bot's suffix index is rebuilt once per process from its stored replies."""

from __future__ import annotations

import torch

from inference import runtime


def test_it_rebuilds_a_bots_index_once_and_remembers_new_replies(tiny_engine):
    calls = []

    def stored_replies(bot_id):
        calls.append(bot_id)
        return [("We open at nine.", "When do you open?"), ("Closed on Sunday.", "Open Sunday?")]

    with runtime.generation_lock:
        runtime.ensure_memory(tiny_engine, 12, stored_replies)
        runtime.ensure_memory(tiny_engine, 12, stored_replies)
    assert calls == [12]
    index = tiny_engine.memory.get(runtime.namespace_for(12))
    assert index.replies == 2
    runtime.remember_reply(tiny_engine, 12, "We open at nine, see you!", "hours?")
    assert index.replies == 3
    assert runtime.namespace_for(13) not in tiny_engine.memory  # other bots untouched
    tiny_engine.memory.forget(runtime.namespace_for(12))


def test_deleted_conversations_leave_the_index_when_the_bots_erasures_move(tiny_engine):
    stored = [("We open at nine.", "When do you open?"), ("Your order 4411 ships Monday.", "Where is 4411?")]

    def stored_replies(bot_id):
        return list(stored)

    def remembered():
        index = tiny_engine.memory.get(runtime.namespace_for(21))
        return index.replies

    namespace = runtime.namespace_for(21)
    with runtime.generation_lock:
        runtime.ensure_memory(tiny_engine, 21, stored_replies, erasures=0)
        assert remembered() == 2
        # the target's predictions while it read the conversations (a recycle drafter's table)
        tiny_engine.recycled.table(namespace).observe([5, 6], torch.randn(2, 20))
        stored.pop()  # the second conversation is deleted (bots.services.delete_conversations)
        runtime.ensure_memory(tiny_engine, 21, stored_replies, erasures=0)
        assert remembered() == 2  # not told yet: the index is kept
        assert namespace in tiny_engine.recycled.tables
        runtime.ensure_memory(tiny_engine, 21, stored_replies, erasures=1)
        assert remembered() == 1  # rebuilt from what is still stored
        assert namespace not in tiny_engine.recycled.tables  # predictions made reading it: gone too
        runtime.ensure_memory(tiny_engine, 21, stored_replies, erasures=1)
        assert remembered() == 1
    tiny_engine.memory.forget(runtime.namespace_for(21))
