"""Background jobs of the bots app (queue ``default``)."""
import logging

from celery import shared_task
from django.conf import settings
from django.core.mail import send_mail

from .models import Conversation, Membership
from .models.conversations import channel_name

log = logging.getLogger(__name__)


@shared_task(acks_late=True, autoretry_for=(Exception,), retry_backoff=True, max_retries=5)
def notify_agents_of_handoff(conversation_id):
    """Email the organisation's members that a customer asked for a human."""
    conversation = Conversation.objects.select_related("bot", "organization").get(id=conversation_id)
    emails = sorted(
        {
            m.user.email
            for m in Membership.objects.select_related("user").filter(organization=conversation.organization)
            if m.user.email
        }
    )
    if not emails:
        return
    link = f"{settings.PUBLIC_URL}/inbox/{conversation.id}/"
    send_mail(
        subject=f"[{conversation.bot.name}] A customer asked for a human",
        message=f"A customer asked to talk to a person ({channel_name(conversation.channel)}, "
                f"{conversation.bot.name}).\n\nOpen the conversation: {link}\n",
        from_email=None,
        recipient_list=emails,
    )


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
    (services.purge_expired), and activity log entries past CHATNEXUS_ACTIVITY_RETENTION_DAYS
    (audit.purge_old); running twice deletes nothing more. Returns the conversations deleted."""
    from . import audit, services

    deleted = services.purge_expired()
    if deleted:
        log.info("retention: deleted %d conversations", deleted)
    events = audit.purge_old()
    if events:
        log.info("retention: deleted %d activity log entries", events)
    return deleted
