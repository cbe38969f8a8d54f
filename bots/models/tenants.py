"""Organisations (tenants), their members and invitations.

Every row a customer can see belongs to exactly one organisation; views and API
querysets are scoped through ``bots.tenancy`` so another organisation's object is
a 404, never a leak.
"""
import secrets

from django.conf import settings
from django.db import models


class Organization(models.Model):
    name = models.CharField(max_length=120)
    slug = models.SlugField(max_length=80, unique=True)
    created = models.DateTimeField(auto_now_add=True)
    # Conversations are deleted this many days after their last message (None: kept);
    # bots.tasks.purge_expired_conversations, daily.
    retention_days = models.PositiveIntegerField(null=True, blank=True)

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
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "organization"], name="one_membership_per_org")]

    @property
    def can_manage(self):
        return self.role in (self.Role.OWNER, self.Role.ADMIN)


def _invite_token():
    return secrets.token_urlsafe(32)


class Invitation(models.Model):
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField()
    role = models.CharField(max_length=10, choices=Membership.Role.choices, default=Membership.Role.AGENT)
    token = models.CharField(max_length=64, unique=True, default=_invite_token)
    invited_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    accepted = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)
