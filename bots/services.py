"""The only writer of conversations and messages (side-effecting ``do``-style functions).

``receive()`` is where every channel's inbound message enters: it stores the
conversation and the message in one transaction and queues the reply task once
that transaction commits. ``record_reply()`` stores the bot's answer exactly
once per inbound message; ``agent_reply()`` stores a human's. Each queues delivery
through the conversation's own channel.
"""
import hashlib
import logging
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import F, Q
from django.db.models.functions import Now
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from . import events, hours
from .knowledge import folded
from .models import Attachment, Bot, Conversation, Membership, Message, Organization, ReplyBeat, Tag
from .models.bots import AWAY_MESSAGE, HANDOFF_MESSAGE, NO_TEXT_MESSAGE, lock_bots
from .models.tenants import person_name

log = logging.getLogger(__name__)

# Hard ceiling on what we store for one inbound text; channels reject larger input earlier.
MAX_INBOUND_CHARS = 20_000


@dataclass
class Received:
    conversation: Conversation
    message: Message
    created: bool  # False when the external id was seen before (a redelivered webhook)


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
EXTERNAL_ID_CHARS = 255  # Conversation.external_id and Message.external_id


def storable(value):
    """Text as PostgreSQL keeps it: NUL and lone surrogates (UTF-8 has no bytes for them; a JSON
    "\\ud83d" alone decodes to one) become U+FFFD, through dicts and lists too."""
    if isinstance(value, str):
        return _UNSTORABLE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {storable(key): storable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [storable(item) for item in value]
    return value


def external_key(value: str) -> str:
    """A channel's id of a thread or message as stored: one longer than the column (a 300-character
    Message-ID) by its digest — the same every time, so redeliveries and threads still match."""
    value = storable(value or "")
    if len(value) <= EXTERNAL_ID_CHARS:
        return value
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()


def receive(
    *,
    bot: Bot,
    channel: str,
    thread_id: str,
    text: str,
    external_id: str = "",
    contact: dict | None = None,
    subject: str = "",
    meta: dict | None = None,
    answer: bool = True,
    skip_reason: str = "",
    files: list | None = None,
    automated: bool = False,
) -> Received:
    """Store an inbound customer message and queue its reply.

    ``thread_id`` is the channel's id of the thread (visitor, phone number, email
    thread root); ``external_id`` the channel's id of this message, used to
    deduplicate redeliveries. ``answer=False`` stores it for the inbox without
    answering (``skip_reason`` says why: auto-reply loop, bulk mail, ...).
    ``files`` [(filename, content type, bytes)] are the customer's attachments, stored
    with the message in the same transaction (a redelivery stores none again).
    ``automated``: a machine sent it (an auto-reply, a bounce, list mail): stored, never answered,
    and the team is not emailed about it. A person's message in a conversation the team has (the
    bot paused) marks it as needing a human again and gets the team emailed
    (tasks.notify_team_of_message), even one the bot would not have answered anyway (a photo alone).
    """
    # PostgreSQL refuses NUL and lone surrogates in text; keep the message, mark the character.
    text = storable(text[:MAX_INBOUND_CHARS])
    contact, subject, meta = storable(contact or {}), storable(subject), storable(meta)
    thread_id, external_id = external_key(thread_id), external_key(external_id)
    if external_id:
        existing = Message.objects.filter(bot=bot, channel=channel, external_id=external_id).first()
        if existing:
            return Received(existing.conversation, existing, created=False)
    try:
        with transaction.atomic():
            conversation = _conversation_for(bot, channel, thread_id, contact, subject)
            team_has_it = conversation.bot_paused
            reply_state, reason = _reply_state(bot, conversation, text, answer, skip_reason)
            # the channel's "talk to a human" (the widget's button) while the team has it: never the model's
            # to answer when the conversation is given back (_bots_to_answer)
            asked_for_a_person = skip_reason == "handoff" and reason == TEAM_HAS_IT
            message = Message.objects.create(
                organization_id=bot.organization_id,
                bot=bot,
                conversation=conversation,
                channel=channel,
                direction=Message.Direction.INBOUND,
                sender=Message.Sender.CUSTOMER,
                text=text,
                external_id=external_id,
                reply_state=reply_state,
                meta={**(meta or {}), **({"skip_reason": reason} if reason else {}),
                      **({"asked_for_a_person": True} if asked_for_a_person else {})},
            )
            for index, (filename, content_type, content) in enumerate(files or []):
                store_attachment(message, index, filename, content_type, content)
            conversation.last_message_at = message.created
            conversation.status = Conversation.Status.OPEN
            # a person writing to the team (not the bot) waits for a person again, until one answers:
            # back in "Needs a human" even after an agent's first answer had taken it out
            waits_for_team = team_has_it and not automated and reason != "handoff"
            conversation.needs_human = conversation.needs_human or waits_for_team
            conversation.save(update_fields=["last_message_at", "status", "needs_human"])
            if reason == "handoff":
                _start_handoff(conversation, message)
            elif waits_for_team and channel != "preview":
                transaction.on_commit(lambda: _notify_team_of_message(message.id), robust=True)
            # robust (here and for every queued task below): a broker refusing the task must not turn
            # a stored message into an error for its sender; the sweep queues what it never got
            transaction.on_commit(lambda: _after_inbound(message), robust=True)
    except IntegrityError:
        # A concurrent delivery of the same external id won the insert: it is stored once.
        existing = Message.objects.filter(bot=bot, channel=channel, external_id=external_id).first()
        if existing is None:
            raise
        return Received(existing.conversation, existing, created=False)
    return Received(conversation, message, created=True)


def store_attachment(message: Message, index: int, filename: str, content_type: str, content: bytes) -> Attachment:
    """Keep the `index`-th file of a customer's message; once per index (a second call returns the first)."""
    existing = Attachment.objects.filter(message=message, index=index).first()
    if existing:
        return existing
    attachment = Attachment(
        organization_id=message.organization_id,
        message=message,
        index=index,
        filename=storable(filename.replace("\x00", ""))[:255],
        content_type=storable(content_type or "application/octet-stream")[:127],
        size=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
    )
    attachment.file.save("attachment", ContentFile(content), save=False)
    try:
        with transaction.atomic():
            attachment.save()
    except IntegrityError:  # another worker stored this index first
        attachment.file.delete(save=False)
        return Attachment.objects.get(message=message, index=index)
    return attachment


def delete_conversations(conversations) -> int:
    """Erase conversations (a queryset): their messages, and once committed their customers'
    files (bots/signals.py); their bots' drafting memory is rebuilt without them. Returns
    how many conversations went."""
    return _erase(conversations, Conversation)


def delete_messages(messages) -> int:
    """Erase messages (a queryset), as delete_conversations; returns how many messages went."""
    return _erase(messages, Message)


def _erase(rows, model) -> int:
    """Delete ``rows`` and move their bots' ``erasures`` (workers rebuild their memory) in one
    transaction: no deletion commits without its bots' rebuild. The bots are locked in id order first
    (lock_bots), as a knowledge deletion locks them: an UPDATE alone takes them in disk order."""
    with transaction.atomic():
        bot_ids = set(rows.values_list("bot_id", flat=True))
        _, deleted = rows.delete()
        Bot.objects.filter(id__in=lock_bots(bot_ids)).update(erasures=F("erasures") + 1)
    return deleted.get(model._meta.label, 0)


ORPHAN_GRACE = timedelta(hours=1)  # longer than any transaction that writes a file before it commits
_ATTACHMENT_NAME = re.compile(r"[0-9a-f]{32}")


def sweep_orphaned_files(now=None) -> int:
    """Delete stored customers' files that no attachment row names, once older than ORPHAN_GRACE: a
    file is written while its message is stored, and when that transaction rolls back (a crash, a
    refused commit) it stays with no row, where no erasure or retention would reach it. Returns
    how many went."""
    from .models.attachments import attachment_storage

    storage, cutoff, swept = attachment_storage(), (now or timezone.now()) - ORPHAN_GRACE, 0
    try:
        folders, _ = storage.listdir("")
    except FileNotFoundError:  # made with the first customer's file: none stored yet, none to sweep
        return 0
    # only names attachment_path makes (<organisation id>/<32 hex digits>): nothing else is touched
    for folder in filter(str.isdigit, folders):  # one per organisation: a folder that fails stops no other
        try:
            swept += _sweep_folder(storage, folder, cutoff)
        except Exception:  # noqa: BLE001 - logged with its traceback; the other organisations' files still go
            log.exception("retention: sweeping the files of organisation %s failed", folder)
    return swept


def _sweep_folder(storage, folder, cutoff) -> int:
    known = set(Attachment.objects.filter(file__startswith=f"{folder}/").values_list("file", flat=True))
    swept = 0
    for name in storage.listdir(folder)[1]:
        path = f"{folder}/{name}"
        if _ATTACHMENT_NAME.fullmatch(name) and path not in known and storage.get_modified_time(path) < cutoff:
            storage.delete(path)
            swept += 1
    return swept


def erasure_label(conversation) -> str:
    """How the activity log names an erased conversation: by its number, channel and bot. The log
    outlives the erasure (CHATNEXUS_ACTIVITY_RETENTION_DAYS): it names no customer."""
    return f"conversation #{conversation.id} ({conversation.channel_name}, {conversation.bot.name})"


PREVIEW_RETENTION = timedelta(days=1)  # the builder's test chats: nothing shows them once left


def purge_expired(now=None) -> int:
    """Delete the conversations whose last message is older than their organisation's retention,
    and the messages older than it in conversations still going on (a WhatsApp number, a widget
    visitor and an API thread are one conversation for good: a customer writing now and then kept
    years of messages); the builder's test chats a day after their last message. Returns the
    conversations deleted.

    Organisation by organisation, CHATNEXUS_PURGE_BATCH rows at a time, each batch its own
    transaction (``in_batches``): a big backlog holds no lock for long, a row the database refuses
    (logged) stays for the next run while the rest go, and an organisation whose purge fails
    (logged) keeps what it had left while the others are purged; files stay with their rows (a
    file goes once its row's deletion commits: bots/signals.py). An expired conversation's messages
    go first, a batch at a time, then the conversation: deleting it cascaded to all of them at once."""
    now = now or timezone.now()
    with_previews = (Conversation.objects.filter(channel="preview", last_message_at__lt=now - PREVIEW_RETENTION)
                     .values("organization_id"))
    organizations = (Organization.objects.filter(Q(retention_days__isnull=False) | Q(id__in=with_previews))
                     .order_by("id").values_list("id", "retention_days"))
    deleted = 0
    for org_id, days in organizations:
        try:
            for gone in _purge_organization(org_id, days, now):  # as each batch commits: kept if a later one fails
                deleted += gone
        except Exception:  # noqa: BLE001 - logged with its traceback; one organisation's failure stops no other
            log.exception("retention: purging organisation %s failed; what it had left waits for the next run", org_id)
    return deleted


def _purge_organization(org_id, days, now):
    """Yields the conversations each batch deleted."""
    # test chats are no drafting memory (inference.tasks._stored_replies): their bots need no rebuild
    previews = Conversation.objects.filter(organization_id=org_id, channel="preview",
                                           last_message_at__lt=now - PREVIEW_RETENTION)
    yield from in_batches(previews, lambda batch: batch.delete()[1].get(Conversation._meta.label, 0))
    if days is None:
        return
    cutoff = now - timedelta(days=days)
    expired = Conversation.objects.filter(organization_id=org_id, last_message_at__lt=cutoff)
    # Each batch moves its bots' erasures as it commits (_erase): a purge that stops half-way (a
    # worker killed, a batch refused) leaves no deleted reply in the workers' drafting memory.
    # Messages first, a batch at a time: an expired conversation's delete cascaded to all of its
    # messages in one transaction (years of a WhatsApp number's). They are older than the cutoff,
    # bar a reply stored after a last message just before it: taken as its conversation's.
    old = Message.objects.filter(Q(created__lt=cutoff) | Q(conversation__in=expired), organization_id=org_id)
    for _ in in_batches(old, lambda batch: _erase(batch, Message)):
        yield 0
    yield from in_batches(expired, lambda batch: _erase(batch, Conversation))


def in_batches(rows, delete, size=None):
    """Delete ``rows`` (a queryset) by ``delete(batch)``, ``size`` rows at a time
    (CHATNEXUS_PURGE_BATCH) in id order, each batch in a transaction of its own: what went before a
    failure stays gone. A batch that fails is logged and its rows tried one by one: a row the
    database refuses (a lock timeout, a trigger, a broken row) stays for the next run, and holds
    back none after it. Yields what ``delete`` returns (how many went) as each batch commits."""
    size = max(1, size or settings.CHATNEXUS_PURGE_BATCH)
    after = 0
    # past the last id seen, not "what is left": a row that stays (refused, or a trigger skipping it) ends no loop
    while ids := list(rows.filter(id__gt=after).order_by("id").values_list("id", flat=True)[:size]):
        try:
            with transaction.atomic():
                gone = delete(rows.filter(id__in=ids))  # still matching: a conversation written to meanwhile stays
        except Exception:  # noqa: BLE001 - logged with its traceback; the rows are tried one by one
            name = rows.model._meta.verbose_name
            if len(ids) == 1:
                log.exception("retention: deleting %s %s failed; it is left for the next run", name, ids[0])
                gone = 0
            else:
                log.exception("retention: deleting a batch of %s %s..%s failed; trying them one by one",
                              name, ids[0], ids[-1])
                gone = sum(_delete_one(rows, delete, row_id, name) for row_id in ids)
        yield gone
        after = ids[-1]


def _delete_one(rows, delete, row_id, name):
    try:
        with transaction.atomic():
            return delete(rows.filter(id=row_id))
    except Exception as error:  # noqa: BLE001 - the batch's failure was logged with its traceback
        log.warning("retention: deleting %s %s failed (%s); it is left for the next run", name, row_id,
                    str(error).splitlines()[0] if str(error) else type(error).__name__)
        return 0


def _conversation_for(bot, channel, thread_id, contact, subject):
    conversation, created = Conversation.objects.select_for_update().get_or_create(
        bot=bot,
        channel=channel,
        external_id=thread_id,
        defaults={
            "organization_id": bot.organization_id,
            "contact_name": contact.get("name", "")[:200],
            "contact_email": contact.get("email", "")[:254],
            "contact_phone": contact.get("phone", "")[:40],
            "subject": subject[:300],
        },
    )
    if not created and contact.get("email") and not conversation.contact_email:
        conversation.contact_email = contact["email"][:254]
        conversation.save(update_fields=["contact_email"])
    return conversation


def _reply_state(bot, conversation, text, answer, skip_reason):
    if not answer:
        if skip_reason == "handoff" and conversation.bot_paused:  # asked again: the team has it already
            return Message.ReplyState.SKIPPED, TEAM_HAS_IT
        return Message.ReplyState.SKIPPED, skip_reason or "filtered"
    if conversation.bot_paused:
        return Message.ReplyState.SKIPPED, TEAM_HAS_IT
    config = bot.live_config(draft=conversation.channel == "preview")
    if is_handoff_request(config, text):
        return Message.ReplyState.SKIPPED, "handoff"
    return Message.ReplyState.PENDING, ""


def is_handoff_request(config, text):
    lowered = folded(text)
    triggers = [t.strip().lower() for t in config.get("handoff_triggers", "").splitlines() if t.strip()]
    return any(trigger in lowered for trigger in triggers)


def _notify_team_of_message(message_id):
    from .tasks import notify_team_of_message

    notify_team_of_message.delay(message_id)


def _after_inbound(message):
    events.push(message.conversation_id, "message", message=serialize_message(message))
    if message.reply_state == Message.ReplyState.PENDING:
        _queue_reply(message.id)


def _queue_reply(message_id):
    from inference.tasks import generate_reply

    generate_reply.delay(message_id)


# ---------------------------------------------------------------------------
# Replies


def record_reply(inbound: Message, text: str, stats: dict, *, while_pending: bool = False) -> tuple[Message | None, bool]:
    """Store the bot's reply to ``inbound`` once; a second call returns the first reply.

    ``while_pending`` (the model's replies): only while ``inbound`` still waits for the bot. A
    conversation the team took over meanwhile (``skip_pending``) keeps the person's answer
    alone: nothing is stored, and (the earlier reply or None, False) comes back."""
    latency = (timezone.now() - _bots_turn_since(inbound)).total_seconds()
    try:
        with transaction.atomic():
            # the conversation's row before the message's, the order a takeover locks them in (_locked, then
            # skip_pending): the message first, the reply's insert then waited on the conversation while
            # the takeover waited on the message, and PostgreSQL aborted one of them (an agent's 500)
            _hold_conversation(inbound.conversation_id)
            if while_pending and not Message.objects.filter(
                    id=inbound.id, reply_state=Message.ReplyState.PENDING).update(reply_state=Message.ReplyState.DONE):
                return Message.objects.filter(reply_to=inbound).first(), False
            reply = _outbound(
                inbound,
                Message.Sender.BOT,
                text,
                reply_to=inbound,
                delivery_status=Message.Delivery.PENDING,
                stats=stats,
                latency_s=latency,
                ttft_s=stats.get("ttft_s"),
                tokens_per_s=stats.get("tokens_per_s"),
                acceptance_rate=stats.get("acceptance_rate"),
            )
            if not while_pending:  # (with it, marked done above, in the same transaction)
                Message.objects.filter(id=inbound.id).update(reply_state=Message.ReplyState.DONE)
            Conversation.objects.filter(id=inbound.conversation_id).update(last_message_at=reply.created)
            transaction.on_commit(lambda: _queue_delivery(reply), robust=True)
    except IntegrityError:
        return Message.objects.get(reply_to=inbound), False
    return reply, True


def _hold_conversation(conversation_id: int) -> None:
    """Lock the conversation's row until the transaction ends, as the bot's side does before it writes
    to one of its messages (``record_reply``, ``reply_started``): no key update, so the messages
    inserted meanwhile (a customer's, a reply) do not wait for it."""
    list(Conversation.objects.select_for_update(no_key=True).filter(id=conversation_id).values_list("id", flat=True))


def _bots_turn_since(inbound: Message):
    """When ``inbound`` became the bot's to answer: when it was stored, or when the team gave the
    conversation back (``_answer_the_wait``). A reply's latency runs from then: the hours the team held
    the conversation are the team's (the dashboards time them as handoffs), and counted from the
    customer's message they showed as hours of the bot's reply latency and of its wait for the model."""
    requeued = parse_datetime((inbound.meta or {}).get("requeued_at") or "")
    return requeued or inbound.created


def bot_words(config: dict | None, field: str, default: str) -> str:
    """One of a bot's set messages (handoff, away, files without text) from its config: the
    builder's words, else ``default`` when it left them blank."""
    return ((config or {}).get(field) or "").strip() or default


def no_text_reply(config: dict | None) -> str:
    """What a bot (its live config: the published one, or the draft of a bot never published) says
    to files alone with nothing the model can read — a photo, a voice note, a scanned PDF."""
    return bot_words(config, "no_text_message", NO_TEXT_MESSAGE)


def canned_reply(received: Received) -> None:
    """The bot's reply to files without text (``no_text_reply``) to a new message the model does
    not answer (a photo or voice note alone), unless the team has taken the conversation over.
    From the config the channels answer with (``live_config``): a bot never published uses its draft."""
    if received.created and not received.conversation.bot_paused:
        record_reply(received.message, no_text_reply(received.conversation.bot.live_config()), {"canned": True})


def agent_reply(conversation: Conversation, user, text: str, meta: dict | None = None) -> Message:
    """A human agent answers; the bot stays paused until given back (or the conversation closed). ``meta``: what the
    channel needs besides the text (a WhatsApp template's content SID and variables)."""
    with transaction.atomic():
        current = _locked(conversation)
        message = _outbound(current, Message.Sender.AGENT, text, delivery_status=Message.Delivery.PENDING,
                            meta={**(meta or {}), **_agent(user)})
        current.bot_paused = True
        current.needs_human = False
        current.last_message_at = max(current.last_message_at, message.created)
        if current.assignee_id is None:
            current.assignee = user
        _save_state(conversation, current, ["bot_paused", "needs_human", "last_message_at", "assignee"])
        skip_pending(conversation.id)
        transaction.on_commit(lambda: _queue_delivery(message), robust=True)
    return message


def add_note(conversation: Conversation, user, text: str) -> Message:
    """An agent's internal note on the conversation: kept in the thread for the team; never
    delivered (no delivery state), never in the widget's history, never in the model's prompt."""
    with transaction.atomic():  # as every message is stored (signals.settled_message_ids)
        return _outbound(conversation, Message.Sender.NOTE, text, meta=_agent(user))


FORM_TOKEN_CHARS = 64  # the longest one-time form token looked up (the inbox draws 22 characters)


def store_once(conversation: Conversation, token: str, store):
    """Run ``store()`` (it returns the message it stored, or None) unless a message of the conversation
    already came from the same form: its one-time ``token`` is kept on the message it stored (``form_token``).
    A double-click, or a browser sending the form again, stores and delivers nothing more. The
    conversation's row is locked while we look, so two posts of the same form at the same moment store
    one message between them. Returns (whether the form was sent before, the message stored or None).
    No token (a page drawn before tokens) is stored as it comes."""
    token = (token or "")[:FORM_TOKEN_CHARS]
    with transaction.atomic():
        _locked(conversation)
        if token and conversation.messages.filter(meta__form_token=token).exists():
            return True, None
        message = store()
        if message is not None and token:
            message.meta = {**(message.meta or {}), "form_token": token}
            Message.objects.filter(id=message.id).update(meta=message.meta)
    return False, message


def _outbound(source, sender, text, **fields) -> Message:
    """A new outbound message in the conversation of ``source`` (a Conversation, or one of its messages)."""
    conversation_id = source.id if isinstance(source, Conversation) else source.conversation_id
    return Message.objects.create(organization_id=source.organization_id, bot_id=source.bot_id,
                                  conversation_id=conversation_id, channel=source.channel,
                                  direction=Message.Direction.OUTBOUND, sender=sender, text=text, **fields)


def _locked(conversation: Conversation) -> Conversation:
    """The conversation as stored now, its row locked until the transaction ends. An agent's page
    loaded it earlier: saving that copy would undo what changed since (an ``assign()``)."""
    return Conversation.objects.select_for_update().get(id=conversation.id)


def _save_state(conversation: Conversation, current: Conversation, fields: list[str]) -> None:
    """Store ``fields`` of ``current`` (from ``_locked``), and show them on the caller's ``conversation`` too."""
    current.save(update_fields=fields)
    for field in fields:
        name = Conversation._meta.get_field(field).attname  # assignee_id: no query for the user
        setattr(conversation, name, getattr(current, name))


def _agent(user) -> dict:
    return {"agent_id": user.id, "agent_name": person_name(user)}


def _queue_delivery(message):
    from channels_app.tasks import deliver

    deliver.delay(message.id)


# ---------------------------------------------------------------------------
# Handoff and conversation state


HANDOFF_REPLY = HANDOFF_MESSAGE  # the bot's handoff message when it leaves it blank
# Why a message still waiting for the bot was not answered when the conversation was handed to the team:
# not "handoff", which is the customer's request itself (what the dashboards count and time from)
HANDED_OVER = "handed to the team before an answer"
TEAM_HAS_IT = "agent has the conversation"  # why a customer's message to a paused bot was not answered


def _start_handoff(conversation, inbound):
    conversation.bot_paused = True
    conversation.needs_human = True
    conversation.team_notified_at = timezone.now()  # the handoff email below; more messages wait for an answer
    conversation.save(update_fields=["bot_paused", "needs_human", "team_notified_at"])
    skip_pending(conversation.id, HANDED_OVER)  # earlier messages still waiting go to the team too
    config = conversation.bot.live_config(draft=conversation.channel == "preview")
    away = hours.team_away(conversation.organization)
    text = bot_words(config, "away_message", AWAY_MESSAGE) if away else bot_words(config, "handoff_message", HANDOFF_REPLY)
    reply = _outbound(conversation, Message.Sender.SYSTEM, text, reply_to=inbound,
                      delivery_status=Message.Delivery.PENDING, meta={"outside_team_hours": True} if away else {})
    transaction.on_commit(lambda: _queue_delivery(reply), robust=True)
    transaction.on_commit(lambda: _notify_agents(conversation.id), robust=True)


def hand_off_after_failure(inbound):
    """The model could not answer `inbound` (a broken model, a prompt it cannot take): rather than
    leave the customer waiting in silence, hand the conversation to the team as the customer's own
    request for a human would — the bot's handoff (or away) message, the team emailed. Where the
    team has the conversation already, it only stays flagged."""
    with transaction.atomic():
        conversation = Conversation.objects.select_for_update().select_related("bot").get(id=inbound.conversation_id)
        if conversation.bot_paused or Message.objects.filter(reply_to=inbound).exists():
            Conversation.objects.filter(id=conversation.id).update(needs_human=True)
            return
        _start_handoff(conversation, inbound)


def _notify_agents(conversation_id):
    from .tasks import notify_agents_of_handoff

    notify_agents_of_handoff.delay(conversation_id)


def set_bot_paused(conversation: Conversation, paused: bool, by=None):
    """Take over (pause the bot; an unassigned conversation becomes ``by``'s) or give it back to the
    bot, which answers what the customer wrote meanwhile that nobody answered (``_answer_the_wait``)."""
    with transaction.atomic():
        current = _locked(conversation)
        given_back = current.bot_paused and not paused
        current.bot_paused = paused
        if not paused:
            current.needs_human = False
        elif by is not None and current.assignee_id is None:
            current.assignee = by
        _save_state(conversation, current, ["bot_paused", "needs_human", "assignee"])
        if paused:
            skip_pending(conversation.id)
        elif given_back:
            _answer_the_wait(current)
    events.push(conversation.id, "conversation", bot_paused=paused)


# skipped only because the team had the conversation: the bot would have answered them
_TEAMS_TO_ANSWER = (TEAM_HAS_IT, HANDED_OVER)
# How old a message the bot answers when given the conversation back may be. No setting says how long
# a customer waits for an answer; WhatsApp lets free text reach them for 24 hours after their message,
# and a bot answering a day-old question out of the blue surprises more than the team's silence.
GIVE_BACK_ANSWERS_WITHIN = timedelta(hours=24)


def _answer_the_wait(conversation: Conversation) -> None:
    """The bot was given the (locked) ``conversation`` back: the customer's latest message the team
    kept from the bot, unless something was said to the customer after it (an agent's answer, the
    handoff message), waits for the bot again and its reply task is queued once this commits.
    Leaving it skipped left the customer waiting in silence, and out of "Needs a human". A message
    it would never have answered (an auto-reply, one the channel filtered) stays as it is, and so
    does one that is not the model's to answer now (``_bots_to_answer``), or any while the channel
    refuses to send to the customer (WhatsApp: they wrote STOP since). Its reply's latency runs from
    now (``requeued_at``: ``_bots_turn_since``)."""
    from channels_app.registry import adapter_for

    if adapter_for(conversation.channel).refusal(conversation):
        return
    conversation_id = conversation.id
    latest = (Message.objects.filter(conversation_id=conversation_id, direction=Message.Direction.INBOUND,
                                     reply_state=Message.ReplyState.SKIPPED, meta__skip_reason__in=_TEAMS_TO_ANSWER)
              .select_related("bot").order_by("-id").first())
    if latest is None or not _bots_to_answer(latest) or Message.objects.filter(
            conversation_id=conversation_id, direction=Message.Direction.OUTBOUND,
            id__gt=latest.id).exclude(sender=Message.Sender.NOTE).exists():
        return
    meta = {key: value for key, value in (latest.meta or {}).items()
            if key not in ("skip_reason", "starts", "started_at")}  # the bot's turn anew (reply_started)
    meta["requeued_at"] = timezone.now().isoformat()
    if Message.objects.filter(id=latest.id, reply_state=Message.ReplyState.SKIPPED).update(
            reply_state=Message.ReplyState.PENDING, meta=meta):
        transaction.on_commit(lambda: _queue_reply(latest.id), robust=True)


def _bots_to_answer(message: Message) -> bool:
    """Whether the bot given the conversation back answers the customer's ``message``: not a request
    for a person (the widget's button, or the bot's handoff words typed: the team has decided the bot
    answers, and the model answering "talk to a human" helps nobody), nor one older than
    GIVE_BACK_ANSWERS_WITHIN. Those stay skipped, for the team to see."""
    if timezone.now() - message.created > GIVE_BACK_ANSWERS_WITHIN:
        return False
    config = message.bot.live_config(draft=message.channel == "preview")
    return not (message.meta or {}).get("asked_for_a_person") and not is_handoff_request(config, message.text)


def skip_pending(conversation_id: int, reason: str = TEAM_HAS_IT) -> int:
    """The team has the conversation: customer messages still waiting for the bot are not the
    bot's to answer any more (a queued reply task finds them skipped, a reply being generated is
    not stored: ``record_reply(while_pending=True)``). Returns how many were waiting."""
    waiting = list(Message.objects.select_for_update().filter(
        conversation_id=conversation_id, direction=Message.Direction.INBOUND, reply_state=Message.ReplyState.PENDING))
    for message in waiting:
        Message.objects.filter(id=message.id, reply_state=Message.ReplyState.PENDING).update(
            reply_state=Message.ReplyState.SKIPPED, meta={**(message.meta or {}), "skip_reason": reason})
    return len(waiting)


def assign(conversation: Conversation, user_id) -> None:
    """Give the conversation to the member with ``user_id`` or to nobody (None); ValueError
    when that user is not a member of the conversation's organisation."""
    user = None
    if user_id is not None:
        membership = (Membership.objects.filter(organization_id=conversation.organization_id, user_id=user_id)
                      .select_related("user").first())
        if membership is None:
            raise ValueError("only a member of the conversation's organisation can be assigned")
        user = membership.user
    Conversation.objects.filter(id=conversation.id).update(assignee=user)
    conversation.assignee = user


def tag_name(name: str) -> str:
    """A tag as typed, tidied: spaces collapsed, at most Tag.MAX_LENGTH characters, what the database
    cannot store as U+FFFD (a NUL); ValueError when empty."""
    name = storable(" ".join(str(name).split())[:Tag.MAX_LENGTH])
    if not name:
        raise ValueError("a tag needs a name")
    return name


def organization_tag(organization_id: int, name: str) -> Tag:
    """The organisation's tag called ``name`` (any case), made when it has none yet."""
    name = tag_name(name)
    tag = Tag.objects.filter(organization_id=organization_id, name__iexact=name).first()
    if tag is not None:
        return tag
    try:
        with transaction.atomic():
            return Tag.objects.create(organization_id=organization_id, name=name)
    except IntegrityError:  # made at the same moment by someone else
        return Tag.objects.get(organization_id=organization_id, name__iexact=name)


def add_tag(conversation: Conversation, name: str) -> Tag:
    """Put the organisation's tag ``name`` (made if new) on the conversation; ValueError when empty."""
    tag = organization_tag(conversation.organization_id, name)
    conversation.tags.add(tag)
    return tag


def set_tags(conversation: Conversation, names) -> list[str]:
    """The conversation's tags become exactly ``names`` (made for the organisation as needed)."""
    tags = {tag.id: tag for tag in (organization_tag(conversation.organization_id, name) for name in names)}
    conversation.tags.set(tags.values())
    return sorted(tag.name for tag in tags.values())


def set_status(conversation: Conversation, status: str):
    """Close or reopen. Closing ends a hand-off (the team is done): the bot answers the customer's next
    message (the conversation reopens by itself) and the conversation leaves "Needs a human"."""
    state = {"status": status}
    if status == Conversation.Status.CLOSED:
        state.update(bot_paused=False, needs_human=False)
    Conversation.objects.filter(id=conversation.id).update(**state)
    for field, value in state.items():
        setattr(conversation, field, value)
    events.push(conversation.id, "conversation", **state)


def recent_turns(conversation_id: int, limit: int, up_to: int | None = None) -> list[Message]:
    """The conversation's latest ``limit`` messages of the exchange itself (with text or files;
    not the team's notes), oldest first, attachments prefetched. What the widget shows and what
    the model reads as the history. With ``up_to``, what the model answering that message reads:
    nothing after it, except replies to earlier messages stored since (a customer who wrote twice
    quickly), each right after the message it answers."""
    messages = Message.objects.filter(conversation_id=conversation_id)
    if up_to is not None:
        messages = messages.filter(Q(id__lte=up_to) | Q(direction=Message.Direction.OUTBOUND, reply_to_id__lt=up_to))
    recent = list(messages.exclude(text="", attachments=None).exclude(sender=Message.Sender.NOTE)
                  .prefetch_related("attachments").order_by("-id")[:limit])
    if up_to is None:
        recent.reverse()  # as they came
    else:
        recent.sort(key=lambda m: (m.reply_to_id if m.direction == Message.Direction.OUTBOUND and m.reply_to_id
                                   else m.id, m.id))
    return recent


def serialize_message(message: Message) -> dict:
    """The JSON shape of a message for live events and the widget's history."""
    return {
        "id": message.id,
        "direction": message.direction,
        "sender": message.sender,
        "text": message.text,
        "created": message.created.isoformat(),
        "reply_to": message.reply_to_id,
        "stats": message.stats or None,
        "delivery_status": message.delivery_status,
        "rating": message.rating,
        "attachments": [{"name": a.filename, "content_type": a.content_type, "size": a.size}
                        for a in message.attachments.all()],
    }


def rate_reply(conversation_id: int, message_id: int, rating: int) -> bool:
    """The customer rates a bot reply of their conversation (again: the last rating counts);
    False when the conversation has no such bot reply."""
    if rating not in Message.Rating.values:
        raise ValueError(f"a rating is one of {Message.Rating.values}")
    return bool(Message.objects.filter(id=message_id, conversation_id=conversation_id, sender=Message.Sender.BOT)
                .update(rating=rating))


# A message whose reply the model started this often without a reply: its task dies on it every time (a
# worker killed at the hard time limit, or by the crash the message causes, which Celery redelivers at once
# without a count). Its task hands it to the team rather than start a further time (``reply_started``),
# and so does the sweep once the last start is older than a task may run. Counted when the model starts on
# it (holding it), not when a task is queued: a message waiting behind a long queue (a slow or stopped
# inference worker), or behind another message of its conversation, is queued again, never failed for it,
# and a copy of the task that finds it answered, or being answered (``_answering``), counts nothing.
STARTS_BEFORE_HANDOFF = 3
# While the model answers a message its task beats the start every BEAT_S (``answering``, a ReplyBeat);
# a start not beaten for ALIVE_S is a task gone (killed, its worker or machine lost): another copy of the
# task may start on the message, and the conversation's later messages wait for it no more. Several
# beats, so that a busy machine or a beat waiting for SQLite's write lock is not taken for dead.
BEAT_S = 3
ALIVE_S = 20


class AnotherReplyFirst(Exception):
    """The model must not start on a message yet (``reply_started``): another message of its
    conversation is answered first, and its reply belongs in this one's history."""

    def __init__(self, message_id: int):
        super().__init__(f"message {message_id} of the conversation is answered first")
        self.message_id = message_id


class AnsweredElsewhere(AnotherReplyFirst):
    """The model must not start on a message (``reply_started``): another task is answering it now (a
    copy of its task, queued again by the sweep or redelivered by the broker, while the first runs)."""

    def __str__(self):
        return f"message {self.message_id} is being answered by another task"


def reply_started(message_id: int) -> str | None:
    """The model is about to start on the inbound message ``message_id``: the start (its time, which
    names its beat: ``answering``) when it may, the start counted in its ``meta["starts"]`` with the time (``requeue_unfinished`` hands the team one whose
    tasks keep dying); the count starts again when the team gives the conversation back
    (``_answer_the_wait``). None when the message waits for the bot no more: answered or taken over
    meanwhile, or handed to the team now, its reply started STARTS_BEFORE_HANDOFF times in vain already.
    The caller keeps the start alive while the model answers (``answering(message_id, start)``); the
    start is its first beat.

    One reply per conversation at a time, across processes and machines: AnotherReplyFirst, nothing
    counted, while another message of the conversation comes first (``_answered_first``), and
    AnsweredElsewhere while another task is answering this very message (``_answering``). Decided
    holding the conversation's row, so that of two processes starting at once the second sees the
    first's start (on SQLite every transaction takes the database's write lock as it begins)."""
    conversation_id = Message.objects.filter(id=message_id).values_list("conversation_id", flat=True).first()
    with transaction.atomic():
        _hold_conversation(conversation_id)  # before the message's row, as record_reply and a takeover
        message = Message.objects.select_for_update().filter(
            id=message_id, reply_state=Message.ReplyState.PENDING).first()
        if message is None:
            return None
        if _answering(message):  # before the count: the third start's copy must not hand it over
            raise AnsweredElsewhere(message_id)
        meta = message.meta or {}
        starts = meta.get("starts", 0)
        if starts < STARTS_BEFORE_HANDOFF:
            now = timezone.now()
            first = _answered_first(message, now)
            if first is not None:
                raise AnotherReplyFirst(first.id)
            start = now.isoformat()
            Message.objects.filter(id=message_id).update(meta={**meta, "starts": starts + 1, "started_at": start})
            ReplyBeat.objects.update_or_create(message_id=message_id, defaults={
                "start": start, "started_at": Now(), "alive_at": Now()})  # a dead start's beat replaced
            return start
    _started_in_vain(message, starts)  # once the lock is let go: the handoff takes the conversation's row
    return None


def _answered_first(message: Message, now) -> Message | None:
    """The message of ``message``'s conversation that the bot answers before it, if any: one the model
    is answering now (``_answering``: a dead task's start holds nobody up for longer than ALIVE_S), or
    an earlier one not started yet whose task may still come (the bot's turn for less long than a task
    may run: its task may wait in the broker, or behind busy worker processes, and nothing tells that
    from a task lost). Read while that one was being answered, the history lacked its reply, and the
    model answered the first question again."""
    others = Message.objects.filter(conversation_id=message.conversation_id, direction=Message.Direction.INBOUND,
                                    reply_state=Message.ReplyState.PENDING).exclude(id=message.id).order_by("id")
    for other in others:
        if _answering(other):
            return other
        started = parse_datetime((other.meta or {}).get("started_at") or "")
        if started is None and other.id < message.id and _may_still_run(_bots_turn_since(other), now):
            return other
    return None


def _answering(message: Message) -> bool:
    """Whether a task is answering ``message`` now: the model started on it (``reply_started``) less long
    ago than a task may run, and the start, the last one (``meta["started_at"]``), was beaten
    (``answering``) less than ALIVE_S ago. Decided on the database's clock, which wrote the beats."""
    start = (message.meta or {}).get("started_at")
    return bool(start) and ReplyBeat.objects.filter(
        message_id=message.id, start=start, started_at__gt=Now() - _task_may_run(),
        alive_at__gt=Now() - timedelta(seconds=ALIVE_S)).exists()


@contextmanager
def answering(message_id: int, start: str):
    """The model answers ``message_id`` (its start ``start`` counted: ``reply_started``) while the block
    runs: a thread beats the start every BEAT_S meanwhile, and a task that dies stops beating with it. However
    the block ends (a reply stored, an error) the start ends with it: a retry of the task, or a copy,
    starts the model at once, not ALIVE_S later."""
    stop = threading.Event()
    threading.Thread(target=_beat, args=(message_id, start, stop), name=f"answering-{message_id}", daemon=True).start()
    try:
        yield
    finally:
        stop.set()
        _stop_beating(message_id, start)


def _beat(message_id: int, start: str | None, stop: threading.Event) -> None:
    """Every BEAT_S until ``stop``: the start ``start`` beaten, while it is the message's (no later start
    replaced it, and it has not ended). Into the beat's row, never the message's: the thread page's poll
    would send the message again after every beat (its version moves with each write)."""
    try:
        while start and not stop.wait(BEAT_S):
            try:
                if not ReplyBeat.objects.filter(message_id=message_id, start=start).update(alive_at=Now()):
                    return  # ended, or started again: no start of ours
            except DatabaseError:  # a beat missed; ALIVE_S covers several
                log.warning("message %s: its reply's start not beaten", message_id, exc_info=True)
                connection.close()  # the next beat connects afresh
    finally:
        connection.close()  # this thread's own


def _stop_beating(message_id: int, start: str | None) -> None:
    """The start ``start`` on ``message_id`` is over (``answering``'s block ended). On a connection that
    works: the block may have ended for a database error that broke the task's (a lost connection), the
    error its task is retried for. Failing, the start ends as a dead task's does, ALIVE_S after its last beat."""
    if not connection.in_atomic_block:  # (closing in a transaction would break the caller's)
        connection.close_if_unusable_or_obsolete()
    try:
        ReplyBeat.objects.filter(message_id=message_id, start=start).delete()
    except DatabaseError:
        log.warning("message %s: its reply's start not ended; it ends in %s s", message_id, ALIVE_S, exc_info=True)


def _may_still_run(since, now) -> bool:
    """Whether a reply task begun at ``since`` may still be running (``_task_may_run``)."""
    return now - since < _task_may_run()


def _task_may_run() -> timedelta:
    """How long a reply task may run: its hard time limit (CHATNEXUS_TASK_TIME_LIMIT + 30 s, inference.tasks)."""
    return timedelta(seconds=settings.CHATNEXUS_TASK_TIME_LIMIT + 30)


def _started_in_vain(message: Message, starts: int) -> None:
    """The model started on ``message`` ``starts`` times and never finished: the team's, as a reply
    the model failed (``fail_reply``), the reason in the inbox."""
    why = f"its reply was started {starts} times and never finished"
    log.warning("message %s: %s; handed to the team", message.id, why)
    fail_reply(message, why, skip_reason=why)


def _died_on(message: Message, now) -> int:
    """How many times the model started on ``message`` in vain: its starts, once the last is older
    than a task may run (0 while one may still be under way)."""
    meta = message.meta or {}
    started = parse_datetime(meta.get("started_at") or "")
    if started is None or _may_still_run(started, now):
        return 0
    return meta.get("starts", 0)


def requeue_unfinished(older_than_s: float = 0) -> tuple[int, int]:
    """Queue again what a lost broker forgot: inbound messages still waiting for a reply,
    replies still waiting to be sent, and sends whose claim (lease) ran out with no outcome —
    their worker died and its task is gone. Run by ``serve`` at start (the embedded in-memory
    broker starts empty) and by the beat job ``bots.tasks.sweep_unfinished`` (a Redis that
    lost its queue).

    Safe to run any time: both tasks are idempotent (a message still queued gets a second
    task, which finds the work done and does nothing, or waits while the first task answers it:
    ``reply_started``). A message the model started on
    STARTS_BEFORE_HANDOFF times in vain (``reply_started``, ``_died_on``: the last start older than
    a task may run) is not queued forever: it is marked failed and handed to the team, as a reply
    the model failed is. Returns (replies, deliveries) queued.
    """
    from django.conf import settings

    from channels_app.tasks import deliver
    from inference.tasks import generate_reply

    now = timezone.now()
    cutoff = now - timedelta(seconds=older_than_s)
    lease_over = now - timedelta(seconds=settings.CHATNEXUS_DELIVERY_LEASE_S)
    pending = list(Message.objects.filter(
        direction=Message.Direction.INBOUND, reply_state=Message.ReplyState.PENDING, created__lte=cutoff
    ))
    unsent = list(Message.objects.filter(direction=Message.Direction.OUTBOUND, created__lte=cutoff).filter(
        Q(delivery_status=Message.Delivery.PENDING)
        | Q(delivery_status=Message.Delivery.SENDING, delivery_claimed_at__lte=lease_over)
    ).values_list("id", flat=True))
    requeued = 0
    for message in pending:
        starts = _died_on(message, now)
        if starts >= STARTS_BEFORE_HANDOFF:
            _started_in_vain(message, starts)
            continue
        generate_reply.delay(message.id)
        requeued += 1
    for message_id in unsent:
        deliver.delay(message_id)
    return requeued, len(unsent)


def fail_reply(inbound: Message, error: str, **meta) -> None:
    """The bot could not answer ``inbound`` (its model failed, said nothing in time, or its task never
    finished): mark it failed, saying why (``meta["error"]``, and what ``meta`` adds: its
    ``skip_reason`` is what the inbox shows), and hand the conversation to the team
    (``hand_off_after_failure``): the customer gets the handoff message instead of silence. Only
    while it still waits for the bot: an answer, or the team's takeover, since wins."""
    updated = Message.objects.filter(id=inbound.id, reply_state=Message.ReplyState.PENDING).update(
        reply_state=Message.ReplyState.FAILED, meta={**(inbound.meta or {}), "error": error[:500], **meta})
    if updated:
        events.push(inbound.conversation_id, "reply.error", reply_to=inbound.id)  # live views drop what streamed
        hand_off_after_failure(inbound)
