"""``generate_reply``: a stored inbound message becomes a stored, delivered bot reply.

Queue ``inference``. Takes a message id, loads, builds the prompt, streams the
engine's deltas to the conversation's live group, stores the reply with its
decoding stats, and hands delivery to the channel (``channels_app.tasks.deliver``).

Idempotent: a reply is unique per inbound message, so a task that runs twice (a
redelivery after a worker died, a duplicate enqueue) stores and delivers one reply.
"""
import logging
import os
import time

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_process_init
from django.conf import settings
from django.db import OperationalError

from bots import events, services
from bots.models import Message
from bots.prompts import build_messages

from . import runtime

log = logging.getLogger(__name__)
HISTORY_TURNS = 12


@shared_task(
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=5,
    soft_time_limit=settings.CHATNEXUS_TASK_TIME_LIMIT,
    time_limit=settings.CHATNEXUS_TASK_TIME_LIMIT + 30,
)
def generate_reply(self, message_id):
    inbound = Message.objects.select_related("conversation", "bot").filter(id=message_id).first()
    if inbound is None:
        log.warning("generate_reply: message %s is gone", message_id)
        return
    existing = Message.objects.filter(reply_to=inbound).first()
    if existing is not None or inbound.reply_state != Message.ReplyState.PENDING:
        return  # already answered (or not to be answered): nothing to do twice

    conversation = inbound.conversation
    config = inbound.bot.live_config(draft=conversation.channel == "preview")
    engine = runtime.engine_for(config.get("drafter") or None)
    max_new = min(int(config.get("max_reply_tokens") or 160), settings.CHATNEXUS_MAX_REPLY_TOKENS)
    messages = build_messages(
        config,
        _history(inbound),
        inbound.text,
        count_tokens=lambda m: runtime.count_tokens(engine, m),
        max_prompt_tokens=runtime.context_length(engine) - max_new,
    )

    events.push(conversation.id, "reply.start", reply_to=inbound.id)
    started = time.perf_counter()
    with runtime.generation_lock:
        text = _stream(engine, messages, inbound, max_new, float(config.get("temperature") or 0.0))
        stats = engine.last_stats.as_dict() if engine.last_stats else {}
    stats["wall_s"] = round(time.perf_counter() - started, 4)
    stats["target"] = settings.CHATNEXUS_TARGET
    text = text.strip() or config.get("fallback_answer") or "Sorry, I could not answer that."
    reply, created = services.record_reply(inbound, text, stats)
    events.push(conversation.id, "reply.done", reply_to=inbound.id, message=services.serialize_message(reply))
    return reply.id


def _stream(engine, messages, inbound, max_new_tokens, temperature):
    """Run the engine, pushing each text delta live; return the whole reply text."""
    text = ""
    try:
        for delta in engine.stream(
            messages,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            seed=inbound.id,  # sampled replies are reproducible per message
        ):
            text += delta
            events.push(inbound.conversation_id, "reply.delta", reply_to=inbound.id, delta=delta)
    except SoftTimeLimitExceeded:
        log.warning("generate_reply: message %s hit the time limit after %d chars", inbound.id, len(text))
    return text


def _history(inbound):
    """The last turns of the conversation up to and including ``inbound``, as chat messages."""
    recent = (
        Message.objects.filter(conversation_id=inbound.conversation_id, id__lte=inbound.id)
        .exclude(text="")
        .order_by("-id")[:HISTORY_TURNS]
    )
    turns = []
    for message in reversed(list(recent)):
        role = "user" if message.direction == Message.Direction.INBOUND else "assistant"
        turns.append({"role": role, "content": message.text})
    return turns


@worker_process_init.connect
def _preload_model(**_):
    """Load the model when the worker process starts, not on the first customer's message."""
    if os.environ.get("CHATNEXUS_PRELOAD_MODEL") == "1":
        runtime.engine_for()
