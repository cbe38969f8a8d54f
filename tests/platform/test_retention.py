"""Erasing conversations: an owner or admin deletes one from the inbox; an owner sets a
retention period and the hourly beat job deletes what is older. Messages, customers'
files (on disk) and the bot's drafting memory go with them; nothing of another
organisation, and nothing younger, is touched."""
from datetime import timedelta
from pathlib import Path

import pytest
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


def refuse_deleting(model, *row_ids):
    """Make the database refuse to delete these rows of ``model`` (a trigger raising, as a lock
    timeout, a foreign key or a broken row would): a real failure, gone with the test's transaction."""
    from django.db import connection

    table, ids = model._meta.db_table, ", ".join(str(int(row_id)) for row_id in row_ids)
    with connection.cursor() as cursor:
        cursor.execute("CREATE OR REPLACE FUNCTION test_refuse_delete() RETURNS trigger LANGUAGE plpgsql AS "
                       "$$ BEGIN RAISE EXCEPTION 'refused: deleting row % of %', OLD.id, TG_TABLE_NAME; END $$")
        cursor.execute(f"CREATE TRIGGER test_refuse_{table} BEFORE DELETE ON {table} FOR EACH ROW "
                       f"WHEN (OLD.id IN ({ids})) EXECUTE FUNCTION test_refuse_delete()")
    return lambda: connection.cursor().execute(f"DROP TRIGGER test_refuse_{table} ON {table}")


def test_one_organisations_failing_purge_stops_no_others(acme, globex, acme_bot, globex_bot, caplog,
                                                         django_capture_on_commit_callbacks):
    """The purge was one transaction over every organisation: one that failed (or a huge backlog)
    rolled back everyone's purge. Organisations go one by one now; Acme's failure is logged, its
    rows and files stay for the next run, and Globex is purged all the same."""
    now = timezone.now()
    for organization in (acme, globex):
        organization.retention_days = 30
        organization.save()
    refused, refused_path = with_file(acme_bot, "refused")
    gone, gone_path = with_file(globex_bot, "globex-old")
    globex_preview, _ = make_conversation(globex_bot, channel="preview", thread="preview-old")
    Conversation.objects.filter(id__in=[refused.id, gone.id]).update(last_message_at=now - timedelta(days=31))
    Conversation.objects.filter(id=globex_preview.id).update(last_message_at=now - timedelta(days=2))
    assert acme.id < globex.id  # the failing organisation goes first
    refused_message = Message.objects.get(conversation=refused)
    allow = refuse_deleting(Message, refused_message.id)  # its conversation's delete cascades to it: refused too
    with django_capture_on_commit_callbacks(execute=True):
        assert purge_expired_conversations() == 2  # no exception: the job went on
    assert not Conversation.objects.filter(id__in=[gone.id, globex_preview.id]).exists() and not gone_path.exists()
    assert Message.objects.filter(conversation=refused).exists() and refused_path.is_file()  # rolled back: file kept
    assert f"deleting message {refused_message.id} failed" in caplog.text
    assert f"deleting conversation {refused.id} failed" in caplog.text
    allow()
    with django_capture_on_commit_callbacks(execute=True):
        assert purge_expired_conversations() == 1  # the next run takes what was left
    assert not Conversation.objects.filter(id=refused.id).exists() and not refused_path.exists()


def test_a_big_backlog_goes_in_batches_each_kept_once_committed(settings, acme, acme_bot,
                                                                django_capture_on_commit_callbacks):
    """CHATNEXUS_PURGE_BATCH rows per transaction: no lock held for the whole backlog, and a failure
    in a later batch keeps what the earlier ones deleted (and their files gone)."""
    settings.CHATNEXUS_PURGE_BATCH = 2
    now = timezone.now()
    acme.retention_days = 30
    acme.save()
    expired = [with_file(acme_bot, f"old-{n}") for n in range(5)]  # batches of 2, 2 and 1
    Conversation.objects.filter(id__in=[c.id for c, _ in expired]).update(last_message_at=now - timedelta(days=31))
    going_on, _ = make_conversation(acme_bot, thread="+15550100", text="Years ago")
    for n in range(2):
        services.receive(bot=acme_bot, channel="widget", thread_id="+15550100", text=f"Long ago {n}", answer=False)
    Message.objects.filter(conversation=going_on).update(created=now - timedelta(days=60))  # three old: 2 + 1
    services.receive(bot=acme_bot, channel="widget", thread_id="+15550100", text="Me again!", answer=False)
    (last, last_path) = expired[-1]
    allow = refuse_deleting(Message, Message.objects.get(conversation=last).id)  # its batches fail
    with django_capture_on_commit_callbacks(execute=True):
        assert purge_expired_conversations() == 4
    assert set(Conversation.objects.values_list("id", flat=True)) == {last.id, going_on.id}
    assert not any(path.exists() for _, path in expired[:-1]) and last_path.is_file()
    allow()
    with django_capture_on_commit_callbacks(execute=True):
        assert purge_expired_conversations() == 1
    assert list(Conversation.objects.values_list("id", flat=True)) == [going_on.id] and not last_path.exists()
    assert list(Message.objects.values_list("text", flat=True)) == ["Me again!"]  # its old messages, batch by batch


@pytest.mark.parametrize("batch", [1, 2])
def test_the_bots_of_each_committed_batch_rebuild_their_memory_whatever_fails_later(transactional_db, settings,
                                                                                     acme, acme_bot, batch):
    """A batch's bots get their ``erasures`` moved in the batch's own transaction. It was moved once,
    after the organisation's last batch: when that failed (here the database refusing to update the
    later bot; a worker dying mid-purge is the same), the replies the earlier batches deleted stayed
    in the workers' drafting memory for good (the next run no longer sees them). Real transactions:
    each batch commits as in production."""
    from django.db import connection

    settings.CHATNEXUS_PURGE_BATCH = batch
    acme.retention_days = 30
    acme.save()
    later_bot = Bot.objects.create(organization=acme, name="Later")
    first, _ = make_conversation(acme_bot, thread="first")
    later, _ = make_conversation(later_bot, thread="later")
    Conversation.objects.update(last_message_at=timezone.now() - timedelta(days=31))
    before = {bot.id: bot.erasures for bot in Bot.objects.all()}
    table = Bot._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute("CREATE FUNCTION test_refuse_update() RETURNS trigger LANGUAGE plpgsql AS "
                       "$$ BEGIN RAISE EXCEPTION 'refused: updating bot %', OLD.id; END $$")
        cursor.execute(f"CREATE TRIGGER test_refuse_update BEFORE UPDATE ON {table} FOR EACH ROW "
                       f"WHEN (OLD.id = {int(later_bot.id)}) EXECUTE FUNCTION test_refuse_update()")
    try:
        purge_expired_conversations()  # no exception
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TRIGGER test_refuse_update ON {table}")
            cursor.execute("DROP FUNCTION test_refuse_update()")
    assert not Conversation.objects.filter(id=first.id).exists()
    assert Bot.objects.get(id=acme_bot.id).erasures > before[acme_bot.id]  # workers rebuild its memory
    # the later bot's rows stay with the bump that failed: nothing deleted without its bot's rebuild
    assert Message.objects.filter(conversation=later).exists()
    assert Bot.objects.get(id=later_bot.id).erasures == before[later_bot.id]


def test_one_organisations_failing_activity_purge_stops_no_others(settings, alice, acme, globex):
    from bots import audit
    from bots.models import AuditEvent

    settings.CHATNEXUS_ACTIVITY_RETENTION_DAYS = 365
    settings.CHATNEXUS_PURGE_BATCH = 2
    refused = audit.record(acme, alice, "bot.created", "Created the bot Refused")
    olds = [audit.record(globex, alice, "bot.created", f"Created the bot Old {n}") for n in range(3)]
    AuditEvent.objects.update(created=timezone.now() - timedelta(days=366))
    refuse_deleting(AuditEvent, refused.id)
    assert audit.purge_old() == 3  # no exception: Globex's went, batch by batch
    assert list(AuditEvent.objects.values_list("id", flat=True)) == [refused.id]
    assert not AuditEvent.objects.filter(id__in=[event.id for event in olds]).exists()


def test_an_activity_entry_the_database_refuses_holds_back_no_other(settings, alice, acme):
    from bots import audit
    from bots.models import AuditEvent

    settings.CHATNEXUS_ACTIVITY_RETENTION_DAYS = 365
    settings.CHATNEXUS_PURGE_BATCH = 2
    refused, *olds = [audit.record(acme, alice, "bot.created", f"Created the bot Old {n}") for n in range(3)]
    AuditEvent.objects.update(created=timezone.now() - timedelta(days=366))
    refuse_deleting(AuditEvent, refused.id)  # in the first batch, with the next entry
    assert audit.purge_old() == 2
    assert list(AuditEvent.objects.values_list("id", flat=True)) == [refused.id]


def test_a_folder_of_files_that_fails_stops_no_others_sweep(acme, globex):
    """Files are swept per organisation's folder: one that cannot be read (here a dangling link
    named as a file) is logged, and the other organisations' orphaned files still go."""
    import os

    from bots.models.attachments import attachment_storage

    storage = attachment_storage()
    orphan = storage.save(f"{globex.id}/{'a' * 32}", ContentFile(b"left by a rolled-back transaction"))
    broken = Path(storage.location) / str(acme.id) / ("b" * 32)
    broken.parent.mkdir(parents=True, exist_ok=True)
    broken.symlink_to(broken.parent / "nowhere")  # its modification time cannot be read
    try:
        hours_ago = (timezone.now() - timedelta(hours=3)).timestamp()
        os.utime(storage.path(orphan), (hours_ago, hours_ago))
        purge_expired_conversations()  # no exception
        assert not storage.exists(orphan)
    finally:
        broken.unlink()


@pytest.mark.parametrize("batch", [1, 3])
def test_a_row_the_database_refuses_holds_back_no_other(settings, acme, acme_bot, caplog, batch,
                                                        django_capture_on_commit_callbacks):
    """Rows go in id order: the first batch that failed ended the organisation's purge, so one row the
    database refused (every hour again) kept every later one past its retention for good. A failing
    batch is logged and its rows tried one by one; only the refused row stays, for the next run."""
    settings.CHATNEXUS_PURGE_BATCH = batch
    acme.retention_days = 30
    acme.save()
    expired = [with_file(acme_bot, f"old-{n}") for n in range(4)]
    Conversation.objects.filter(id__in=[c.id for c, _ in expired]).update(
        last_message_at=timezone.now() - timedelta(days=31))
    refused = expired[0][0]
    refuse_deleting(Conversation, refused.id)  # the lowest id: first in every run
    with django_capture_on_commit_callbacks(execute=True):
        assert purge_expired_conversations() == 3
    assert list(Conversation.objects.values_list("id", flat=True)) == [refused.id]
    assert not any(path.exists() for _, path in expired[1:])
    assert f"deleting conversation {refused.id} failed" in caplog.text


def test_an_expired_conversations_messages_go_a_batch_per_transaction(transactional_db, settings, acme, acme_bot):
    """Expired conversations went first, each batch cascading to all their messages in one transaction
    (years of a WhatsApp number's messages at once), not CHATNEXUS_PURGE_BATCH rows. Their messages go
    first now, a batch at a time, then the emptied conversations; each batch moves its bots' ``erasures``
    as it commits (their drafting memory rebuilt). Real transactions: a trigger notes the transaction
    (txid_current) each message row was deleted in."""
    from django.db import connection

    settings.CHATNEXUS_PURGE_BATCH = 2
    acme.retention_days = 30
    acme.save()
    long, _ = make_conversation(acme_bot, thread="+15550100", text="Message 0")
    for n in range(1, 5):
        services.receive(bot=acme_bot, channel="widget", thread_id="+15550100", text=f"Message {n}", answer=False)
    short = [make_conversation(acme_bot, thread=f"short-{n}")[0] for n in range(2)]
    now = timezone.now()
    Message.objects.update(created=now - timedelta(days=40))
    Conversation.objects.update(last_message_at=now - timedelta(days=31))
    erasures = Bot.objects.get(id=acme_bot.id).erasures
    table = Message._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE test_deleted_in (txid bigint, message_id bigint)")
        cursor.execute("CREATE FUNCTION test_note_txid() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                       "INSERT INTO test_deleted_in VALUES (txid_current(), OLD.id); RETURN OLD; END $$")
        cursor.execute(f"CREATE TRIGGER test_note_txid AFTER DELETE ON {table} FOR EACH ROW "
                       "EXECUTE FUNCTION test_note_txid()")
    try:
        assert purge_expired_conversations() == 3
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM test_deleted_in GROUP BY txid ORDER BY 1")
            per_transaction = [n for (n,) in cursor.fetchall()]
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TRIGGER test_note_txid ON {table}")
            cursor.execute("DROP FUNCTION test_note_txid()")
            cursor.execute("DROP TABLE test_deleted_in")
    assert per_transaction == [1, 2, 2, 2]  # 7 messages, at most 2 per transaction
    assert not Conversation.objects.filter(id__in=[long.id, *(c.id for c in short)]).exists()
    assert Bot.objects.get(id=acme_bot.id).erasures == erasures + 4 + 2  # 4 batches of messages, 2 of conversations
