"""Postmark's inbound JSON on the email webhook: rebuilt as MIME, then stored, threaded,
filtered and deduplicated exactly like raw mail. Payloads follow Postmark's documented
inbound webhook fields (From/FromFull, To, Subject, Date, TextBody, HtmlBody, Headers,
Attachments, MessageID, RawEmail).
"""
import base64
import json

import pytest

from bots.models import Conversation, Message

from .conftest import INBOUND_SECRET
from .mails import mail

pytestmark = pytest.mark.django_db


def payload(**changes):
    body = {
        "FromName": "Carla Ruiz",
        "MessageStream": "inbound",
        "From": "carla@example.com",
        "FromFull": {"Email": "carla@example.com", "Name": "Carla Ruiz", "MailboxHash": ""},
        "To": "help@acme-bikes.example",
        "ToFull": [{"Email": "help@acme-bikes.example", "Name": "", "MailboxHash": ""}],
        "Cc": "",
        "CcFull": [],
        "ReplyTo": "",
        "OriginalRecipient": "help@acme-bikes.example",
        "Subject": "Opening hours",
        "MessageID": "22c74902-a0c1-4511-804f-341342852c90",
        "Date": "Mon, 3 Jun 2024 10:00:00 +0000",
        "MailboxHash": "",
        "TextBody": "Hello, what are your opening hours?",
        "HtmlBody": "<p>Hello, what are your <b>opening hours</b>?</p>",
        "StrippedTextReply": "",
        "Tag": "",
        "Headers": [
            {"Name": "X-Spam-Status", "Value": "No"},
            {"Name": "Message-ID", "Value": "<pm1@example.com>"},
            {"Name": "MIME-Version", "Value": "1.0"},
        ],
        "Attachments": [],
    }
    body.update(changes)
    return body


def post(client, key, body, secret=INBOUND_SECRET):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post(f"/channels/email/{key}/inbound/", data, content_type="application/json",
                       HTTP_AUTHORIZATION="Basic " + base64.b64encode(f"inbound:{secret}".encode()).decode())


def test_it_stores_a_postmark_mail_for_the_bot_and_answers_200(email_channel, client):
    response = post(client, email_channel.key, payload())
    assert response.status_code == 200  # Postmark retries anything else
    assert response.json()["answered"] is True and response.json()["duplicate"] is False
    message = Message.objects.get()
    assert message.channel == "email" and message.bot == email_channel.bot
    assert message.text == "Hello, what are your opening hours?"  # the plain part, not the HTML
    assert message.external_id == "pm1@example.com"  # the mail's own Message-ID
    assert message.meta["from_address"] == "carla@example.com"
    assert message.reply_state == Message.ReplyState.PENDING
    assert message.conversation.subject == "Opening hours"
    assert message.conversation.contact_email == "carla@example.com"


def test_a_retried_post_is_stored_once_even_without_a_message_id_header(email_channel, client):
    body = payload(Headers=[{"Name": "X-Spam-Status", "Value": "No"}])
    first, second = post(client, email_channel.key, body), post(client, email_channel.key, body)
    assert first.status_code == second.status_code == 200
    assert second.json() == {**first.json(), "duplicate": True}
    assert Message.objects.get().external_id == "22c74902-a0c1-4511-804f-341342852c90@inbound.postmarkapp.com"


def test_html_only_mail_is_read_as_text(email_channel, client):
    post(client, email_channel.key, payload(TextBody="", HtmlBody="<div>Do you <i>rent</i> e-bikes?</div>"))
    assert Message.objects.get().text == "Do you rent e-bikes?"


@pytest.mark.parametrize(
    "header, reason",
    [("Auto-Submitted", "Auto-Submitted"), ("List-Id", "List-Id"), ("Precedence", "Precedence")],
)
def test_the_original_headers_drive_the_never_answer_rules(email_channel, client, header, reason):
    value = {"Auto-Submitted": "auto-replied", "List-Id": "<riders.lists.example.com>", "Precedence": "bulk"}[header]
    body = payload(Headers=payload()["Headers"] + [{"Name": header, "Value": value}])
    assert post(client, email_channel.key, body).json()["answered"] is False
    message = Message.objects.get()
    assert message.reply_state == Message.ReplyState.SKIPPED
    assert reason.lower() in message.meta["skip_reason"].lower()


def test_a_reply_threads_by_its_references(email_channel, client, post_mail):
    post_mail(email_channel.key, mail())  # the first mail came as raw MIME, <q1@example.com>
    reply = payload(
        Subject="Re: Opening hours",
        TextBody="And on Saturdays?\n\nOn Mon, Acme wrote:\n> We open at 9am.",
        Headers=[{"Name": "Message-ID", "Value": "<pm2@example.com>"},
                 {"Name": "In-Reply-To", "Value": "<q1@example.com>"},
                 {"Name": "References", "Value": "<q1@example.com>"}],
    )  # fmt: skip
    post(client, email_channel.key, reply)
    assert Conversation.objects.count() == 1
    assert Message.objects.get(external_id="pm2@example.com").text == "And on Saturdays?"


def test_attachments_are_kept_not_prompted(email_channel, client):
    attachments = [
        {"Name": "frame.jpg", "Content": base64.b64encode(b"\xff\xd8\xff\xe0 jpeg").decode(), "ContentType": "image/jpeg",
         "ContentLength": 9},
        {"Name": "broken.bin", "Content": "%%% not base64 %%%", "ContentType": "nonsense", "ContentLength": 3},
    ]  # fmt: skip
    post(client, email_channel.key, payload(TextBody="Is this frame cracked?", Attachments=attachments))
    message = Message.objects.get()
    assert message.text == "Is this frame cracked?"
    assert [a["filename"] for a in message.meta["attachments"]] == ["frame.jpg", "broken.bin"]
    kept = {a.filename: (a.content_type, a.file.read()) for a in message.attachments.all()}
    assert kept["frame.jpg"] == ("image/jpeg", b"\xff\xd8\xff\xe0 jpeg")
    assert set(kept) == {"frame.jpg", "broken.bin"}  # kept as it came, whatever it holds


def test_raw_email_is_used_as_it_came_when_postmark_includes_it(email_channel, client):
    raw = mail(body="Straight from the original bytes.", message_id="<raw1@example.com>").decode()
    post(client, email_channel.key, payload(RawEmail=raw, TextBody="(Postmark's parsed copy)"))
    message = Message.objects.get()
    assert message.text == "Straight from the original bytes." and message.external_id == "raw1@example.com"


@pytest.mark.parametrize(
    "changes",
    [
        {"Headers": payload()["Headers"] + [{"Name": "X-Weird", "Value": "line one\nline two"}, {"Name": 5, "Value": None}]},
        {"To": 'help@acme-bikes.example, "'},  # the stdlib's address parser raises IndexError on these
        {"Cc": '"'},
        {"ReplyTo": 'carla@example.com, "'},
        {"Headers": payload()["Headers"] + [{"Name": "Sender", "Value": 'carla@example.com, "'}]},
    ],
    ids=["newline", "to", "cc", "reply-to", "sender"],
)
def test_a_header_value_the_mail_package_refuses_is_left_out_and_the_mail_kept(email_channel, client, changes):
    response = post(client, email_channel.key, payload(**changes))
    assert response.status_code == 200 and response.json()["answered"] is True  # not a 500 Postmark retries until it gives up
    message = Message.objects.get()
    assert message.text == "Hello, what are your opening hours?"
    assert message.meta["from_address"] == "carla@example.com" and message.reply_state == Message.ReplyState.PENDING


@pytest.mark.parametrize(
    "header, stored",
    [
        ("<pm1@exämple.com>", "pm1@exämple.com"),  # UTF-8, as RFC 6532 allows
        ("=?utf-8?b?PHBtMUBleMOkbXBsZS5jb20+?=", "pm1@exämple.com"),  # the whole field one encoded word
    ],
    ids=["utf8", "encoded-field"],
)
def test_a_message_id_beyond_ascii_is_stored_and_answered(email_channel, client, header, stored):
    """The email package would not write such a Message-ID as ASCII MIME: the mail was kept as
    unparseable, never answered."""
    first = post(client, email_channel.key, payload(Headers=[{"Name": "Message-ID", "Value": header}]))
    assert first.status_code == 200 and first.json()["answered"] is True
    message = Message.objects.get()
    assert message.external_id == stored and message.meta["message_id"] == stored
    assert message.text == "Hello, what are your opening hours?" and message.reply_state == Message.ReplyState.PENDING
    assert post(client, email_channel.key, payload(Headers=[{"Name": "Message-ID", "Value": header}])).json()["duplicate"] is True


@pytest.mark.parametrize("first_id", ["<pm1@exämple.com>", "<=?utf-8?q?r=C3=A9sum=C3=A9?=@example.com>"],
                         ids=["utf8", "encoded-word-inside"])
def test_the_customers_answer_naming_such_an_id_continues_the_conversation(email_channel, client, first_id):
    """An encoded word inside an id was kept as written in Message-ID but decoded in In-Reply-To and
    References: the customer's answer to their own mail began a second conversation."""
    post(client, email_channel.key, payload(Headers=[{"Name": "Message-ID", "Value": first_id}]))
    answer = payload(Subject="Re: Opening hours", TextBody="And on Saturdays?",
                     Headers=[{"Name": "Message-ID", "Value": "<pm2@example.com>"},
                              {"Name": "In-Reply-To", "Value": first_id}, {"Name": "References", "Value": first_id}])
    assert post(client, email_channel.key, answer).json()["answered"] is True
    assert Conversation.objects.count() == 1
    assert Message.objects.get(external_id="pm2@example.com").conversation.external_id == first_id.strip("<>")


@pytest.mark.parametrize("subject", ["Opening\u2028hours", "Opening\x0bhours", "Opening\nhours"], ids=["u2028", "vt", "lf"])
def test_a_subject_with_a_line_break_in_it_is_kept_on_one_line(email_channel, client, subject):
    """The email package refuses a header value with a line break in it, U+2028 and a vertical tab
    included: the subject was left out."""
    assert post(client, email_channel.key, payload(Subject=subject)).json()["answered"] is True
    assert Message.objects.get().conversation.subject == "Opening hours"


@pytest.mark.parametrize(
    "body",
    ["{not json", "[1, 2]", json.dumps({"event": "delivered", "recipient": "x@example.com"}), b"\xff\xfe{}"],
    ids=["invalid", "array", "other-service", "bad-utf8"],
)
def test_json_that_is_not_postmark_is_a_400_and_stores_nothing(email_channel, client, body):
    response = post(client, email_channel.key, body)
    assert response.status_code == 400
    assert "error" in response.json()
    assert not Message.objects.exists()


def test_the_secret_and_the_size_limit_hold_for_json_too(email_channel, client, settings):
    assert post(client, email_channel.key, payload(), secret="wrong").status_code == 403
    settings.CHATNEXUS_EMAIL_MAX_BYTES = 10_000
    assert post(client, email_channel.key, payload(TextBody="x" * 30_000)).status_code == 413
    assert post(client, email_channel.key, payload(TextBody="y" * 15_000)).status_code == 413  # MIME over the limit
    assert not Message.objects.exists()


def test_a_lone_surrogate_in_the_json_is_stored_as_replacement_text(email_channel, client):
    body = json.dumps(payload(TextBody="hi \ud83d there", Subject="Hours \udc00", HtmlBody=""))
    assert "\\ud83d" in body  # as JSON escapes it: valid JSON, yet no UTF-8 can hold it
    assert post(client, email_channel.key, body).status_code == 200
    message = Message.objects.get()
    assert message.text == "hi \ufffd there" and message.conversation.subject == "Hours \ufffd"


def test_a_sender_address_beyond_ascii_is_stored_and_answered(email_channel, client):
    body = payload(From="josé@example.com", FromFull={"Email": "josé@example.com", "Name": 'Ruiz, "José"', "MailboxHash": ""})
    response = post(client, email_channel.key, body)
    assert response.status_code == 200 and response.json()["answered"] is True
    message = Message.objects.get()
    assert message.text == "Hello, what are your opening hours?"
    assert message.meta["from_address"] == "josé@example.com" and message.meta["from_name"] == 'Ruiz, "José"'


@pytest.mark.parametrize("name", ["Ruiz, José", "Schmidt, Jürgen", "Dubois, Hélène", "Smith, Zoë", 'Ruiz, "Pepe" José'])
def test_a_sender_named_last_name_comma_first_name_is_answered(email_channel, client, name):
    """An encoded name was folded again without its quotes (``From: Ruiz, =?utf-8?q?Jos=C3=A9?= <...>``):
    two addresses, the first without an @, and the mail stored as unparseable, never answered."""
    body = payload(FromFull={"Email": "carla@example.com", "Name": name, "MailboxHash": ""})
    response = post(client, email_channel.key, body)
    assert response.status_code == 200 and response.json()["answered"] is True
    message = Message.objects.get()
    assert message.reply_state == Message.ReplyState.PENDING
    assert message.meta["from_address"] == "carla@example.com" and message.meta["from_name"] == name
    assert message.conversation.contact_email == "carla@example.com"


@pytest.mark.parametrize("changes", [{"Headers": 1}, {"Attachments": True}, {"Headers": "X-Spam: No"},
                                     {"Attachments": {"Name": "a.txt"}}], ids=["headers-1", "attachments-true",
                                                                               "headers-text", "attachments-object"])
def test_headers_or_attachments_that_are_not_lists_are_ignored_and_the_mail_kept(email_channel, client, changes):
    response = post(client, email_channel.key, payload(**changes))
    assert response.status_code == 200
    assert Message.objects.get().text == "Hello, what are your opening hours?"
