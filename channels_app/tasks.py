"""``deliver``: send a stored outbound message through its conversation's channel (queue ``default``).

Claims the message with a conditional UPDATE (pending -> sending) that must change
exactly one row, so a duplicate task sends nothing. Transient failures go back to
pending and retry with exponential backoff; permanent ones are stored on the message, and a
message that fails for good flags its conversation for the team (``flag_for_the_team``).

A claim is a lease (CHATNEXUS_DELIVERY_LEASE_S): a worker killed mid-send leaves the
message "sending", and Celery hands the task (acks_late, reject_on_worker_lost) to
another worker, which finds the claim and checks back when the lease runs out; a claim
older than the lease is taken over and the message sent. Adapters record what the
provider accepted as soon as it did (WhatsApp: each part's Twilio sid) and skip it then;
a worker killed between the provider's acceptance and that record causes one duplicate —
delivery is at least once, never a reply stuck in "sending".
"""
import logging
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from bots import events
from bots.models import Conversation, Message

from .base import DeliveryError
from .registry import adapter_for
from .whatsapp import media

log = logging.getLogger(__name__)
# tries of a send that fails transiently, 2 s ... 5 min apart: about 13 minutes in all, so a
# provider's or a backend's short outage (a deploy) is ridden out (6 tries gave up after ~1 minute)
MAX_ATTEMPTS = 10


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=MAX_ATTEMPTS)
def deliver(self, message_id):
    now = timezone.now()
    lease = timedelta(seconds=settings.CHATNEXUS_DELIVERY_LEASE_S)
    stale = Q(delivery_claimed_at__lt=now - lease) | Q(delivery_claimed_at__isnull=True)  # null: claimed before leases
    claimable = Q(delivery_status=Message.Delivery.PENDING) | (Q(delivery_status=Message.Delivery.SENDING) & stale)
    claimed = Message.objects.filter(claimable, id=message_id).update(
        delivery_status=Message.Delivery.SENDING, delivery_attempts=F("delivery_attempts") + 1, delivery_claimed_at=now
    )
    if claimed != 1:
        claim = (
            Message.objects.filter(id=message_id, delivery_status=Message.Delivery.SENDING)
            .values_list("delivery_claimed_at", flat=True)
            .first()
        )
        if claim is not None:  # being sent, or its worker died: check back when the lease ends
            wait = max((claim + lease - now).total_seconds(), 0) + 1
            raise self.retry(countdown=wait, max_retries=None)
        return  # already sent, or failed for good
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
            # the cap is delivery_attempts (rechecks of a claim are retries too, not attempts)
            raise self.retry(countdown=min(2 ** message.delivery_attempts, 300), exc=error, max_retries=None)
        log.warning("deliver: message %s failed for good: %s", message_id, error)
        if error.code != "opt-out":  # the customer wrote STOP (whatsapp/adapter.py): silence is what they asked for
            flag_for_the_team(message)
        return
    except Exception as error:  # an adapter bug: record it, do not lose the message silently
        Message.objects.filter(id=message_id).update(
            delivery_status=Message.Delivery.FAILED, delivery_error=f"internal error: {error!r}"[:2000]
        )
        flag_for_the_team(message)
        raise
    updates = {"delivery_status": Message.Delivery.SENT, "delivery_error": ""}
    if external_id:
        updates["external_id"] = external_id
    Message.objects.filter(id=message_id, delivery_status=Message.Delivery.SENDING).update(**updates)
    adapter_for(message.channel).settle(message)


def flag_for_the_team(message):
    """``message`` will never reach the customer: its conversation needs a human (the inbox's "Needs a
    human"; open pages told), as when the model cannot answer (``services.hand_off_after_failure``) —
    but without the handoff message, which the channel that just failed would not deliver either.
    An agent's reply too: agent_reply cleared the flag, and the agent has moved on while it was retried.
    Also when the channel reports the failure later (WhatsApp's status callbacks)."""
    Conversation.objects.filter(id=message.conversation_id).update(needs_human=True)
    events.push(message.conversation_id, "conversation", needs_human=True)


MEDIA_ATTEMPTS = 6  # 30 s ... 16 min apart: Twilio or the network having a bad quarter of an hour


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=MEDIA_ATTEMPTS)
def store_whatsapp_media(self, message_id):
    """Keep a WhatsApp message's media in our storage (whatsapp/media.py), queued when the
    message is stored; files already kept are skipped, so running twice is harmless. What
    Twilio does not hand over is tried again with backoff, then left to the inbox's link,
    which fetches on demand and says why it cannot."""
    message = Message.objects.filter(id=message_id).first()
    if message is None:
        return
    errors = media.store_all(message)
    # 502: Twilio or the network failed, perhaps for a while; 404/409 (an address that is not
    # this account's media, a channel without credentials) will not change by waiting
    if any(error.status == 502 for error in errors) and self.request.retries < MEDIA_ATTEMPTS:
        raise self.retry(countdown=30 * 2**self.request.retries)
    for error in errors:
        log.warning("store_whatsapp_media: message %s: %s", message_id, error.reason)


# Celery's autodiscovery imports only ``<app>.tasks``: register the email channel's IMAP tasks.
from .email import imap as _email_imap  # noqa: E402,F401
