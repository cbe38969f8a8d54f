"""What a reply says about itself: ``Auto-Submitted`` only on the bot's replies, never on a person's,
and a subject that keeps the reply prefix the customer's mail client wrote, in its own language.

Replies are delivered in this process by the deliver task's code, to the loopback SMTP server.
"""
import pytest

from bots.models import Message

from .mails import mail

pytestmark = pytest.mark.django_db


def delivered(message):
    from channels_app.tasks import deliver

    deliver(message.id)
    message.refresh_from_db()
    assert message.delivery_status == Message.Delivery.SENT, message.delivery_error
    return message


def test_an_agents_reply_is_not_marked_automatic_the_bots_is(email_channel, post_mail, mailbox, alice, globex, globex_bot):
    """RFC 3834 headers on a person's answer had the customer's mail system (and its own
    ChatNexus bot, filters.py) file it as an automatic reply."""
    from bots import services
    from channels_app.models import ChannelConfig

    post_mail(email_channel.key, mail())
    question = Message.objects.get()
    delivered(services.record_reply(question, "We open at 9am.", {})[0])
    delivered(services.agent_reply(question.conversation, alice, "Hi Carla, a colleague here: yes, we open at 9."))
    bots, agents = (sent["message"] for sent in mailbox.messages)
    assert bots["Auto-Submitted"] == "auto-replied" and bots["X-Auto-Response-Suppress"] == "All"
    assert agents["Auto-Submitted"] is None and agents["X-Auto-Response-Suppress"] is None
    assert agents["In-Reply-To"] == "<q1@example.com>"  # still a threaded reply

    # the customer's own ChatNexus bot at carla@example.com reads the agent's mail as a person's
    carlas = ChannelConfig.objects.create(
        organization=globex, bot=globex_bot, kind="email", settings={"address": "carla@example.com"},
        secrets={"inbound_secret": "carla-secret"},
    )  # fmt: skip
    for sent, answered in ((bots, False), (agents, True)):
        response = post_mail(carlas.key, sent.as_bytes(), secret="carla-secret")
        assert response.status_code == 202 and response.json()["answered"] is answered


@pytest.mark.parametrize(
    "subject",
    [
        "RES: Pedido 4411",  # Brazilian Outlook
        "VS: Tilaus 4411",  # Finnish
        "Odp: Zamówienie 4411",  # Polish
        "Ynt: Sipariş 4411",  # Turkish
        "回复：订单 4411",  # Chinese, full-width colon
        "答复：订单 4411",
        "回覆：訂單 4411",
        "RIF: Ordine 4411",  # Italian
        "Antwort: Bestellung 4411",  # German (Lotus Notes)
        "AW: Bestellung 4411",
        "Re[2]: Order 4411",
    ],
)
def test_a_reply_keeps_the_reply_prefix_of_the_customers_language(email_channel, post_mail, mailbox, subject):
    """A reply to "RES: Pedido 4411" went out as "Re: RES: Pedido 4411", and one more "Re:" each turn."""
    from bots import services

    post_mail(email_channel.key, mail(subject=subject))
    delivered(services.record_reply(Message.objects.get(), "It ships today.", {})[0])
    [sent] = mailbox.messages
    assert sent["message"]["Subject"] == subject


@pytest.mark.parametrize("subject", ["Fwd: Order 4411", "Enc: Pedido 4411", "Resumé attached"])
def test_a_reply_to_a_forward_or_a_plain_subject_begins_with_re(email_channel, post_mail, mailbox, subject):
    from bots import services

    post_mail(email_channel.key, mail(subject=subject))
    delivered(services.record_reply(Message.objects.get(), "Thank you.", {})[0])
    [sent] = mailbox.messages
    assert sent["message"]["Subject"] == f"Re: {subject}"
