"""A worker killed mid-reply loses nothing: the task is redelivered and exactly one reply is stored.

Celery + Redis: ``acks_late`` keeps the message unacknowledged while it runs and
``reject_on_worker_lost`` makes the parent requeue it when its prefork child dies
(SIGKILL), so the next child runs it again; the reply's uniqueness per inbound
message makes the rerun safe.
"""
import asyncio
import os
import signal

import psutil
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from bots import events
from bots.models import Message
from tests.conftest import service_env, start_worker, wait_for

QUEUE = "inference-kill-test"


def test_it_answers_once_after_the_worker_dies_mid_reply(transactional_db, smtp_server, _redis_clean, tmp_path, acme_bot):
    from inference.tasks import generate_reply

    # Long replies, so the kill lands while tokens are still coming.
    acme_bot.max_reply_tokens = 120
    acme_bot.save()
    acme_bot.publish()
    env = service_env(smtp_server, CHATNEXUS_PRELOAD_MODEL="1", CHATNEXUS_MAX_REPLY_TOKENS="120")
    worker = start_worker("killme", QUEUE, tmp_path, env)
    try:
        worker.wait_ready(timeout=240)
        worker.wait_model()
        from bots import services

        received = services.receive(
            bot=acme_bot, channel="preview", thread_id="kill", answer=False,
            text="Write a long, detailed story about a bicycle trip across Portugal, at least ten paragraphs.",
        )  # fmt: skip
        inbound = received.message
        Message.objects.filter(id=inbound.id).update(reply_state="pending", meta={})

        async def start_and_wait_for_first_delta():
            # One event loop for the whole exchange: the Redis channel layer is bound to its loop.
            layer = get_channel_layer()
            channel = await layer.new_channel()
            await layer.group_add(events.group_for(inbound.conversation_id), channel)
            generate_reply.apply_async(args=[inbound.id], queue=QUEUE)
            while True:
                event = await asyncio.wait_for(layer.receive(channel), 240)
                if event.get("event") == "reply.delta":
                    return event

        assert async_to_sync(start_and_wait_for_first_delta)()["delta"]
        assert reply_count(inbound) == 0  # still generating
        children = psutil.Process(worker.proc.pid).children()
        assert len(children) == 1
        os.kill(children[0].pid, signal.SIGKILL)
        # The rerun reads the published config afresh: keep it short, the suite runs on small CPUs.
        acme_bot.max_reply_tokens = 8
        acme_bot.save()
        acme_bot.publish()

        wait_for(lambda: reply_count(inbound) == 1, timeout=400, what="the redelivered task's reply")
        wait_for(lambda: "succeeded" in worker.output(), what="the worker to finish the task")
        assert "WorkerLostError" in worker.output() or "SIGKILL" in worker.output()
        assert reply_count(inbound) == 1
        inbound.refresh_from_db()
        assert inbound.reply_state == "done"
    finally:
        worker.stop()


def reply_count(inbound):
    return Message.objects.filter(reply_to=inbound).count()
