"""The worker's engine: one model load per process, configured from settings."""
import threading

from django.conf import settings

from inference.engine import get_engine


# One generation at a time per process: the engine keeps per-request state
# (caches, drafter index), and thread-pool workers share one engine.
generation_lock = threading.Lock()


def engine_for(drafter: str | None = None):
    """The process-wide engine for the configured target (drafter instances are cached per spec)."""
    engine = get_engine(
        settings.CHATNEXUS_TARGET,
        drafter or settings.CHATNEXUS_DRAFTER,
        device=settings.CHATNEXUS_DEVICE,
        dtype=settings.CHATNEXUS_DTYPE,
        prefix_cache=settings.CHATNEXUS_PREFIX_CACHE,
        prefix_cache_mb=settings.CHATNEXUS_PREFIX_CACHE_MB,
    )
    # a worker lives for days: its c_verify curve is timed again now and then, so one taken
    # while the machine was busy does not keep its drafts short for good (verify_cost.py)
    engine.verify_cost_refresh_s = settings.CHATNEXUS_VERIFY_COST_REFRESH_S or None
    return engine


# the turns the platform sends a model: its system prompt, then the customer and the bot (two customer
# messages in a row are merged, inference.tasks._history)
SAMPLE_CHAT = [{"role": "system", "content": "You are a support assistant."}, {"role": "user", "content": "Hello"},
               {"role": "assistant", "content": "Hi! How can I help?"}, {"role": "user", "content": "Thanks"}]


def preload():
    """The configured engine, loaded and warmed up (the c_verify measurement the adaptive draft
    length needs) now, when a worker starts, rather than on the first reply. Both ways of running
    workers call this: `manage.py serve`'s in-process workers and Celery worker processes."""
    engine = engine_for()
    engine.chat_ids(SAMPLE_CHAT)  # a model that cannot write the platform's conversations: said now, not per reply
    engine.warm_up()
    return engine


def namespace_for(bot_id):
    """The suffix-index namespace of a bot: drafts never cross bots (nor organisations)."""
    return f"bot-{bot_id}"


# (id of an engine's memory, bot id) -> the bot's `erasures` its index was built at
_built_at: dict[tuple[int, int], int] = {}


def ensure_memory(engine, bot_id, stored_replies, erasures=0):
    """Build the bot's suffix index in this process on its first message (and after the
    index was evicted, or conversations of the bot were deleted since it was built: its
    ``erasures`` count moved): ``stored_replies(bot_id)`` -> [(reply text, question text)],
    oldest first. Call it holding ``generation_lock``."""
    namespace = namespace_for(bot_id)
    key = (id(engine.memory), bot_id)
    if _built_at.get(key, erasures) != erasures:
        engine.memory.forget(namespace)  # it may hold replies of deleted conversations
        engine.recycled.forget(namespace)  # ... and predictions made reading them
    _built_at[key] = erasures
    if namespace in engine.memory:
        return
    engine.memory.get(namespace)  # created even when empty: the database is asked once
    for reply, question in stored_replies(bot_id):
        engine.remember(namespace, reply, question)


def remember_reply(engine, bot_id, reply, question):
    """Teach the bot's suffix index a stored reply."""
    with generation_lock:
        engine.remember(namespace_for(bot_id), reply, question)


def count_tokens(engine, messages):
    return len(engine.chat_ids(messages))
