"""Email end to end through real Celery workers: raw-MIME webhook → stored mail →
bundled model → deliver task → a threaded reply on the loopback SMTP server (aiosmtpd);
and mail that must never be answered sends nothing. Then the reply's threading headers for ids
beyond ASCII or too long for a header line, delivered in this process."""
import pytest

from bots.models import Message
from tests.conftest import wait_for

from .mails import NEVER_ANSWER, mail, raw_fields


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


def test_a_postmark_mail_with_a_message_id_beyond_ascii_is_answered_in_its_thread(
    transactional_db, email_channel, client, utf8_smtp, workers
):
    """It used to be kept as unparseable (the email package would not write the id as ASCII MIME)
    and never answered."""
    from .test_email_postmark import payload, post

    use_server(email_channel, utf8_smtp)
    headers = [{"Name": "Message-ID", "Value": "<pm1@exämple.com>"}, {"Name": "References", "Value": "<older@example.com>"}]
    response = post(client, email_channel.key, payload(Headers=headers))
    assert response.status_code == 200 and response.json()["answered"] is True
    [sent] = wait_for(lambda: list(utf8_smtp.messages), timeout=240, what="the reply by SMTP")
    assert sent["to"] == ["carla@example.com"] and sent["smtputf8"] is True
    fields = raw_fields(sent["raw"])
    assert fields[b"In-Reply-To"] == "<pm1@exämple.com>".encode()  # the id's own bytes: the customer's client threads
    assert fields[b"References"] == "<older@example.com> <pm1@exämple.com>".encode()


# ---------------------------------------------------------------------------
# Threading headers, delivered in this process


def use_server(channel, server):
    channel.settings.update(smtp_host=server.host, smtp_port=server.port)
    channel.save()


def reply_to(inbound):
    """The reply to ``inbound``, delivered now by the deliver task's code."""
    from bots import services
    from channels_app.tasks import deliver

    reply, _ = services.record_reply(inbound, "We open at 9am.", {})
    deliver(reply.id)
    reply.refresh_from_db()
    return reply


def test_a_reply_names_an_id_beyond_ascii_byte_for_byte_where_the_server_offers_smtputf8(db, email_channel, post_mail, utf8_smtp):
    """Django wrote the id as one encoded word (``In-Reply-To: =?utf-8?b?PHBtMUBl...?=``), which no
    mail client matches against the id it remembers."""
    use_server(email_channel, utf8_smtp)
    post_mail(email_channel.key, mail(message_id="<pm1@exämple.com>", extra="References: <older@example.com>\r\n"))
    reply = reply_to(Message.objects.get())
    assert reply.delivery_status == Message.Delivery.SENT, reply.delivery_error
    [sent] = utf8_smtp.messages
    assert sent["smtputf8"] is True  # MAIL FROM:<...> SMTPUTF8: UTF-8 headers, as RFC 6531 has them sent
    fields = raw_fields(sent["raw"])
    assert fields[b"In-Reply-To"] == "<pm1@exämple.com>".encode()
    assert fields[b"References"] == "<older@example.com> <pm1@exämple.com>".encode()
    assert sent["message"]["Subject"] == "Re: Opening hours" and sent["message"]["Auto-Submitted"] == "auto-replied"


def test_a_reply_to_an_id_beyond_ascii_is_downgraded_where_the_server_offers_no_smtputf8(db, email_channel, post_mail, ascii_smtp):
    use_server(email_channel, ascii_smtp)
    post_mail(email_channel.key, mail(message_id="<pm1@exämple.com>", extra="References: <older@example.com>\r\n"))
    reply = reply_to(Message.objects.get())
    assert reply.delivery_status == Message.Delivery.SENT, reply.delivery_error
    [sent] = ascii_smtp.messages
    assert sent["smtputf8"] is False and sent["raw"].isascii()  # nothing a server without SMTPUTF8 may refuse
    fields = raw_fields(sent["raw"])
    assert b"In-Reply-To" not in fields  # its one id is beyond ASCII
    assert fields[b"References"] == b"<older@example.com>"  # still threads by the ids it can write
    reply_mail = sent["message"]  # RFC 6857: the fields whole, in encoded words
    assert reply_mail["Downgraded-In-Reply-To"].strip() == "<pm1@exämple.com>"
    assert reply_mail["Downgraded-References"].strip() == "<older@example.com> <pm1@exämple.com>"  # folded after the colon


def test_an_id_too_long_for_a_header_line_is_left_out_and_the_reply_sent(db, email_channel, post_mail, mailbox):
    """A header line over 998 octets is refused ("500 Line too long"): the reply failed for good."""
    long_id = "x" * 1000 + "@example.com"
    post_mail(email_channel.key, mail(message_id=f"<{long_id}>", extra="References: <older@example.com>\r\n"))
    inbound = Message.objects.get()
    assert inbound.meta["message_id"] == long_id
    reply = reply_to(inbound)
    assert reply.delivery_status == Message.Delivery.SENT, reply.delivery_error
    [sent] = mailbox.messages
    assert sent["message"]["In-Reply-To"] is None
    assert sent["message"]["References"] == "<older@example.com>"


# ---------------------------------------------------------------------------
# No SMTP server: the platform's mail backend


@pytest.mark.parametrize("backend", ["console", "smtp"])
def test_a_reply_the_platform_only_wrote_to_its_log_says_so_beside_sent(db, email_channel, post_mail, mailbox, client,
                                                                     alice, settings, backend):
    """The embedded default's console backend only prints mail in the log: the reply was "sent" in
    the inbox and the API, and nobody learnt the customer got nothing."""
    from django.urls import reverse

    from bots.models import ApiToken

    log_only = "written to the server log only: no SMTP server is set up"
    settings.EMAIL_BACKEND = f"django.core.mail.backends.{backend}.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = mailbox.host, mailbox.port
    del email_channel.settings["smtp_host"]  # "SMTP host (optional)" left empty
    email_channel.save()
    post_mail(email_channel.key, mail())
    reply = reply_to(Message.objects.get())
    assert reply.delivery_status == Message.Delivery.SENT, reply.delivery_error
    note = log_only if backend == "console" else ""
    assert reply.meta.get("delivery_note", "") == note
    assert len(mailbox.messages) == (0 if backend == "console" else 1)
    client.force_login(alice)
    page = client.get(reverse("inbox:thread", args=[reply.conversation_id])).content.decode()
    assert (f'sent</span> — <span class="delivery-note">{log_only}</span>' in page) == (backend == "console")
    polled = client.get(reverse("inbox:thread-json", args=[reply.conversation_id])).json()["messages"]
    assert polled[1]["delivery_status"] == "sent" and polled[1]["delivery_note"] == note
    client.logout()
    client.defaults["HTTP_AUTHORIZATION"] = f"Token {ApiToken.issue(alice)}"
    found = client.get("/api/messages/", {"reply_to": reply.reply_to_id}).json()["results"]
    assert [(m["delivery_status"], m["delivery_note"]) for m in found] == [("sent", note)]
