"""Email's raw-MIME inbound webhook: authentication, limits, body shapes, storing once,
unparseable mail kept, never-answer rules, threading and the daily reply cap.

These run in one transaction (no workers): they check what is stored and answered.
"""
import base64

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile

from bots.models import Conversation, Message

from .conftest import INBOUND_SECRET
from .mails import MAIL_WITH_ATTACHMENT, NEVER_ANSWER, mail

pytestmark = pytest.mark.django_db


def url(config):
    return f"/channels/email/{config.key}/inbound/"


def test_it_stores_a_raw_mime_mail_for_the_bot(email_channel, post_mail):
    response = post_mail(email_channel.key, mail())
    assert response.status_code == 202
    assert response.json()["answered"] is True
    message = Message.objects.get()
    assert message.channel == "email" and message.bot == email_channel.bot
    assert message.text == "Hello, what are your opening hours?"
    assert message.external_id == "q1@example.com"
    assert message.reply_state == Message.ReplyState.PENDING
    assert message.meta["from_address"] == "carla@example.com"
    assert message.conversation.external_id == "q1@example.com"
    assert message.conversation.subject == "Opening hours"
    assert message.conversation.contact_email == "carla@example.com"


@pytest.mark.parametrize(
    "headers",
    [
        {"HTTP_AUTHORIZATION": "Bearer " + INBOUND_SECRET},
        {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(f"inbound:{INBOUND_SECRET}".encode()).decode()},
        {"HTTP_X_CHATNEXUS_SECRET": INBOUND_SECRET},
    ],
)
def test_it_accepts_the_secret_as_header_bearer_or_basic_auth(email_channel, client, headers):
    response = client.post(url(email_channel), mail(), content_type="message/rfc822", **headers)
    assert response.status_code == 202


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"HTTP_X_CHATNEXUS_SECRET": "wrong"},
        {"HTTP_AUTHORIZATION": "Bearer wrong"},
        {"HTTP_AUTHORIZATION": "Basic !!!not-base64"},
        {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(b"\xff\xfe:x").decode()},
    ],
)
def test_it_refuses_a_missing_or_wrong_secret_and_stores_nothing(email_channel, client, headers):
    response = client.post(url(email_channel), mail(), content_type="message/rfc822", **headers)
    assert response.status_code == 403
    assert not Message.objects.exists()


def test_it_answers_404_for_an_unknown_channel(email_channel, post_mail):
    assert post_mail("no-such-key", mail()).status_code == 404


def test_it_refuses_an_oversized_mail_with_413(email_channel, post_mail, settings):
    settings.CHATNEXUS_EMAIL_MAX_BYTES = 10_000
    assert post_mail(email_channel.key, mail(body="x" * 200_000)).status_code == 413
    assert post_mail(email_channel.key, mail(body="x" * 20_000)).status_code == 413  # under the framing slack
    assert not Message.objects.exists()


def test_it_refuses_an_empty_body_with_400(email_channel, post_mail):
    assert post_mail(email_channel.key, b"").status_code == 400
    assert not Message.objects.exists()


def test_it_refuses_a_form_without_the_mail_field(email_channel, client):
    response = client.post(url(email_channel), {"subject": "hi", "text": "hello"}, HTTP_X_CHATNEXUS_SECRET=INBOUND_SECRET)
    assert response.status_code == 400


@pytest.mark.parametrize("field", ["email", "mime", "body-mime"])
def test_it_reads_the_mail_from_a_form_field(email_channel, client, field):
    response = client.post(url(email_channel), {field: mail().decode()}, HTTP_X_CHATNEXUS_SECRET=INBOUND_SECRET)
    assert response.status_code == 202
    assert Message.objects.get().external_id == "q1@example.com"


def test_it_reads_the_mail_from_an_uploaded_file(email_channel, client):
    upload = SimpleUploadedFile("message.eml", mail(), content_type="message/rfc822")
    response = client.post(url(email_channel), {"email": upload}, HTTP_X_CHATNEXUS_SECRET=INBOUND_SECRET)
    assert response.status_code == 202
    assert Message.objects.get().text == "Hello, what are your opening hours?"


def test_it_stores_a_redelivered_mail_once(email_channel, post_mail):
    first = post_mail(email_channel.key, mail()).json()
    second = post_mail(email_channel.key, mail()).json()
    assert second == {**first, "duplicate": True}
    assert Message.objects.count() == 1


def test_it_stores_a_mail_without_message_id_once_by_its_digest(email_channel, post_mail):
    raw = mail(message_id="")
    post_mail(email_channel.key, raw)
    post_mail(email_channel.key, raw)
    message = Message.objects.get()
    assert message.external_id.startswith("sha256:")


@pytest.mark.parametrize(
    "raw",
    [
        b"\x00\x01\x02 this is not mail \xff\xfe",
        b"Subject: no sender here\r\n\r\nbody",
        b"From: \r\nTo: \r\n\r\n",
        "Nothing but text, ünïcödé".encode("utf-16"),
    ],
)
def test_it_stores_broken_mime_as_unparseable_and_does_not_answer(email_channel, post_mail, raw):
    response = post_mail(email_channel.key, raw)
    assert response.status_code == 202
    message = Message.objects.get()
    assert message.reply_state == Message.ReplyState.SKIPPED
    assert message.meta["skip_reason"].startswith("unparseable")
    assert message.meta["raw_size"] == len(raw)
    assert message.meta["raw"]  # kept, not lost


def test_it_stores_invalid_utf8_mail_with_replacement_text(email_channel, post_mail):
    raw = mail(body="x").replace(b"x\r\n", b"caf\xe9 \xff\xfe ok\r\n")
    assert post_mail(email_channel.key, raw).status_code == 202
    assert Message.objects.get().text.startswith("caf")


def test_it_keeps_attachment_names_out_of_the_prompt(email_channel, post_mail):
    post_mail(email_channel.key, MAIL_WITH_ATTACHMENT)
    message = Message.objects.get()
    assert message.text == "Is this frame cracked?"
    assert message.meta["attachments"][0]["filename"] == "frame.jpg"


def test_it_prompts_with_the_new_text_and_keeps_the_full_text(email_channel, post_mail):
    body = "Can I bring it Tuesday?\r\n\r\nOn Mon, 3 Jun 2024, Acme Bikes <help@acme-bikes.example> wrote:\r\n> Your bike is ready.\r\n"
    post_mail(email_channel.key, mail(body=body))
    message = Message.objects.get()
    assert message.text == "Can I bring it Tuesday?"
    assert "Your bike is ready." in message.meta["full_text"]


@pytest.mark.parametrize("name, raw, reason", NEVER_ANSWER, ids=[case[0] for case in NEVER_ANSWER])
def test_it_stores_but_never_answers(email_channel, post_mail, name, raw, reason):
    response = post_mail(email_channel.key, raw)
    assert response.status_code == 202
    assert response.json()["answered"] is False
    message = Message.objects.get()
    assert message.reply_state == Message.ReplyState.SKIPPED
    assert reason.lower() in message.meta["skip_reason"].lower()


def test_it_answers_auto_submitted_no(email_channel, post_mail):
    post_mail(email_channel.key, mail(extra="Auto-Submitted: no\r\n"))
    assert Message.objects.get().reply_state == Message.ReplyState.PENDING


def test_it_caps_auto_replies_per_sender_per_day(email_channel, post_mail):
    email_channel.settings["max_replies_per_sender_per_day"] = 2
    email_channel.save()
    for i in range(3):
        post_mail(email_channel.key, mail(message_id=f"<cap{i}@example.com>"))
    post_mail(email_channel.key, mail(message_id="<other@example.org>", sender="dan@example.org"))
    states = list(Message.objects.order_by("id").values_list("reply_state", flat=True))
    assert states == ["pending", "pending", "skipped", "pending"]
    assert "reply limit" in Message.objects.get(external_id="cap2@example.com").meta["skip_reason"]


def test_the_cap_and_the_no_reply_rule_hold_for_the_reply_to_address(email_channel, post_mail):
    """The bot writes to Reply-To: fresh From addresses must not aim more replies at one victim."""
    email_channel.settings["max_replies_per_sender_per_day"] = 2
    email_channel.save()
    for i in range(3):
        post_mail(email_channel.key, mail(message_id=f"<rt{i}@example.com>", sender=f"r{i}@attacker.example",
                                          extra="Reply-To: victim@example.net\r\n"))
    post_mail(email_channel.key, mail(message_id="<direct@example.com>", sender="victim@example.net"))
    post_mail(email_channel.key, mail(message_id="<nr@example.com>", sender="dan@example.org",
                                      extra="Reply-To: noreply@example.org\r\n"))
    post_mail(email_channel.key, mail(message_id="<own@example.com>", sender="eve@example.org",
                                      extra="Reply-To: help@acme-bikes.example\r\n"))
    reasons = {m.external_id: (m.reply_state, m.meta.get("skip_reason", "")) for m in Message.objects.all()}
    assert [reasons[f"rt{i}@example.com"][0] for i in range(3)] == ["pending", "pending", "skipped"]
    assert "2 auto-replies to victim@example.net" in reasons["rt2@example.com"][1]
    assert reasons["direct@example.com"][0] == "skipped"  # the victim's own mail counts against the same quota
    assert reasons["nr@example.com"] == ("skipped", "no-reply sender (noreply@example.org)")
    assert reasons["own@example.com"] == ("skipped", "replies would go to our own address")


@pytest.mark.parametrize("header", ["From", "Reply-To"])
def test_the_cap_counts_the_spellings_of_a_sender_beyond_ascii_as_one(email_channel, post_mail, header):
    """A local part beyond ASCII is kept as written (``parse.mailbox``), but ``José@``, ``JOSÉ@`` and
    ``jOsé@`` share one quota: else each spelling aims a fresh one at the same person."""
    email_channel.settings["max_replies_per_sender_per_day"] = 2
    email_channel.save()
    for i, spelling in enumerate(["José", "JOSÉ", "jOsé", "josé"]):
        address = f"{spelling}@Example.com"
        sender, extra = (address, "") if header == "From" else (f"r{i}@attacker.example", f"Reply-To: {address}\r\n")
        post_mail(email_channel.key, mail(message_id=f"<js{i}@example.com>", sender=sender, extra=extra))
    post_mail(email_channel.key, mail(message_id="<other@example.com>", sender="maría@example.com"))
    messages = {m.external_id: m for m in Message.objects.all()}
    states = [messages[f"js{i}@example.com"].reply_state for i in range(4)]
    assert states == ["pending", "pending", "skipped", "skipped"]
    assert "2 auto-replies to jOsé@example.com" in messages["js2@example.com"].meta["skip_reason"]
    assert messages["js0@example.com"].meta[header.lower().replace("-", "_") + "_address"] == "José@example.com"  # kept as written
    assert messages["other@example.com"].reply_state == "pending"  # another sender has its own quota


def test_it_threads_a_reply_into_the_existing_conversation(email_channel, post_mail, mailbox):
    from bots import services
    from channels_app.tasks import deliver

    post_mail(email_channel.key, mail())
    question = Message.objects.get()
    reply, _ = services.record_reply(question, "We open at 9am.", {})
    deliver(reply.id)  # the real task body, in this process, to the loopback SMTP server
    reply.refresh_from_db()
    assert reply.delivery_status == Message.Delivery.SENT
    [sent] = mailbox.messages
    ours = sent["message"]["Message-ID"].strip("<>")
    assert reply.external_id == ours

    follow_up = mail(
        body="Great, and on Saturdays?\r\n\r\nOn Mon, Acme wrote:\r\n> We open at 9am.",
        subject="Re: Opening hours",
        message_id="<q2@example.com>",
        extra=f"In-Reply-To: <{ours}>\r\nReferences: <q1@example.com> <{ours}>\r\n",
    )
    post_mail(email_channel.key, follow_up)
    assert Conversation.objects.count() == 1
    second = Message.objects.get(external_id="q2@example.com")
    assert second.conversation == question.conversation
    assert second.text == "Great, and on Saturdays?"


def test_an_agents_reply_goes_to_the_customer_not_to_an_auto_reply_threaded_after_their_mail(
    email_channel, post_mail, mailbox, alice
):
    from bots import services
    from channels_app.tasks import deliver

    post_mail(email_channel.key, mail())
    question = Message.objects.get()
    reply, _ = services.record_reply(question, "We open at 9am.", {})
    deliver(reply.id)
    ours = mailbox.messages[0]["message"]["Message-ID"].strip("<>")
    ack = mail(sender="Helpdesk <noreply@tickets.example.com>", subject="[#42] Re: Opening hours",
               message_id="<ack@tickets.example.com>", body="We received your request.",
               extra=f"Auto-Submitted: auto-replied\r\nIn-Reply-To: <{ours}>\r\nReferences: <q1@example.com> <{ours}>\r\n")
    post_mail(email_channel.key, ack)  # the customer's helpdesk acknowledges our reply
    assert Message.objects.get(external_id="ack@tickets.example.com").conversation == question.conversation

    agent = services.agent_reply(question.conversation, alice, "Hi Carla, a colleague here: yes, we open at 9.")
    deliver(agent.id)
    sent = mailbox.messages[-1]
    assert sent["to"] == ["carla@example.com"]  # not noreply@tickets.example.com
    assert sent["message"]["In-Reply-To"] == "<q1@example.com>"


def test_the_reply_recipients_queries_compile_for_the_embedded_sqlite_database_too(email_channel):
    """The suite runs on PostgreSQL; ``scripts/run.sh`` on SQLite, which has no JSON containment
    lookup: an agent's every email reply failed there in delivery."""
    from django.db.backends.sqlite3.base import DatabaseWrapper

    from channels_app.email.adapter import _earlier_mails

    sqlite = DatabaseWrapper({**settings.DATABASES["default"], "ENGINE": "django.db.backends.sqlite3",
                              "NAME": ":memory:"}, alias="sqlite-check")
    for queryset in _earlier_mails(Message(id=10, conversation_id=1)):
        sql, params = queryset.query.get_compiler(connection=sqlite).as_sql()  # NotSupportedError for `contains`
        assert sql.startswith("SELECT") and any("from_address" in str(p) for p in params)


def test_it_threads_by_references_when_our_reply_id_is_unknown(email_channel, post_mail):
    post_mail(email_channel.key, mail())
    post_mail(email_channel.key, mail(message_id="<q3@example.com>", extra="References: <q1@example.com> <lost@elsewhere>\r\n"))
    assert Conversation.objects.count() == 1


def test_a_stranger_who_knows_a_customers_message_id_gets_a_conversation_of_their_own(email_channel, post_mail, mailbox):
    """Everyone Carla copied knows her Message-ID; the bot must not answer them from her conversation.
    A reply to our own mail (whose id only those we wrote to know) still continues it."""
    from bots import services
    from channels_app.tasks import deliver

    post_mail(email_channel.key, mail(body="My order 1234 has not arrived"))
    carlas = Conversation.objects.get()
    stranger = mail(message_id="<s1@example.org>", sender="mallory@example.org", body="What did she order?",
                    extra="In-Reply-To: <q1@example.com>\r\nReferences: <q1@example.com>\r\n")
    post_mail(email_channel.key, stranger)
    theirs = Message.objects.get(external_id="s1@example.org").conversation
    assert theirs != carlas and theirs.external_id == "s1@example.org"
    assert carlas.messages.count() == 1

    own = mail(message_id="<q2@example.com>", body="Any news?", extra="References: <q1@example.com>\r\n")
    post_mail(email_channel.key, own)  # Carla herself, referring to her own first mail
    assert Message.objects.get(external_id="q2@example.com").conversation == carlas

    reply, _ = services.record_reply(Message.objects.get(external_id="q2@example.com"), "It ships today.", {})
    deliver(reply.id)
    reply.refresh_from_db()
    colleague = mail(message_id="<c1@example.com>", sender="dan@example.com", body="Thanks, I'm her colleague",
                     extra=f"In-Reply-To: <{reply.external_id}>\r\n")
    post_mail(email_channel.key, colleague)  # answers our mail: it reached them, the thread goes on
    assert Message.objects.get(external_id="c1@example.com").conversation == carlas


@pytest.mark.parametrize("message_id", ["q1@example.com", "<q1 2024@example.com>"], ids=["no-brackets", "space"])
def test_a_message_id_without_angle_brackets_or_with_a_space_is_the_mails_id_and_threads(
    email_channel, post_mail, message_id
):
    """Without angle brackets or with a space in it, the id was not read: the mail was stored by its
    digest, and the customer's answer naming it began a second conversation."""
    post_mail(email_channel.key, mail(message_id=message_id))
    assert Message.objects.get().external_id == message_id.strip("<>")
    answer = mail(message_id="<q2@example.com>", body="And on Saturdays?",
                  extra=f"In-Reply-To: {message_id}\r\nReferences: {message_id}\r\n")
    post_mail(email_channel.key, answer)
    assert Conversation.objects.count() == 1


def test_it_does_not_thread_into_another_bots_conversation(email_channel, post_mail, globex, globex_bot):
    from channels_app.models import ChannelConfig

    other = ChannelConfig.objects.create(
        organization=globex, bot=globex_bot, kind="email", settings={"address": "hi@globex.example"},
        secrets={"inbound_secret": "globex-secret"},
    )  # fmt: skip
    post_mail(email_channel.key, mail())
    post_mail(other.key, mail(message_id="<g1@example.com>", extra="In-Reply-To: <q1@example.com>\r\n"), secret="globex-secret")
    assert Conversation.objects.filter(bot=globex_bot).get().messages.count() == 1
    assert Conversation.objects.filter(bot=email_channel.bot).get().messages.count() == 1


def test_it_stores_nul_characters_as_replacement_text(email_channel, post_mail):
    raw = mail(body="x", subject="Hi\x00there").replace(b"x\r\n", b"before\x00after\r\n")
    assert post_mail(email_channel.key, raw).status_code == 202
    message = Message.objects.get()
    assert message.text == "before\ufffdafter"


def test_a_message_id_longer_than_the_column_is_stored_once_and_threads(email_channel, post_mail):
    long_id = f"<{'x' * 300}@example.com>"
    assert post_mail(email_channel.key, mail(message_id=long_id)).status_code == 202
    assert post_mail(email_channel.key, mail(message_id=long_id)).json()["duplicate"]
    follow_up = mail(message_id="<q9@example.com>", body="And on Sundays?", extra=f"In-Reply-To: {long_id}\r\n")
    assert post_mail(email_channel.key, follow_up).status_code == 202
    conversation = Conversation.objects.get()
    assert [m.text for m in conversation.messages.order_by("id")] == ["Hello, what are your opening hours?", "And on Sundays?"]
    assert conversation.messages.first().meta["message_id"] == long_id.strip("<>")  # the whole id, for replies' threading


@pytest.mark.parametrize("header", ["From: Carla <carla\x00x@example.com>", "Reply-To: carla\x00x@example.com"])
def test_a_nul_in_the_senders_address_is_stored_as_replacement_text(email_channel, post_mail, header):
    name = header.split(":")[0]
    raw = mail(sender="Carla <carla@example.com>" if name == "Reply-To" else header.split(": ", 1)[1],
               extra=f"{header}\r\n" if name == "Reply-To" else "")
    assert post_mail(email_channel.key, raw).status_code == 202
    message = Message.objects.get()
    assert "unparseable" not in message.meta
    key = "from_address" if name == "From" else "reply_to_address"
    assert message.meta[key] == "carla\ufffdx@example.com"
    assert message.conversation.contact_email == "carla\ufffdx@example.com"


@pytest.mark.parametrize("shape", ["mime", "encoded-word", "postmark"])
def test_it_keeps_a_sender_address_beyond_ascii_as_written(email_channel, post_mail, client, shape):
    """Its local part is no longer lower-cased (``josé@`` may be nobody's mailbox: servers need not
    fold the case of UTF-8), so the reply goes to the very address; an ASCII one still is."""
    from .test_email_postmark import payload, post

    if shape == "postmark":
        post(client, email_channel.key, payload(FromFull={"Email": "José@Example.com", "Name": "José", "MailboxHash": ""}))
    else:
        sender = "José <José@Example.com>" if shape == "mime" else "=?utf-8?b?Sm9zw6k=?=@Example.com"  # as Django writes it
        post_mail(email_channel.key, mail(sender=sender))
    message = Message.objects.get()
    assert message.meta["from_address"] == "José@example.com" and message.conversation.contact_email == "José@example.com"
    assert message.reply_state == Message.ReplyState.PENDING
    post_mail(email_channel.key, mail(sender="Carla@Example.COM", message_id="<q2@example.com>"))
    assert Message.objects.get(external_id="q2@example.com").meta["from_address"] == "carla@example.com"
