"""``generate_reply``: a stored inbound message becomes a stored, delivered bot reply.

Queue ``inference``. Takes a message id, loads, builds the prompt, streams the
engine's deltas to the conversation's live group, stores the reply with its
decoding stats, and hands delivery to the channel (``channels_app.tasks.deliver``).

Idempotent: a reply is unique per inbound message, so a task that runs twice (a
redelivery after a worker died, a duplicate enqueue) stores and delivers one reply.

Time limit: the engine gets a deadline, CHATNEXUS_TASK_TIME_LIMIT less
CHATNEXUS_TASK_TIME_MARGIN_S after the task started, and starts no forward after it; the
reply stored is what was said by then (stop_reason "time"; nothing said: the conversation goes to
the team with the bot's handoff message, as when the model fails). It holds wherever the task runs:
Celery enforces its own limits only in worker processes, not in `manage.py serve`'s threads.
In worker processes its soft limit (the same reply, should a forward outlast the margin; before
the model said anything — loading it, fetching a customer's file — the team's, as nothing said in
time) and hard limit (30 s later) stay as backstops.

One reply at a time per process (``runtime.generation_lock``): the history is read, and the reply
stored, holding it, so a customer's second message waiting for the model meanwhile is answered
knowing the reply to the first. One at a time per conversation across processes and machines
(``services.reply_started``, deciding on the conversation's row): while another message of the
conversation is being answered, or an earlier one still waits for its task, the model does not start;
the task is queued again BEHIND_ANOTHER_REPLY_S later (its retries for database errors not counted),
so no worker process sits waiting, and the history is read once that reply is stored. So is a copy of
the task (the sweep's, a broker's redelivery) that comes while the first is answering its message: the
first beats its start while the model answers (``services.answering``), and a start no longer beaten
(its task killed, its worker lost) holds neither the copy nor the later messages for more than
``services.ALIVE_S``.

A message whose task kills its worker process is redelivered by Celery at once, without a count
(``reject_on_worker_lost``): the model's starts on it are counted instead, and after
``services.STARTS_BEFORE_HANDOFF`` of them without a reply the task hands it to the team as a failure
(the customer gets the handoff message) rather than start the model again.
"""
import logging
import re
import time

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_process_init
from django.conf import settings
from django.db import OperationalError

from bots import events, services
from bots.files import has_text_to_read, prompt_text
from bots.models import Message
from bots.models.bots import drafter_allowed
from bots.prompts import build_messages

from . import runtime
from .engine.errors import EngineError

log = logging.getLogger(__name__)
HISTORY_TURNS = 12
TAKEN_OVER_CHECK_S = 0.5  # while streaming, how often the worker looks whether the team took the conversation over
REMEMBERED_REPLIES = 200  # a bot's latest stored replies its suffix index is rebuilt from
BEHIND_ANOTHER_REPLY_S = 2  # a task that found another message of its conversation answered first runs again after


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
    # as Celery's soft limit counts, from the task's start (waiting for the model included)
    deadline = time.monotonic() + settings.CHATNEXUS_TASK_TIME_LIMIT - settings.CHATNEXUS_TASK_TIME_MARGIN_S
    inbound = Message.objects.select_related("conversation", "bot").filter(id=message_id).first()
    if inbound is None:
        log.warning("generate_reply: message %s is gone", message_id)
        return
    if not _waiting(inbound.id):
        return  # already answered (or not to be answered): nothing to do twice

    conversation = inbound.conversation
    config = inbound.bot.live_config(draft=conversation.channel == "preview")
    try:
        answered = _generate(inbound, config, deadline)
    except services.AnotherReplyFirst as first:
        log.info("generate_reply: message %s: %s; again in %s s", message_id, first, BEHIND_ANOTHER_REPLY_S)
        _again_later(self, message_id)
        return None
    except OperationalError:
        raise  # database hiccup: retried by autoretry_for
    except (NothingInTime, SoftTimeLimitExceeded) as error:  # the customer gets the handoff message, the team the chat
        # Celery's soft limit outside the stream (a worker process loading the model, fetching a
        # customer's file) is the same: nothing was said in time
        error = error if isinstance(error, NothingInTime) else NothingInTime()
        log.warning("generate_reply: message %s: %s", message_id, error)
        _mark_failed(inbound, error)
        return None
    except Exception as error:  # noqa: BLE001 - a broken model or prompt must not leave the customer hanging silently
        log.exception("generate_reply: message %s failed", message_id)
        _mark_failed(inbound, error)
        return None
    if answered is None:
        return None  # answered by another task while this one waited for the model, or handed to the team
    reply, created = answered
    if reply is None:  # the team took the conversation over while the model was answering
        events.push(conversation.id, "reply.cancelled", reply_to=inbound.id)
        return None
    if created:
        _remember(inbound, config, reply)
        events.push(conversation.id, "reply.done", reply_to=inbound.id, message=services.serialize_message(reply))
    return reply.id


def _generate(inbound, config, deadline=None):
    """Build the prompt, run the engine (streaming deltas live) until ``deadline`` (a
    ``time.monotonic()`` value) and store the reply: record_reply's (reply, created), or None when
    the message was answered meanwhile (or handed to the team, its reply started too often in vain).
    services.AnotherReplyFirst when another message of the conversation is answered first. Files alone
    with no text to read (a scanned PDF, a file that could not be fetched) get a canned reply.

    The history is read, and the reply stored, holding the model: a second message of the
    conversation waiting for it meanwhile (``serve``'s worker threads) then reads the reply to the
    first. Read before, its prompt had the two questions in a row, and the model answered the first
    again."""
    # before holding the model, so that no other reply waits for them: the files fetched from Twilio,
    # and the text of the conversation's files read (a PDF up to 30 s; kept for the read under the lock)
    _turns(inbound)
    if not has_text_to_read(inbound):
        return _record(inbound, services.no_text_reply(config), {"canned": True})
    engine = _engine(config.get("drafter") or None)
    max_new = _max_new_tokens(config)
    with runtime.generation_lock:
        # a copy of this task (the sweep queues again what waited long) may have waited here for the
        # model while the first answered: it must not answer again, nor say the bot is typing
        if not _waiting(inbound.id):
            return None
        # the conversation's turn (another process may be answering it), and a message that kills its task
        # every time ends with the team
        start = services.reply_started(inbound.id)
        if start is None:
            return None
        # the start beaten until the reply is stored: a copy of this task waits meanwhile, and so do the
        # conversation's later messages; once this task is gone, neither waits for it long, and once the
        # block ends (a retry for a database error among its ends) not at all
        with services.answering(inbound.id, start):
            messages = _prompt(inbound, config, engine)
            events.push(inbound.conversation_id, "reply.start", reply_to=inbound.id)
            started = time.perf_counter()
            runtime.ensure_memory(engine, inbound.bot_id, _stored_replies, inbound.bot.erasures)
            text, stop = _stream(engine, messages, inbound, max_new, float(config.get("temperature") or 0.0), deadline)
            stats = engine.last_stats.as_dict() if engine.last_stats else {}
            if stop:
                stats["stop_reason"] = stop  # the worker ended it (repetition_cut, the time limit), not the model
            stats["wall_s"] = round(time.perf_counter() - started, 4)
            stats["target"] = settings.CHATNEXUS_TARGET
            stats["precision"] = engine.precision.name
            if stop == "time" and not text.strip():
                raise NothingInTime()
            text = text.strip() or config.get("fallback_answer") or "Sorry, I could not answer that."
            return _record(inbound, text, stats)


def _again_later(task, message_id):
    """Queue ``task`` again for the message in BEHIND_ANOTHER_REPLY_S, to the queue it came from and with
    its time limits. ``task.retry`` would count a retry, against the budget for database errors
    (``max_retries``), and lengthen their backoff."""
    task.signature_from_request(args=[message_id], kwargs={}, countdown=BEHIND_ANOTHER_REPLY_S).apply_async()


def _max_new_tokens(config) -> int:
    """How long a reply may be: the bot's setting, within the server's CHATNEXUS_MAX_REPLY_TOKENS."""
    return min(int(config.get("max_reply_tokens") or 160), settings.CHATNEXUS_MAX_REPLY_TOKENS)


def _prompt(inbound, config, engine):
    """The chat messages the model answers ``inbound`` from: the bot's instructions and knowledge
    and the conversation so far, made to fit the model's context with room for the reply."""
    return build_messages(
        config,
        _history(inbound),
        retrieval_query(inbound),
        count_tokens=lambda m: runtime.count_tokens(engine, m),
        max_prompt_tokens=engine.context_length - _max_new_tokens(config),
    )


def _record(inbound, text, stats):
    """Store the bot's reply while ``inbound`` still waits for it (services.record_reply), with the
    published version of the bot that answered (0: the never-published draft; none in test chats)."""
    if inbound.conversation.channel != "preview":
        stats["bot_version"] = inbound.bot.published_version if inbound.bot.published_config is not None else 0
    return services.record_reply(inbound, text, stats, while_pending=True)


class NothingInTime(Exception):
    """The time limit came before the model said anything: handed to the team like a failure (the
    fallback answer would pretend the bot answered)."""

    def __init__(self, why=""):
        super().__init__(why or f"no reply within the time limit (CHATNEXUS_TASK_TIME_LIMIT, "
                                f"{settings.CHATNEXUS_TASK_TIME_LIMIT} s)")


def _waiting(message_id) -> bool:
    """Is the message still waiting for the bot (to be answered, and not answered yet)?"""
    return (Message.objects.filter(id=message_id, reply_state=Message.ReplyState.PENDING).exists()
            and not Message.objects.filter(reply_to_id=message_id).exists())


def retrieval_query(inbound) -> str:
    """What the bot's knowledge is searched with: the customer's words, or for a file sent alone
    (a text or PDF the model reads) what the file says — before, nothing, so no knowledge at all."""
    return inbound.text.strip() or prompt_text(inbound)


def _engine(drafter):
    """The engine with the bot's drafter; a drafter that cannot load, or that this server does not
    offer bots (one stored before CHATNEXUS_BOT_DRAFTERS changed, or imported), falls back to the default."""
    if drafter and not drafter_allowed(drafter):
        log.warning("drafter %r is not offered on this server (CHATNEXUS_BOT_DRAFTERS); using %r",
                    drafter, settings.CHATNEXUS_DRAFTER)
        drafter = None
    try:
        return runtime.engine_for(drafter)
    except EngineError:
        if not drafter or drafter == settings.CHATNEXUS_DRAFTER:
            raise
        log.warning("drafter %r failed to load; using %r", drafter, settings.CHATNEXUS_DRAFTER, exc_info=True)
        return runtime.engine_for(None)


def _mark_failed(inbound, error):
    """Record the failure on the inbound message and hand the conversation to the team: the
    customer gets the bot's handoff message instead of silence (services.fail_reply)."""
    services.fail_reply(inbound, repr(error))


def _stream(engine, messages, inbound, max_new_tokens, temperature, deadline=None):
    """Run the engine until ``deadline``, pushing each text delta live; return (the reply text, why
    the worker cut it: "repetition" where the model began repeating itself, "time" at the time
    limit, else None)."""
    text, checked, timed_out = "", time.monotonic(), False
    try:
        for delta in engine.stream(
            messages,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            seed=inbound.id,  # sampled replies are reproducible per message
            namespace=runtime.namespace_for(inbound.bot_id),  # suffix drafting from this bot's replies only
            deadline=deadline,  # the engine stops there, in worker threads as in worker processes
        ):
            if time.monotonic() - checked >= TAKEN_OVER_CHECK_S:
                checked = time.monotonic()
                if not Message.objects.filter(id=inbound.id, reply_state=Message.ReplyState.PENDING).exists():
                    return text, None  # the team took the conversation over: record_reply stores nothing
            text += delta
            events.push(inbound.conversation_id, "reply.delta", reply_to=inbound.id, delta=delta)
            cut = repetition_cut(text)
            if cut is not None:  # closing the stream ends generation; last_stats still set
                return cut, "repetition"
    except SoftTimeLimitExceeded:  # a worker process's own limit: a forward outlasted the margin
        timed_out = True
    # the deadline: the engine stopped (no stats yet if the soft limit came before its first forward)
    timed_out = timed_out or getattr(engine.last_stats, "stop_reason", None) == "time"
    if timed_out:  # both end the same way: the reply is what was said so far
        log.warning("generate_reply: message %s hit the time limit after %d chars", inbound.id, len(text))
    cut = repetition_cut(text, finished=True)  # a reply that ends on a repeat ("We open at 9. We open at 9.")
    if cut is not None:
        return cut, "repetition"
    return text, "time" if timed_out else None


SEGMENT = re.compile(r"(?<=[.!?])\s+|\n+")
LOOP_MIN_CHARS = 24  # a stretch this long said twice in a row, without a sentence break, is a loop
NEAR_MIN_WORDS = 5  # sentences this long that differ by one added word ("We also offer X") repeat


def repetition_cut(text, min_chars=12, finished=False):
    """Small models fall into loops ("I'm sorry. I'm sorry. ..."). Return the reply up to the
    first finished repeat, else None. A repeat is a sentence or line of at least ``min_chars``
    seen earlier in the reply, or one word longer or shorter than an earlier one of at least
    NEAR_MIN_WORDS words ("We also offer a tune-up." after "We offer a tune-up."), or a stretch
    of at least LOOP_MIN_CHARS said twice in a row without a sentence break ("80 km range We
    offer 1,890 euros, 80 km range We offer 1,890 euros"). Cutting keeps the reply a prefix of
    the model's own output. While the reply streams its last piece may still be growing;
    ``finished`` (the model has stopped) counts it too."""
    seen, sentences = set(), []
    pieces = SEGMENT.split(text)
    offset = 0
    for piece in pieces if finished else pieces[:-1]:
        start = text.index(piece, offset)
        words = piece.lower().split()
        key = " ".join(words)
        if len(key) >= min_chars:
            if key in seen or any(_one_word_apart(words, earlier) for earlier in sentences):
                return text[:start].rstrip()
            seen.add(key)
            sentences.append(words)
        offset = start + len(piece)
    return _loop_cut(text)


def _one_word_apart(a: list[str], b: list[str]) -> bool:
    """Is one word list the other with one word added (and both at least NEAR_MIN_WORDS long)?"""
    if len(a) < len(b):
        a, b = b, a
    if len(a) != len(b) + 1 or len(b) < NEAR_MIN_WORDS:
        return False
    i = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), len(b))
    return a[i + 1:] == b[i:]


def _loop_cut(text: str, longest: int = 400):
    """When the text ends with a stretch said twice in a row: the text before the second time,
    back to its last sentence or line break if it has one (a loop's period can start mid-sentence,
    and a reply should not end there); else None."""
    end = len(text.rstrip())
    for size in range(LOOP_MIN_CHARS, min(longest, end // 2) + 1):
        second = text[end - size:end]
        if text[end - 2 * size:end - size] == second and len(second.split()) >= 4:
            before = text[:end - size]
            breaks = [m.start() for m in SEGMENT.finditer(before) if before[:m.start()].strip()]
            return before[:breaks[-1]].rstrip() if breaks else before.rstrip()
    return None


def _remember(inbound, config, reply):
    """Teach the bot's suffix index the stored reply (preview conversations run a draft config,
    and canned replies are not the model's: skipped)."""
    if inbound.conversation.channel == "preview" or (reply.stats or {}).get("canned"):
        return
    try:
        runtime.remember_reply(_engine(config.get("drafter") or None), inbound.bot_id, reply.text, inbound.text)
    except EngineError:  # noqa: PERF203 - drafting memory is an optimisation, never a failure
        log.warning("could not remember reply %s", reply.id, exc_info=True)


def _stored_replies(bot_id):
    """The bot's latest stored replies and the messages they answered, oldest first."""
    replies = (
        Message.objects.filter(bot_id=bot_id, sender=Message.Sender.BOT, reply_to__isnull=False)
        .exclude(channel="preview")
        .select_related("reply_to")
        .order_by("-id")[:REMEMBERED_REPLIES]
    )
    return [(reply.text, reply.reply_to.text) for reply in reversed(list(replies))]


def _turns(inbound):
    """The conversation for the model, once the channel has kept the message's files. ``_generate``
    reads it before holding the model (its files fetched and read, the texts kept by bots.files) and
    again holding it (the replies stored meanwhile)."""
    _keep_files(inbound)
    return _history(inbound)


def _keep_files(inbound):
    """Have the channel keep the message's files (WhatsApp media are fetched by a task that may
    not have run yet); a file that cannot be kept is left out, never the reply."""
    from channels_app.registry import adapter_for

    try:
        adapter_for(inbound.channel).keep_files(inbound)
    except SoftTimeLimitExceeded:
        raise  # the worker's time limit: not a file problem
    except Exception:  # noqa: BLE001 - the reply goes on without the file
        log.exception("message %s: its files could not be kept before the reply", inbound.id)


def _history(inbound):
    """The last turns of the conversation up to and including ``inbound``, as chat messages; turns
    of one side in a row (a customer who wrote twice, an agent after the bot) are one turn, since
    many chat templates refuse two in a row."""
    turns = []
    for message in services.recent_turns(inbound.conversation_id, HISTORY_TURNS, up_to=inbound.id):
        if message.direction == Message.Direction.INBOUND:  # with the text of the customer's files
            turn = {"role": "user", "content": prompt_text(message)}
        else:
            turn = {"role": "assistant", "content": message.text}
        if turns and turns[-1]["role"] == turn["role"]:
            turns[-1]["content"] += "\n\n" + turn["content"]
        else:
            turns.append(turn)
    return turns


@worker_process_init.connect
def _preload_model(**_):
    """Load the model (and measure what the adaptive draft length needs) when the worker
    process starts, not on the first customer's message."""
    if settings.CHATNEXUS_PRELOAD_MODEL:  # read like every switch: 1/true/yes/on (chatnexus/settings.py)
        started = time.monotonic()
        try:
            engine = runtime.preload()
        except EngineError as e:  # the worker still starts: each reply then fails with this reason, stored
            log.error("cannot load the model (%s): %s", settings.CHATNEXUS_TARGET, e)
        else:  # Celery's "ready." comes from the main process, before this one has loaded anything
            log.info("model preloaded in %.0f s: %s, %s weights on %s", time.monotonic() - started,
                     engine.target_spec, engine.precision.name, engine.device)
