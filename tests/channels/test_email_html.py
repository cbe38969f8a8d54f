"""Email replies carry an HTML part rendered from the reply's markdown, beside the plain
text; nothing in a reply becomes markup, an unsafe link or an image."""
from bots import services
from bots.models import Message
from channels_app.email.adapter import EmailAdapter
from channels_app.email.html import to_html

from .mails import mail

REPLY = ("**Yes**, we fix e-bikes & cargo bikes:\n\n- brakes\n- motors\n\n"
         "Book on [our page](https://acme-bikes.example/book) or write to [us](mailto:help@acme-bikes.example).")


def test_markdown_becomes_html():
    page = to_html(REPLY)
    assert "<strong>Yes</strong>, we fix e-bikes &amp; cargo bikes" in page
    assert "<li>brakes</li>" in page and "<li>motors</li>" in page
    assert '<a href="https://acme-bikes.example/book">our page</a>' in page
    assert '<a href="mailto:help@acme-bikes.example">us</a>' in page


def test_nothing_in_a_reply_becomes_markup_a_bad_link_or_an_image():
    page = to_html('<script>alert(1)</script> <b onclick="x()">hi</b> [click](javascript:alert(1)) '
                   "[data](data:text/html;base64,PHNjcmlwdD4=) ![pixel](https://tracker.example/p.gif)")
    assert "<script" not in page and "<b " not in page and "&lt;script&gt;" in page
    assert "javascript:" not in page and "data:text" not in page and "<img" not in page
    assert "<span>click</span>" in page and "<span>pixel</span>" in page


def test_the_reply_mail_has_both_parts(email_channel, post_mail, mailbox, alice):
    post_mail(email_channel.key, mail(message_id="<html1@example.com>"))
    inbound = Message.objects.get(external_id="html1@example.com")
    reply = services.agent_reply(inbound.conversation, alice, REPLY)
    EmailAdapter().send(reply)
    [sent] = mailbox.messages
    message = sent["message"]
    assert message.get_content_type() == "multipart/alternative"
    assert message.get_body(("plain",)).get_content().replace("\r\n", "\n").strip() == REPLY
    assert "<strong>Yes</strong>" in message.get_body(("html",)).get_content()


def test_an_html_mail_that_leaves_out_its_optional_end_of_head_keeps_its_text():
    """Everything after <head> was skipped until a </head>, which HTML5 leaves optional: no text."""
    from channels_app.email.parse import parse

    raw = (b"From: Carla Ruiz <carla@example.com>\r\nTo: help@acme-bikes.example\r\nSubject: Delivery\r\n"
           b"Message-ID: <nohead@example.com>\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
           b"<html><head><meta charset=utf-8><title>Delivery</title><style>p{color:red}</style>"
           b"<body><p>Do you deliver on Sundays?</p></body></html>\r\n")
    assert parse(raw).text == "Do you deliver on Sundays?"
