"""Email end to end through real Celery workers: raw-MIME webhook → stored mail →
bundled model → deliver task → a threaded reply on the loopback SMTP server (aiosmtpd);
and mail that must never be answered sends nothing."""
import pytest

from bots.models import Message
from tests.conftest import wait_for

from .mails import NEVER_ANSWER, mail


@pytest.fixture
def workers(twilio_stub, celery_workers):
    return celery_workers


def test_it_answers_a_question_in_the_same_thread(transactional_db, email_channel, post_mail, mailbox, workers):
    question = mail(
        subject="Opening hours",
        message_id="<q1@example.com>",
        extra="References: <older@example.com>\r\nIn-Reply-To: <older@example.com>\r\nReply-To: Carla <carla.ruiz@example.com>\r\n",
    )
    assert post_mail(email_channel.key, question).status_code == 202
    post_mail(email_channel.key, question)  # redelivered by the inbound service: answered once

    [sent] = wait_for(lambda: list(mailbox.messages), timeout=240, what="the reply by SMTP")
    reply = sent["message"]
    assert sent["to"] == ["carla.ruiz@example.com"]
    assert reply["To"] == "carla.ruiz@example.com"
    assert reply["From"] == "Acme Bikes Support <help@acme-bikes.example>"
    assert reply["Subject"] == "Re: Opening hours"
    assert reply["In-Reply-To"] == "<q1@example.com>"
    assert reply["References"] == "<older@example.com> <q1@example.com>"
    assert reply["Auto-Submitted"] == "auto-replied"
    assert reply["Date"].endswith("+0000")  # UTC, not "-0000" (RFC 5322: time zone unknown)
    assert reply["Message-ID"].endswith("@acme-bikes.example>")
    stored = wait_for(
        lambda: Message.objects.filter(direction="out", delivery_status=Message.Delivery.SENT).first(), timeout=30, what="SENT"
    )
    assert reply.get_content_type() == "multipart/alternative"
    assert reply.get_body(("plain",)).get_content().split() == stored.text.split()  # SMTP turns \n into \r\n
    assert "<html>" in reply.get_body(("html",)).get_content()
    assert stored.external_id == reply["Message-ID"].strip("<>")
    assert stored.conversation.external_id == "older@example.com"  # the thread's root
    assert Message.objects.filter(direction="in").count() == 1
    assert Message.objects.filter(direction="out").count() == 1


def test_it_sends_nothing_for_mail_it_must_not_answer(transactional_db, email_channel, post_mail, mailbox, workers):
    for _, raw, _ in NEVER_ANSWER:
        assert post_mail(email_channel.key, raw).status_code == 202
    # A real question last: once its answer is out, anything queued before it has been handled.
    post_mail(email_channel.key, mail(sender="dan@example.org", message_id="<sentinel@example.org>", body="Hi, are you open today?"))
    [sent] = wait_for(lambda: list(mailbox.messages), timeout=240, what="the sentinel's reply")
    assert sent["to"] == ["dan@example.org"]
    wait_for(lambda: Message.objects.filter(direction="out", delivery_status="sent").exists(), timeout=30, what="SENT")
    assert len(mailbox.messages) == 1
    skipped = Message.objects.filter(direction="in", reply_state=Message.ReplyState.SKIPPED)
    assert skipped.count() == len(NEVER_ANSWER)  # all stored, visible in the inbox
    assert Message.objects.filter(direction="out").count() == 1


def test_it_retries_when_the_smtp_server_is_unreachable(transactional_db, email_channel, post_mail, mailbox, workers):
    from bots import services

    post_mail(email_channel.key, mail(extra="Auto-Submitted: auto-generated\r\n"))  # stored, not answered by the model
    inbound = Message.objects.get()
    email_channel.settings["smtp_port"] = 1  # nothing listens: a network error, retried
    email_channel.save()
    reply, _ = services.record_reply(inbound, "Hello", {})
    wait_for(lambda: Message.objects.get(id=reply.id).delivery_attempts >= 2, timeout=30, what="a retry")
    assert Message.objects.get(id=reply.id).delivery_error.startswith("network")
