"""Erasing conversations: an owner or admin deletes one from the inbox; an owner sets a
retention period and the hourly beat job deletes what is older. Messages, customers'
files (on disk) and the bot's drafting memory go with them; nothing of another
organisation, and nothing younger, is touched."""
from datetime import timedelta
from pathlib import Path

from django.core.files.base import ContentFile
from django.utils import timezone

from bots import services
from bots.models import Attachment, Bot, Conversation, Message
from bots.tasks import purge_expired_conversations

from .conftest import make_conversation


def with_file(bot, thread):
    """A conversation whose message carries a customer's file; (conversation, path of the file)."""
    conversation, _ = make_conversation(bot, thread=thread, files=[("scan.pdf", "application/pdf", b"%PDF-1.4 x")])
    return conversation, Path(Attachment.objects.get(message__conversation=conversation).file.path)


def test_an_admin_deletes_a_conversation_with_its_files(client, alice, acme_bot, django_capture_on_commit_callbacks):
    conversation, path = with_file(acme_bot, "erase-me")
    kept, kept_path = with_file(acme_bot, "keep-me")
    client.force_login(alice)
    page = client.get(f"/inbox/{conversation.id}/").content.decode()
    assert f'action="/inbox/{conversation.id}/delete/"' in page and "data-confirm=" in page
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/inbox/{conversation.id}/delete/")
    assert response.status_code == 302 and response["Location"] == "/inbox/"
    assert not Conversation.objects.filter(id=conversation.id).exists()
    assert not Message.objects.filter(conversation_id=conversation.id).exists() and not path.exists()
    assert Conversation.objects.filter(id=kept.id).exists() and kept_path.is_file()
    assert Bot.objects.get(id=acme_bot.id).erasures == acme_bot.erasures + 1  # workers rebuild its memory


def test_agents_cannot_delete_and_do_not_see_the_button(client, bob, acme_bot):
    conversation, path = with_file(acme_bot, "agent-try")
    client.force_login(bob)
    assert "/delete/" not in client.get(f"/inbox/{conversation.id}/").content.decode()
    assert client.post(f"/inbox/{conversation.id}/delete/").status_code == 404
    assert Conversation.objects.filter(id=conversation.id).exists() and path.is_file()


def test_the_beat_job_deletes_only_what_is_past_its_organisations_retention(acme, globex, acme_bot, globex_bot,
                                                                            django_capture_on_commit_callbacks):
    now = timezone.now()
    acme.retention_days = 30
    acme.save()
    old, old_path = with_file(acme_bot, "old")
    recent, _ = make_conversation(acme_bot, thread="recent")
    unlimited, _ = make_conversation(globex_bot, thread="globex-old")  # Globex keeps everything
    Conversation.objects.filter(id__in=[old.id, unlimited.id]).update(last_message_at=now - timedelta(days=31))
    Conversation.objects.filter(id=recent.id).update(last_message_at=now - timedelta(days=29))
    with django_capture_on_commit_callbacks(execute=True):
        assert purge_expired_conversations() == 1
    assert set(Conversation.objects.values_list("id", flat=True)) == {recent.id, unlimited.id}
    assert not old_path.exists()
    assert purge_expired_conversations() == 0  # nothing more to do
    assert services.purge_expired(now=now + timedelta(days=2)) == 1  # the recent one expires in time


def test_only_owners_set_the_retention(client, alice, acme):
    from tests.conftest import make_member

    admin = make_member(acme, "ada", "admin")
    client.force_login(admin)
    assert client.post("/team/retention/", {"retention_days": "7"}).status_code == 404
    client.force_login(alice)
    assert 'id="retention"' in client.get("/team/").content.decode()
    client.post("/team/retention/", {"retention_days": "90"})
    acme.refresh_from_db()
    assert acme.retention_days == 90
    response = client.post("/team/retention/", {"retention_days": "0"}, follow=True)
    assert "from 1 to 3650" in response.content.decode()
    acme.refresh_from_db()
    assert acme.retention_days == 90  # unchanged
    client.post("/team/retention/", {"retention_days": ""})
    acme.refresh_from_db()
    assert acme.retention_days is None


def test_the_beat_job_drops_activity_older_than_its_retention(settings, alice, acme, globex):
    from bots import audit
    from bots.models import AuditEvent

    old = audit.record(acme, alice, "bot.created", "Created the bot Old")
    edge = audit.record(globex, alice, "bot.created", "Created the bot Edge")
    new = audit.record(acme, alice, "bot.created", "Created the bot New")
    now = timezone.now()
    AuditEvent.objects.filter(id=old.id).update(created=now - timedelta(days=366))
    AuditEvent.objects.filter(id=edge.id).update(created=now - timedelta(days=364))
    settings.CHATNEXUS_ACTIVITY_RETENTION_DAYS = 0  # kept for good
    purge_expired_conversations()
    assert AuditEvent.objects.count() == 3
    settings.CHATNEXUS_ACTIVITY_RETENTION_DAYS = 365
    purge_expired_conversations()
    assert set(AuditEvent.objects.values_list("id", flat=True)) == {edge.id, new.id}
    purge_expired_conversations()  # again: nothing more
    assert AuditEvent.objects.count() == 2


def test_the_builders_test_chats_are_deleted_a_day_after_their_last_message(db, acme_bot):
    """Every test-chat socket and reset is a conversation of its own, which nothing shows once left:
    without a retention period they piled up for good."""
    old, _ = make_conversation(acme_bot, channel="preview", thread="preview-old")
    recent, _ = make_conversation(acme_bot, channel="preview", thread="preview-recent")
    customer, _ = make_conversation(acme_bot, channel="widget", thread="visitor-old")
    Conversation.objects.filter(id__in=[old.id, customer.id]).update(last_message_at=timezone.now() - timedelta(days=2))
    assert acme_bot.organization.retention_days is None  # no retention period set
    purge_expired_conversations()
    assert set(Conversation.objects.values_list("id", flat=True)) == {recent.id, customer.id}


def test_retention_also_reaches_old_messages_of_a_conversation_still_going_on(acme, acme_bot,
                                                                            django_capture_on_commit_callbacks):
    """A WhatsApp number (a widget visitor, an API thread) is one conversation for good: a customer who
    writes every few weeks kept years of messages and files, since the conversation never went quiet."""
    now = timezone.now()
    acme.retention_days = 30
    acme.save()
    conversation, path = with_file(acme_bot, "+15550100")
    old = Message.objects.get(conversation=conversation)
    Message.objects.filter(id=old.id).update(created=now - timedelta(days=60))
    services.receive(bot=acme_bot, channel="widget", thread_id="+15550100", text="Me again!", answer=False)
    erasures = Bot.objects.get(id=acme_bot.id).erasures
    with django_capture_on_commit_callbacks(execute=True):
        assert purge_expired_conversations() == 0  # the conversation stays: it is going on
    assert list(Message.objects.filter(conversation=conversation).values_list("text", flat=True)) == ["Me again!"]
    assert not path.exists()  # its file went with the old message
    assert Bot.objects.get(id=acme_bot.id).erasures == erasures + 1  # workers rebuild its memory


def test_files_left_by_a_rolled_back_transaction_are_swept_once_surely_abandoned(acme, acme_bot):
    """A file is written while its message is stored; when that transaction rolls back (a crash, a
    refused commit) the file stays on disk with no row, where no erasure or retention reaches it."""
    import os

    from django.db import transaction

    from bots.models.attachments import attachment_storage

    storage = attachment_storage()
    before = set(_stored_files(storage))
    try:
        with transaction.atomic():
            services.receive(bot=acme_bot, channel="widget", thread_id="rolled-back", text="Here", answer=False,
                             files=[("scan.pdf", "application/pdf", b"%PDF-1.4 gone")])
            raise RuntimeError("the commit fails")
    except RuntimeError:
        pass
    [orphan] = set(_stored_files(storage)) - before
    kept, kept_path = with_file(acme_bot, "kept")
    recent, _ = with_file(acme_bot, "in-flight")  # stands for a file whose transaction has not ended yet
    Attachment.objects.filter(message__conversation=recent).delete()
    [in_flight] = set(_stored_files(storage)) - before - {orphan, str(kept_path.relative_to(storage.location))}
    hour_ago = (timezone.now() - timedelta(hours=2)).timestamp()
    for name in (orphan, str(kept_path.relative_to(storage.location))):
        os.utime(storage.path(name), (hour_ago, hour_ago))
    purge_expired_conversations()
    assert not storage.exists(orphan)
    assert kept_path.is_file() and storage.exists(in_flight)  # a row's file, and one too young to judge


def _stored_files(storage):
    folders, _ = storage.listdir("")
    return [f"{folder}/{name}" for folder in folders for name in storage.listdir(folder)[1]]


def test_the_sweep_touches_only_names_the_platform_gives_files(acme, acme_bot):
    import os

    from bots.models.attachments import attachment_storage

    storage = attachment_storage()
    others = [f"{acme.id}/notes.txt", "backups/0123456789abcdef0123456789abcdef"]  # an operator's files
    for name in others:
        storage.save(name, ContentFile(b"not ours"))
        hours_ago = (timezone.now() - timedelta(hours=3)).timestamp()
        os.utime(storage.path(name), (hours_ago, hours_ago))
    purge_expired_conversations()
    assert all(storage.exists(name) for name in others)
