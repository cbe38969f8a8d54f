"""The organisation's activity log: one sentence per change a member makes to its bots, channels,
team or data, with who made it and when (``AuditEvent``; shown on the Team page to owners and
admins). What changed is named, never a secret's value.

    audit.record(request.organization, request.user, "channel.saved", "Saved the WhatsApp settings of Ava")

Kept for CHATNEXUS_ACTIVITY_RETENTION_DAYS (365; 0, or more days than dates go back: for good),
then dropped by the hourly retention job (``purge_old``), whatever the organisation keeps its
conversations for.
"""
import logging
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from .models import AuditEvent
from .models.tenants import person_name

log = logging.getLogger(__name__)

SHOWN = 50  # the Team page's latest


def record(organization, actor, action: str, text: str) -> AuditEvent | None:
    if organization is None:
        return None
    name = person_name(actor) if getattr(actor, "pk", None) else ""
    name = name[:AuditEvent._meta.get_field("actor_name").max_length]  # a full name may be 150 + 1 + 150 characters
    return AuditEvent.objects.create(organization=organization, actor=actor if name else None, actor_name=name,
                                     action=action, text=text[:300])


def events(organization):
    """The organisation's log, newest first."""
    return AuditEvent.objects.filter(organization=organization).order_by("-created", "-id")


def latest(organization, limit: int = SHOWN):
    return events(organization)[:limit]


def purge_old(now=None) -> int:
    """Delete the events older than CHATNEXUS_ACTIVITY_RETENTION_DAYS (none when it is 0), as the
    conversations go (services.purge_expired): organisation by organisation, in batches of their
    own transactions, one organisation's failure logged and stopping no other, an entry the
    database refuses left for the next run and holding back none after it."""
    from .services import in_batches

    days = settings.CHATNEXUS_ACTIVITY_RETENTION_DAYS
    if days <= 0:
        return 0
    try:
        cutoff = (now or timezone.now()) - timedelta(days=days)
    except OverflowError:  # before the first day a date can name (999999 days): nothing is that old
        return 0
    old = AuditEvent.objects.filter(created__lt=cutoff)
    deleted = 0
    for org_id in old.order_by("organization_id").values_list("organization_id", flat=True).distinct():
        try:
            for gone in in_batches(old.filter(organization_id=org_id), lambda batch: batch.delete()[0]):
                deleted += gone
        except Exception:  # noqa: BLE001 - logged with its traceback; the other organisations' still go
            log.exception("retention: dropping old activity of organisation %s failed", org_id)
    return deleted
