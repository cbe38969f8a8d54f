"""``deliver``: send a stored outbound message through its conversation's channel (queue ``default``).

Claims the message with a conditional UPDATE (pending -> sending) that must change
exactly one row, so a duplicate task sends nothing. Transient failures go back to
pending and retry with exponential backoff; permanent ones are stored on the message.
"""
import logging

from celery import shared_task
from django.db.models import F

from bots.models import Message

from .base import DeliveryError
from .registry import adapter_for

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 6


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=MAX_ATTEMPTS)
def deliver(self, message_id):
    claimed = Message.objects.filter(id=message_id, delivery_status=Message.Delivery.PENDING).update(
        delivery_status=Message.Delivery.SENDING, delivery_attempts=F("delivery_attempts") + 1
    )
    if claimed != 1:
        return  # already sent, being sent, or failed for good
    message = Message.objects.select_related("conversation", "bot").get(id=message_id)
    try:
        external_id = adapter_for(message.channel).send(message)
    except DeliveryError as error:
        retry = error.transient and message.delivery_attempts < MAX_ATTEMPTS
        Message.objects.filter(id=message_id).update(
            delivery_status=Message.Delivery.PENDING if retry else Message.Delivery.FAILED,
            delivery_error=f"{error.code} {error}".strip(),
        )
        if retry:
            raise self.retry(countdown=min(2 ** message.delivery_attempts, 300), exc=error)
        log.warning("deliver: message %s failed for good: %s", message_id, error)
        return
    except Exception as error:  # an adapter bug: record it, do not lose the message silently
        Message.objects.filter(id=message_id).update(
            delivery_status=Message.Delivery.FAILED, delivery_error=f"internal error: {error!r}"[:2000]
        )
        raise
    updates = {"delivery_status": Message.Delivery.SENT, "delivery_error": ""}
    if external_id:
        updates["external_id"] = external_id
    Message.objects.filter(id=message_id, delivery_status=Message.Delivery.SENDING).update(**updates)


# Celery's autodiscovery imports only ``<app>.tasks``: register the email channel's IMAP tasks.
from .email import imap as _email_imap  # noqa: E402,F401
