"""One inbound email, from raw bytes to ``bots.services.receive()``.

Used by the webhook and by IMAP polling alike. The Message-ID is the external id (a
redelivered or re-fetched mail is stored once); mail without one gets a digest of its
bytes. The thread id is the thread's root Message-ID, found through In-Reply-To and
References (our own replies' Message-IDs lead back to their conversation). Mail that
cannot be parsed is stored as unparseable, with its raw text, and not answered.
"""
import hashlib
import logging

from django.db import transaction

from bots import services
from bots.models import Conversation, Message

from . import filters
from .parse import ParsedMail, Unparseable, parse

log = logging.getLogger(__name__)

MAX_PROMPT_CHARS = 8000  # what the model sees of one mail; the full text stays in meta
MAX_RAW_STORED = 1024 * 1024  # raw text kept for an unparseable mail


def ingest(config, raw: bytes, source: str):
    """Store ``raw`` for ``config``'s bot; returns ``services.Received``."""
    try:
        mail = parse(raw)
    except Unparseable as error:
        return store_unparseable(config, raw, source, str(error))
    return _store(config, mail, raw, source)


scrub = services.storable  # PostgreSQL text and JSON hold neither NUL nor lone surrogates


def digest(raw):
    """The external id of a mail without a Message-ID, or kept as unparseable."""
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def store_unparseable(config, raw, source, why):
    log.warning("email: unparseable mail for channel %s (%s)", config.id, why)
    text = scrub(raw[:MAX_RAW_STORED].decode("utf-8", errors="replace"))
    external_id = digest(raw)
    return services.receive(
        bot=config.bot,
        channel="email",
        thread_id=external_id,
        text=text,
        external_id=external_id,
        subject="(unparseable mail)",
        meta={"unparseable": why, "raw": text, "raw_size": len(raw), "source": source},
        answer=False,
        skip_reason=f"unparseable mail: {why}",
    )


def thread_root(config, mail: ParsedMail) -> str:
    """The conversation's external id: an existing thread this mail refers to, else its root.

    A reply to one of our own mails (its Message-ID carries an HMAC: only those we wrote to know
    it) continues that conversation. A mail that refers only to a customer's Message-ID continues
    it only when it comes from that customer: the id is known to everyone the customer copied,
    and the bot would otherwise answer a stranger from the customer's whole conversation."""
    # as receive() stores them: an id longer than the column by its digest
    candidates = [services.external_key(ref) for ref in [*mail.references, mail.in_reply_to] if ref]
    if not candidates:
        return mail.message_id
    known = (Message.objects.filter(bot_id=config.bot_id, channel="email", external_id__in=candidates)
             .select_related("conversation"))
    ours = next((m for m in known if m.direction == Message.Direction.OUTBOUND), None)
    if ours is not None:
        return ours.conversation.external_id
    senders = {address.lower() for address in (mail.from_address, mail.reply_to_address) if address}
    threads = [m.conversation for m in known] + list(
        Conversation.objects.filter(bot_id=config.bot_id, channel="email", external_id__in=candidates))
    for conversation in threads:
        if conversation.contact_email.lower() in senders:
            return conversation.external_id
    return mail.message_id if threads else candidates[0]  # someone else's thread: a conversation of its own


def _store(config, mail: ParsedMail, raw, source):
    mail = filters.as_sent(mail, config)  # a customer's mail our own Google Group rewrote to come from us
    external_id = scrub(mail.message_id) or digest(raw)
    prompt = scrub(mail.reply_text.strip() or mail.subject or "(empty message)")
    meta = scrub({
        "from_address": mail.from_address,
        "from_name": mail.from_name,
        "reply_to_address": mail.reply_to_address,
        "to": mail.to_addresses[:20],
        "subject": mail.subject,
        "message_id": mail.message_id,
        "in_reply_to": mail.in_reply_to,
        "references": mail.references[-30:],
        "headers": mail.headers,
        "attachments": mail.attachments,
        "full_text": mail.text[: services.MAX_INBOUND_CHARS * 5],
        "source": source,
    })
    with transaction.atomic():
        # Serialises the per-sender reply count (and the thread lookup) per channel.
        type(config).objects.select_for_update().filter(id=config.id).first()
        reason = filters.skip_reason(mail, config)
        automated = filters.automated(reason)
        return services.receive(
            bot=config.bot,
            channel="email",
            thread_id=scrub(thread_root(config, mail)) or external_id,
            text=prompt[:MAX_PROMPT_CHARS],
            external_id=external_id,
            contact=scrub({"email": mail.reply_to_address or mail.from_address, "name": mail.from_name}),
            subject=scrub(mail.subject),
            meta={**meta, "automated": True} if automated else meta,  # an agent's reply is not sent to it (adapter.py)
            answer=not reason,
            skip_reason=reason,
            files=mail.files,
            automated=automated,
        )
