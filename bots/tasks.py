"""Background jobs of the bots app (queue ``default``)."""
import logging

from celery import shared_task
from django.conf import settings
from django.core.mail import send_mail
from django.db.models import Max, Q
from django.utils import timezone

from channels_app.base import one_line

from .models import Conversation, Membership, Message
from .models.conversations import channel_name
from .models.tenants import person_name

log = logging.getLogger(__name__)
EXCERPT_CHARS = 500  # of the customer's message, in the email about it
# The team's emails outlast a mail server down for a while (10 tries 1 s ... 5 min apart, about 13
# minutes, as deliveries; no jitter, which would make each wait anything from 0 up): while a
# handoff's email is pending, later messages of that wait are not emailed.
MAIL_RETRIES = {"retry_backoff": True, "retry_backoff_max": 300, "retry_jitter": False, "max_retries": 10}


def _member_emails(organization, user=None) -> list[str]:
    """The addresses of the organisation's members (or of ``user`` alone) who want these emails
    (Membership.notify_by_email)."""
    members = Membership.objects.select_related("user").filter(organization=organization, notify_by_email=True)
    return sorted({m.user.email for m in (members.filter(user=user) if user is not None else members) if m.user.email})


@shared_task(acks_late=True, autoretry_for=(Exception,), **MAIL_RETRIES)
def notify_agents_of_handoff(conversation_id):
    """Email the organisation's members that a customer asked for a human."""
    conversation = Conversation.objects.select_related("bot", "organization").get(id=conversation_id)
    if conversation.channel == "preview":  # the builder's test chat: a manager trying the bot, no customer
        return
    emails = _member_emails(conversation.organization)
    if not emails:
        return
    link = f"{settings.PUBLIC_URL}/inbox/{conversation.id}/"
    send_mail(
        # names customers chose (a contact name, a thread id) may hold line breaks, which Django
        # refuses in a header (and a retry would meet again, for good): one line
        subject=one_line(f"[{conversation.bot.name}] A customer asked for a human", 250),
        message=f"A customer asked to talk to a person ({channel_name(conversation.channel)}, "
                f"{conversation.bot.name}).\n\nOpen the conversation: {link}\n",
        from_email=None,
        recipient_list=emails,
    )


@shared_task(acks_late=True, autoretry_for=(Exception,), **MAIL_RETRIES)
def notify_team_of_message(message_id):
    """A customer wrote in a conversation the team has (the bot is paused): email the agent it is
    assigned to (else every member) — once per stretch the customer waits: not again until an
    agent has answered since the last email (``Conversation.team_notified_at``). Members who turned
    these emails off (their account page) get none; an assignee who takes none (turned them off, or
    no longer a member) is replaced by every member who does, so someone hears of it."""
    message = Message.objects.select_related("conversation__assignee", "conversation__organization", "bot").filter(
        id=message_id).first()
    if message is None:  # deleted since
        return
    conversation = message.conversation
    if not conversation.bot_paused:  # given back to the bot meanwhile
        return
    answered = conversation.messages.filter(sender=Message.Sender.AGENT).aggregate(last=Max("created"))["last"]
    previous = conversation.team_notified_at
    waiting = Q(team_notified_at__isnull=True)
    if answered:
        waiting |= Q(team_notified_at__lt=answered)
    if not Conversation.objects.filter(waiting, id=conversation.id).update(team_notified_at=timezone.now()):
        return  # told already, and nobody has answered since
    assignee = conversation.assignee
    emails = _member_emails(conversation.organization, user=assignee) if assignee else []
    whose = "assigned to you"
    if not emails:  # nobody has it, or its assignee takes no emails: the team's, so someone hears of it
        emails = _member_emails(conversation.organization)
        whose = f"assigned to {person_name(assignee)} (who gets no such emails)" if assignee else "your team has"
    if not emails:
        return
    excerpt = message.text if len(message.text) <= EXCERPT_CHARS else message.text[:EXCERPT_CHARS] + "…"
    files = message.attachments.count()
    try:
        send_mail(
            subject=one_line(f"[{message.bot.name}] {conversation.display_name} wrote", 250),
            message=f"{conversation.display_name} wrote ({channel_name(conversation.channel)}, {message.bot.name}) "
                    f"in a conversation {whose}; the bot is not answering it.\n\n{excerpt or '(no text)'}\n"
                    + (f"\n{files} file(s) attached.\n" if files else "")
                    + f"\nAnswer it: {settings.PUBLIC_URL}/inbox/{conversation.id}/\n"
                      "\nNo more emails about this conversation until someone answers it.\n",
            from_email=None,
            recipient_list=emails,
        )
    except Exception:
        Conversation.objects.filter(id=conversation.id).update(team_notified_at=previous)  # the retry may send it
        raise


@shared_task(acks_late=True)
def sweep_unfinished():
    """Beat job (every CHATNEXUS_SWEEP_SECONDS): queue again the replies and deliveries a lost
    broker forgot (services.requeue_unfinished), for messages older than
    CHATNEXUS_SWEEP_AFTER_S — younger work may still be legitimately waiting in the queue."""
    from . import services

    replies, deliveries = services.requeue_unfinished(older_than_s=settings.CHATNEXUS_SWEEP_AFTER_S)
    if replies or deliveries:
        log.warning("sweep: re-queued %d pending replies and %d unfinished deliveries", replies, deliveries)
    return replies, deliveries


@shared_task(acks_late=True)
def purge_expired_conversations():
    """Beat job (hourly): delete conversations past their organisation's retention period
    (services.purge_expired), customers' files no message names (services.sweep_orphaned_files),
    and activity log entries past CHATNEXUS_ACTIVITY_RETENTION_DAYS (audit.purge_old); running
    twice deletes nothing more. Each goes organisation by organisation, in batches of their own
    transactions: an organisation whose purge fails is logged and the others are still purged.
    A stage that fails as a whole is logged and the next ones still run; the job then fails,
    naming it. Returns the conversations deleted."""
    from . import audit, services

    stages = (
        ("conversations", services.purge_expired, "retention: deleted %d conversations"),
        ("files", services.sweep_orphaned_files,
         "retention: deleted %d files no message names (their transactions rolled back)"),
        ("activity log entries", audit.purge_old, "retention: deleted %d activity log entries"),
    )
    deleted, failed = {}, []
    for what, stage, done in stages:
        try:
            deleted[what] = stage()
        except Exception:  # noqa: BLE001 - logged with its traceback; one stage's failure skips no other
            log.exception("retention: deleting old %s failed; the other stages still run", what)
            failed.append(what)
            continue
        if deleted[what]:
            log.info(done, deleted[what])
    if failed:  # the job shows failed (Celery's state, its log): the rest was done
        raise RuntimeError(f"retention: deleting old {' and '.join(failed)} failed (logged above)")
    return deleted["conversations"]
