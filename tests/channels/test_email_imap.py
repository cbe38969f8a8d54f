"""IMAP polling against a loopback IMAP4rev1 stub: new mail is stored once, read-only,
and what was fetched is remembered (by UID in the database, and by Message-ID when that is lost);
mail already in the folder when IMAP was connected is left alone."""
import pytest
from django.core.cache import cache

from bots.models import Message
from channels_app.email.imap import poll_mailbox
from tests.conftest import clear_cache

from .imap_stub import IMAPStub
from .mails import mail

pytestmark = pytest.mark.django_db


@pytest.fixture
def imap_server():
    server = IMAPStub(user="help@acme-bikes.example", password="imap-pw", uidvalidity=int.from_bytes(__import__("os").urandom(3), "big")).start()
    yield server
    server.stop()


@pytest.fixture
def imap_channel(email_channel, imap_server):
    email_channel.settings.update(
        {"imap_host": imap_server.host, "imap_port": imap_server.port, "imap_use_ssl": False, "imap_user": "help@acme-bikes.example"}
    )
    email_channel.secrets = {**email_channel.secrets, "imap_password": "imap-pw"}
    email_channel.save()
    yield email_channel
    cache.delete(f"imap-lock:{email_channel.id}")


def forget_uid(channel):
    channel.refresh_from_db()
    channel.settings.pop("imap_state", None)
    channel.save()


def test_it_stores_new_mail_from_the_mailbox(imap_channel, imap_server):
    imap_server.add(mail(message_id="<i1@example.com>", body="Do you rent bikes?"))
    imap_server.add(mail(message_id="<i2@example.com>", sender="dan@example.org", body="Any discounts?"))
    assert poll_mailbox(imap_channel.id) == 2
    stored = Message.objects.order_by("id")
    assert [m.text for m in stored] == ["Do you rent bikes?", "Any discounts?"]
    assert all(m.meta["source"] == "imap" and m.reply_state == "pending" for m in stored)
    assert any(c.startswith("EXAMINE") for c in imap_server.commands)  # read-only: flags untouched
    bodies = [c for c in imap_server.commands if c.startswith("UID FETCH") and "INTERNALDATE" not in c]
    assert bodies and all("PEEK" in c for c in bodies)  # (dates are read on a first poll: no flag changes)


def test_it_fetches_only_mail_newer_than_the_last_uid(imap_channel, imap_server):
    imap_server.add(mail(message_id="<i1@example.com>"))
    assert poll_mailbox(imap_channel.id) == 1
    imap_server.commands.clear()
    assert poll_mailbox(imap_channel.id) == 0
    assert not [c for c in imap_server.commands if c.startswith("UID FETCH")]
    imap_server.add(mail(message_id="<i3@example.com>"))
    assert poll_mailbox(imap_channel.id) == 1
    assert Message.objects.count() == 2


def test_it_stores_refetched_mail_once_when_the_uid_memory_is_lost(imap_channel, imap_server):
    imap_server.add(mail(message_id="<i1@example.com>"))
    poll_mailbox(imap_channel.id)
    forget_uid(imap_channel)
    assert poll_mailbox(imap_channel.id) == 0
    assert Message.objects.count() == 1


def test_it_applies_the_never_answer_rules_to_polled_mail(imap_channel, imap_server):
    imap_server.add(mail(message_id="<bulk@example.com>", extra="Precedence: bulk\r\n"))
    imap_server.add(b"garbage without headers \xff")
    poll_mailbox(imap_channel.id)
    assert list(Message.objects.values_list("reply_state", flat=True)) == ["skipped", "skipped"]


def test_it_survives_wrong_credentials(imap_channel, imap_server):
    imap_channel.secrets = {**imap_channel.secrets, "imap_password": "wrong"}
    imap_channel.save()
    imap_server.add(mail())
    assert poll_mailbox(imap_channel.id) == 0
    assert not Message.objects.exists()


def test_a_message_id_longer_than_the_column_does_not_block_the_mailbox(imap_channel, imap_server):
    long_id = f"<{'x' * 300}@example.com>"
    imap_server.add(mail(message_id=long_id, body="Do you rent bikes?"))
    imap_server.add(mail(message_id="<after@example.com>", body="Any discounts?"))
    assert poll_mailbox(imap_channel.id) == 2
    assert [m.text for m in Message.objects.order_by("id")] == ["Do you rent bikes?", "Any discounts?"]
    forget_uid(imap_channel)
    assert poll_mailbox(imap_channel.id) == 0  # fetched again: stored once, by the long id's digest


def test_a_mail_with_a_message_id_beyond_ascii_is_stored_once_and_answered_in_its_thread(imap_channel, imap_server, utf8_smtp):
    from .mails import raw_fields
    from .test_email_delivery import reply_to, use_server

    use_server(imap_channel, utf8_smtp)
    imap_server.add(mail(message_id="<i1@exämple.com>", body="Do you rent bikes?"))
    assert poll_mailbox(imap_channel.id) == 1
    forget_uid(imap_channel)
    assert poll_mailbox(imap_channel.id) == 0  # fetched again: known by its id
    stored = Message.objects.get()
    assert (stored.external_id, stored.reply_state) == ("i1@exämple.com", "pending")
    reply = reply_to(stored)
    assert reply.delivery_status == Message.Delivery.SENT, reply.delivery_error
    [sent] = utf8_smtp.messages
    assert raw_fields(sent["raw"])[b"In-Reply-To"] == "<i1@exämple.com>".encode()


def test_a_mail_that_cannot_be_stored_is_kept_as_unparseable_and_the_next_one_read(
    imap_channel, imap_server, monkeypatch, tmp_path
):
    from django.core.files.storage import storages

    from .mails import MAIL_WITH_ATTACHMENT

    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setattr(storages["attachments"], "location", str(tmp_path / "a-file" / "attachments"))  # writes fail
    imap_server.add(MAIL_WITH_ATTACHMENT)
    imap_server.add(mail(message_id="<after@example.com>", body="Any discounts?"))
    assert poll_mailbox(imap_channel.id) == 2
    kept, after = Message.objects.order_by("id")
    assert kept.reply_state == "skipped" and kept.meta["unparseable"] == "could not be stored: NotADirectoryError"
    assert "Is this frame cracked?" in kept.meta["raw"]  # nothing of it lost
    assert after.text == "Any discounts?" and after.reply_state == "pending"


@pytest.mark.django_db(transaction=True)  # the reply task is queued on commit
def test_a_mail_stored_before_its_reply_task_could_be_queued_is_not_stored_again(imap_channel, imap_server, monkeypatch):
    """Redis refusing the reply task fails ingest after the mail's commit: it used to be kept again as
    unparseable, in a second conversation. The mail stays pending (the beat sweep queues its reply)."""
    import kombu.exceptions

    from inference import tasks

    def broker_down(*args, **kwargs):
        raise kombu.exceptions.OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(tasks.generate_reply, "delay", broker_down)
    imap_server.add(mail(message_id="<i1@example.com>", body="Do you rent bikes?"))
    assert poll_mailbox(imap_channel.id) == 1
    stored = Message.objects.get()
    assert (stored.external_id, stored.text, stored.reply_state) == ("i1@example.com", "Do you rent bikes?", "pending")
    assert "unparseable" not in stored.meta


def test_mail_already_in_the_folder_when_imap_was_connected_is_left_alone(client, alice, email_channel, imap_server):
    """Connecting a support mailbox must not answer its whole history; what arrives after is answered."""
    from datetime import datetime, timedelta, timezone

    from django.urls import reverse

    last_week = datetime.now(timezone.utc) - timedelta(days=7)
    imap_server.add(mail(message_id="<old1@example.com>", body="Old question"), last_week)
    imap_server.add(mail(message_id="<old2@example.com>", body="Older answered thread"), last_week)
    client.force_login(alice)
    form = {"channel": "email", "email-enabled": "on", "email-address": "help@acme-bikes.example",
            "email-imap_host": imap_server.host, "email-imap_port": imap_server.port, "email-imap_user":
            "help@acme-bikes.example", "email-imap_password": "imap-pw", "email-imap_folder": "INBOX",
            "email-max_replies_per_sender_per_day": 5}
    assert client.post(reverse("channels:bot", args=[email_channel.bot_id]), form).status_code == 302
    email_channel.refresh_from_db()
    assert email_channel.settings["imap_since"]  # connected now

    assert poll_mailbox(email_channel.id) == 0 and not Message.objects.exists()
    imap_server.add(mail(message_id="<new@example.com>", body="New question"))
    assert poll_mailbox(email_channel.id) == 1
    assert list(Message.objects.values_list("text", flat=True)) == ["New question"]
    cache.delete(f"imap-lock:{email_channel.id}")


def test_the_last_uid_is_kept_in_the_database_not_the_cache(imap_channel, imap_server):
    imap_server.add(mail(message_id="<i1@example.com>"))
    assert poll_mailbox(imap_channel.id) == 1
    clear_cache()  # the embedded default's in-memory cache is gone after every restart
    imap_server.commands.clear()
    assert poll_mailbox(imap_channel.id) == 0
    assert not [c for c in imap_server.commands if "BODY.PEEK" in c]  # nothing fetched again


def test_a_fetch_the_server_refuses_is_asked_again_not_skipped(imap_channel, imap_server):
    first = imap_server.add(mail(message_id="<i1@example.com>", body="First"))
    imap_server.add(mail(message_id="<i2@example.com>", body="Second"))
    imap_server.refuse_fetch.add(first)
    assert poll_mailbox(imap_channel.id) == 0
    assert poll_mailbox(imap_channel.id) == 2
    assert [m.text for m in Message.objects.order_by("id")] == ["First", "Second"]
