"""Saved replies: an organisation's canned answers, inserted into an agent's reply in the
inbox (``{name}`` becomes the customer's name). Owners and admins keep the list."""
from django.conf import settings
from django.db import models

from .tenants import Organization


class SavedReply(models.Model):
    TITLE_TAKEN = "There is already a saved reply with this title."  # the form's and the API's words

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="saved_replies")
    title = models.CharField(max_length=80)
    text = models.TextField()
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["organization", "title"], name="one_saved_reply_per_title")]
        ordering = ["title"]

    @classmethod
    def title_taken(cls, organization, title, exclude_id=None) -> bool:
        """Does the organisation already have a saved reply with this title (any case)?"""
        return cls.objects.filter(organization=organization, title__iexact=title).exclude(id=exclude_id).exists()
