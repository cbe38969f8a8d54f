"""The organisation's activity log: one sentence per change a member makes to its bots, channels,
team or data, with who made it and when (``AuditEvent``; shown on the Team page to owners and
admins). What changed is named, never a secret's value.

    audit.record(request.organization, request.user, "channel.saved", "Saved the WhatsApp settings of Ava")

Kept for CHATNEXUS_ACTIVITY_RETENTION_DAYS (365; 0: for good), then dropped by the hourly
retention job (``purge_old``), whatever the organisation keeps its conversations for.
"""
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from .models import AuditEvent
from .models.tenants import person_name

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
    """Delete the events older than CHATNEXUS_ACTIVITY_RETENTION_DAYS (none when it is 0)."""
    days = settings.CHATNEXUS_ACTIVITY_RETENTION_DAYS
    if days <= 0:
        return 0
    return AuditEvent.objects.filter(created__lt=(now or timezone.now()) - timedelta(days=days)).delete()[0]
