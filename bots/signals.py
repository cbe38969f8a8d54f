"""A customer's file goes with its row: deleting an attachment (a message, a conversation,
an organisation, by cascade) deletes the file from its storage once the deletion commits.
A new password revokes the user's API token."""
from django.conf import settings
from django.db import transaction
from django.db.models.signals import post_delete, pre_save
from django.dispatch import receiver

from .models import ApiToken, Attachment


@receiver(post_delete, sender=Attachment)
def delete_file(sender, instance, **kwargs):
    storage, name = instance.file.storage, instance.file.name
    if name:
        transaction.on_commit(lambda: storage.delete(name))


@receiver(pre_save, sender=settings.AUTH_USER_MODEL)
def revoke_api_token_on_new_password(sender, instance, **kwargs):
    """A password changed or reset (any way: the account page, a reset link, the admin,
    ``changepassword``) ends the API token too: after an account was taken over, a token the
    intruder made would otherwise keep working. ``_password`` holds the new raw password until
    saved; Django's rehashing of the same password at sign-in clears it first, so that keeps it."""
    if instance.pk is not None and getattr(instance, "_password", None) is not None:
        ApiToken.objects.filter(user_id=instance.pk).delete()
