"""Organisations (tenants), their members and invitations; users' API tokens and second factors.

Every row a customer can see belongs to exactly one organisation; views and API
querysets are scoped through ``bots.tenancy`` so another organisation's object is
a 404, never a leak.
"""
import hashlib
import secrets
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import models, transaction
from django.utils import timezone

from channels_app.crypto import EncryptedJSONField


def person_name(user) -> str:
    """How pages, mails and logs name a member: their full name, else their username."""
    return user.get_full_name() or user.get_username()


class Organization(models.Model):
    name = models.CharField(max_length=120)
    slug = models.SlugField(max_length=80, unique=True)
    created = models.DateTimeField(auto_now_add=True)
    # Conversations are deleted this many days after their last message (None: kept);
    # bots.tasks.purge_expired_conversations, daily.
    retention_days = models.PositiveIntegerField(null=True, blank=True)
    # When the team answers (bots/hours.py): {"mon": [["09:00", "12:30"], ["13:30", "18:00"]], ...}
    # in `timezone`; {}: not set. `closed_dates`: ["2026-12-25", ...], days the team does not work.
    team_hours = models.JSONField(default=dict, blank=True)
    timezone = models.CharField(max_length=64, default="UTC")
    closed_dates = models.JSONField(default=list, blank=True)

    def __str__(self):
        return self.name


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner", "Owner"  # everything, including members and billing
        ADMIN = "admin", "Admin"  # bots, channels, members (not owners)
        AGENT = "agent", "Agent"  # inbox only: read and answer conversations

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.AGENT)
    # Email this member when a conversation needs a person (a handoff; a customer writing while the
    # team has it: bots/tasks.py); each member sets it per organisation on their account page.
    notify_by_email = models.BooleanField(default=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "organization"], name="one_membership_per_org")]

    @property
    def can_manage(self):
        return self.role in (self.Role.OWNER, self.Role.ADMIN)


def _invite_token():
    return secrets.token_urlsafe(32)  # 256 random bits


def _unknown_token_digest():
    """The digest of an invitation made without `Invitation.issue` (the admin, tests): its link is
    known to nobody until it is renewed."""
    return token_digest(_invite_token())


class Invitation(models.Model):
    """An invitation to join an organisation as ``role``. Only a digest of its link's token is stored
    (as for API tokens), so a copy of the database lets no one join; the token itself is in the link
    mailed to the invitee and shown once to the manager who made or renewed it (`issue`, `renew`)."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField()
    role = models.CharField(max_length=10, choices=Membership.Role.choices, default=Membership.Role.AGENT)
    digest = models.CharField(max_length=64, unique=True, default=_unknown_token_digest)
    invited_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    accepted = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    @classmethod
    def issue(cls, **fields) -> tuple["Invitation", str]:
        """Create an invitation; return it and its link's token: the only time the token is seen."""
        token = _invite_token()
        return cls.objects.create(digest=token_digest(token), **fields), token

    @classmethod
    def of_token(cls, token: str):
        """The invitation whose link carries ``token``, as a queryset (empty for any other string)."""
        return cls.objects.filter(digest=token_digest(token))

    @property
    def expires(self):
        """When the link stops working: ``CHATNEXUS_INVITE_DAYS`` (14) days after the invitation was made."""
        return self.created + timedelta(days=settings.CHATNEXUS_INVITE_DAYS)

    @property
    def expired(self) -> bool:
        return timezone.now() >= self.expires

    def renew(self) -> str:
        """A new token, returned (the only time it is seen): the link seen so far stops working."""
        token = _invite_token()
        self.digest = token_digest(token)
        self.save(update_fields=["digest"])
        return token


def token_digest(key: str) -> str:
    """What is stored of an API or invitation token: its SHA-256 (a token is 256 random bits: no salt
    or slow hash needed)."""
    return hashlib.sha256(key.encode()).hexdigest()


class ApiToken(models.Model):
    """A user's REST API token. Only its digest is stored, so a copy of the database grants no
    API access; the token itself is shown once, when it is made (`issue`)."""

    PREFIX = "cnx_"  # recognisable in logs and by secret scanners
    SHOWN = 12  # leading characters kept to tell tokens apart ("cnx_AbCdEfGh…")

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_token")
    digest = models.CharField(max_length=64, unique=True)
    start = models.CharField(max_length=16)
    created = models.DateTimeField(auto_now_add=True)
    last_used = models.DateTimeField(null=True, blank=True)

    @classmethod
    def issue(cls, user) -> str:
        """Make `user` a new token (the old one stops working) and return it: the only time it is seen."""
        key = cls.PREFIX + secrets.token_urlsafe(32)
        with transaction.atomic():
            # the user's row locked (FOR NO KEY UPDATE: rows naming the user still go in): the form sent
            # twice at once (a double click) replaces the token one after the other, and the second
            # finds the first's token to delete instead of colliding with it (one token per user)
            get_user_model().objects.select_for_update(no_key=True).filter(pk=user.pk).first()
            cls.objects.filter(user=user).delete()
            cls.objects.create(user=user, digest=token_digest(key), start=key[:cls.SHOWN])
        return key

    def __str__(self):
        return f"{self.user} · {self.start}…"


def cascade_without_secrets(collector, field, sub_objs, using):
    """CASCADE, the rows loaded (where a deletion loads them: the admin's "are you sure?" page lists
    them) without their secret, which a deletion never needs: a second factor that no listed key
    decrypts (the key changed) still goes with its user, instead of a 500."""
    models.CASCADE(collector, field, sub_objs.defer("secrets"), using)


# the rows handed over unread (else the collector reads them, secret and all, to see if there are any)
cascade_without_secrets.lazy_sub_objs = True


class TwoFactor(models.Model):
    """A user's second sign-in factor (bots/twofactor.py): the TOTP secret, encrypted at rest,
    the last time step accepted (no code twice), and digests of unused recovery codes."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=cascade_without_secrets, related_name="two_factor")
    secrets = EncryptedJSONField(default=dict)  # {"totp": base32 secret}
    last_step = models.BigIntegerField(default=0)
    recovery_digests = models.JSONField(default=list)
    created = models.DateTimeField(auto_now_add=True)


class AuditEvent(models.Model):
    """Something a member did that changes the organisation's bots, channels, team or data
    (bots/audit.py): who, what, when — the Team page's Activity for owners and admins."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="audit_events")
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="+")
    actor_name = models.CharField(max_length=150, blank=True)  # kept when the user is deleted
    action = models.CharField(max_length=40)  # e.g. "bot.published", "channel.saved", "member.removed"
    text = models.CharField(max_length=300)  # the sentence the page shows
    created = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created", "-id"]
