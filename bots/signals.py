"""A customer's file goes with its row: deleting an attachment (a message, a conversation,
an organisation, by cascade) deletes the file from its storage once the deletion commits.
A new password revokes the user's API token. A message being stored marks its transaction
(message_ids_settled)."""
from django.conf import settings
from django.db import connection, transaction
from django.db.models.signals import post_delete, pre_save
from django.dispatch import receiver

from .models import ApiToken, Attachment, Message

MESSAGE_INSERTS = 0x63_68_61_74  # a PostgreSQL advisory lock key: transactions storing messages hold it shared


@receiver(pre_save, sender=Message)
def mark_message_insert(sender, instance, **kwargs):
    """A transaction about to store a message holds MESSAGE_INSERTS (shared) until it ends, before its
    id is drawn: see message_ids_settled. (SQLite runs one writing transaction at a time.)"""
    if instance._state.adding and connection.vendor == "postgresql" and connection.in_atomic_block:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock_shared(%s)", [MESSAGE_INSERTS])


def message_ids_settled():
    """Wait until every message whose id is drawn already has been committed (or rolled back).
    Ids are drawn at insert, not at commit: without this a reader following ids (the API's
    ``?after=``) could see id N+1 while N was still being stored, and skip N for good. Ids drawn
    from now on are higher than any now visible."""
    if connection.vendor == "postgresql":
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [MESSAGE_INSERTS])


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
