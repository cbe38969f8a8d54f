"""A customer's file goes with its row: deleting an attachment (a message, a conversation,
an organisation, by cascade) deletes the file from its storage once the deletion commits.
A new password revokes the user's API token. A message being stored marks its transaction
(settled_message_ids)."""
from django.conf import settings
from django.db import connection, transaction
from django.db.models.signals import post_delete, pre_save
from django.dispatch import receiver

from .models import ApiToken, Attachment, Message

# PostgreSQL advisory locks (this, organisation id): held shared by transactions storing its messages
MESSAGE_INSERTS = 0x63_68_61_74
SETTLE_TIMEOUT = "10s"  # how long a poller waits for the messages being stored


@receiver(pre_save, sender=Message)
def mark_message_insert(sender, instance, **kwargs):
    """A transaction about to store a message holds its organisation's MESSAGE_INSERTS lock (shared)
    until it ends, taken before the id is drawn: see settled_message_ids. (SQLite runs one writing
    transaction at a time: ids commit in order there.)"""
    if instance._state.adding and connection.vendor == "postgresql" and connection.in_atomic_block:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock_shared(%s, %s)", [MESSAGE_INSERTS, instance.organization_id])


def settled_message_ids(organization_id):
    """The highest message id up to which every message of the organisation is settled: committed,
    or rolled back and never to be. Ids are drawn at insert, not at commit: without this a reader
    following ids (the API's ``?after=``) could see id N+1 while N was still being stored, and skip
    N for good. Waits (SETTLE_TIMEOUT at most; then OperationalError) for the messages being stored;
    ids drawn later are higher than the mark. None where ids commit in order (SQLite)."""
    if connection.vendor != "postgresql":
        return None
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL lock_timeout = '{SETTLE_TIMEOUT}'")
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [MESSAGE_INSERTS, organization_id])
        cursor.execute(f"SELECT coalesce(max(id), 0) FROM {Message._meta.db_table}")
        return cursor.fetchone()[0]


@receiver(post_delete, sender=Attachment)
def delete_file(sender, instance, **kwargs):
    storage, name = instance.file.storage, instance.file.name
    if name:
        # robust: a file the storage fails to delete does not keep the deletion's other files
        transaction.on_commit(lambda: storage.delete(name), robust=True)


@receiver(pre_save, sender=settings.AUTH_USER_MODEL)
def revoke_api_token_on_new_password(sender, instance, **kwargs):
    """A password changed or reset (any way: the account page, a reset link, the admin,
    ``changepassword``) ends the API token too: after an account was taken over, a token the
    intruder made would otherwise keep working. ``_password`` holds the new raw password until
    saved; Django's rehashing of the same password at sign-in clears it first, so that keeps it."""
    if instance.pk is not None and getattr(instance, "_password", None) is not None:
        ApiToken.objects.filter(user_id=instance.pk).delete()
