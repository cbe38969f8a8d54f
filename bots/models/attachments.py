"""Files a customer sent with a message (email attachments, WhatsApp media).

Kept in the ``attachments`` storage (settings.STORAGES; a folder under the var
directory by default, any Django storage backend otherwise), under a random name:
nothing about the customer's file name reaches a path. They are never served from a
public URL, only through the inbox's member-only view (``bots.views.inbox.attachment``).
Written only through ``bots.services``; a row's file is deleted with the row
(``bots.signals``), so deleting a conversation or an organisation deletes its files.
"""
import uuid

from django.core.files.storage import storages
from django.db import models

from .conversations import Message
from .tenants import Organization


def attachment_storage():
    return storages["attachments"]


def attachment_path(instance, filename):
    return f"{instance.organization_id}/{uuid.uuid4().hex}"


class Attachment(models.Model):
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="attachments")
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="attachments")
    index = models.PositiveSmallIntegerField()  # its position among the message's attachments
    filename = models.CharField(max_length=255, blank=True)  # as the customer named it ("" if unnamed)
    content_type = models.CharField(max_length=127)
    size = models.PositiveIntegerField()
    sha256 = models.CharField(max_length=64)
    file = models.FileField(storage=attachment_storage, upload_to=attachment_path, max_length=200)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["message", "index"], name="one_file_per_attachment_index")]
        ordering = ["message_id", "index"]

    @property
    def label(self):
        return f"{self.filename} ({self.content_type})" if self.filename else self.content_type
