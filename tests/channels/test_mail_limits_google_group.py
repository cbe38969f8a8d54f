"""A Google Group at the channel's own address hands a customer's mail on with From rewritten to
the group's (so that DMARC passes): ``"'Carla Ruiz' via Acme Help" <help@acme-bikes.example>``,
the customer in Reply-To and X-Original-From. Such a mail was skipped as "sent from our own
address": the customer is answered now, at their own address. The bot's own mail, handed on by the
group the same way, still is never answered (the loop the own-address rule stops).

The channel's address is help@acme-bikes.example (conftest.BOT_ADDRESS); replies go to the suite's
SMTP sink (``mailbox``)."""
import pytest

from bots.models import Message

from .conftest import BOT_ADDRESS
from .mails import mail
from .test_email_delivery import reply_to

pytestmark = pytest.mark.django_db

GROUP = ("List-Id: <help.acme-bikes.example>\r\nList-Unsubscribe: <mailto:googlegroups-manage+1234+unsubscribe@"
         "googlegroups.com>\r\nPrecedence: list\r\nX-Original-Sender: carla@example.com\r\n")


def via_group(name="'Carla Ruiz' via Acme Help", original="Carla Ruiz <carla@example.com>",
              reply_to="Carla Ruiz <carla@example.com>", extra=""):
    fields = GROUP + (f"X-Original-From: {original}\r\n" if original else "") + (
        f"Reply-To: {reply_to}\r\n" if reply_to else "")
    return mail(sender=f'"{name}" <{BOT_ADDRESS}>', extra=fields + extra)


@pytest.mark.parametrize("original, reply_address, answered_at", [
    ("Carla Ruiz <carla@example.com>", "Carla Ruiz <carla@example.com>", "carla@example.com"),  # reply to the author
    ("Carla Ruiz <carla@example.com>", f"Acme Help <{BOT_ADDRESS}>", "carla@example.com"),  # reply to the group
    ("Carla Ruiz <carla@example.com>", "", "carla@example.com"),
    ("", "Carla Ruiz <carla@example.com>", "carla@example.com"),
    ("Carla Ruiz <carla@example.com>", "Orders <orders@carla-shop.example>", "orders@carla-shop.example"),
], ids=["reply-to-author", "reply-to-group", "no-reply-to", "no-x-original-from", "her-own-reply-to"])
def test_a_customers_mail_through_the_businesss_google_group_is_answered_to_the_customer(
        email_channel, post_mail, mailbox, original, reply_address, answered_at):
    response = post_mail(email_channel.key, via_group(original=original, reply_to=reply_address))
    assert response.status_code == 202 and response.json()["answered"] is True
    inbound = Message.objects.get()
    assert inbound.meta["from_address"] == "carla@example.com" and inbound.meta["from_name"] == "Carla Ruiz"
    assert inbound.conversation.contact_email == answered_at
    assert reply_to(inbound).delivery_status == Message.Delivery.SENT
    [sent] = mailbox.messages
    assert sent["to"] == [answered_at]


OUR_OWN = [  # (mail, why it is skipped)
    # the bot's own reply, handed on by the group: it names us as its author
    (via_group(name="'Acme Bikes Support' via Acme Help", original=f"Acme Bikes Support <{BOT_ADDRESS}>",
               reply_to=f"Acme Help <{BOT_ADDRESS}>"), "sent from our own address"),
    (via_group(name="'Acme Bikes Support' via Acme Help", original=f"Acme Bikes Support <{BOT_ADDRESS}>",
               reply_to="Orders <orders@acme-bikes.example>"), "sent from our own address"),
    # nobody else named: nobody to answer
    (via_group(original="", reply_to=f"Acme Help <{BOT_ADDRESS}>"), "sent from our own address"),
    (via_group(original="", reply_to=""), "sent from our own address"),
    # no " via ": our own mail, whatever it names
    (via_group(name="Acme Help"), "sent from our own address"),
    # a customer's automatic answer is still one
    (via_group(extra="Auto-Submitted: auto-replied\r\n"), "Auto-Submitted"),
]


def test_of_the_groups_mail_only_a_customers_is_answered_never_the_bots_own(email_channel, post_mail):
    for n, (raw, reason) in enumerate(OUR_OWN):
        response = post_mail(email_channel.key, raw.replace(b"<q1@example.com>", f"<own{n}@example.com>".encode()))
        assert response.status_code == 202 and response.json()["answered"] is False
        assert reason in Message.objects.get(external_id=f"own{n}@example.com").meta["skip_reason"]
    assert post_mail(email_channel.key, via_group()).json()["answered"] is True
