"""Mail that reaches the bot through the list of the channel's own address (a Google Group or
collaborative inbox at the support address) is the customers' mail and is answered; any other
list, the business's own company-wide one too, and bulk mail from any list, is stored and never
answered.

The channel's address is help@acme-bikes.example (conftest.BOT_ADDRESS).
"""
import pytest

from bots.models import Message

from .mails import mail

pytestmark = pytest.mark.django_db

GROUP = "List-Unsubscribe: <mailto:googlegroups-manage+1234+unsubscribe@googlegroups.com>\r\nPrecedence: list\r\n"


@pytest.mark.parametrize(
    "list_id",
    [
        "<help.acme-bikes.example>",  # a Google Group at the channel's own address
        '"Acme help desk" <help.acme-bikes.example>',
        "<Help.Acme-Bikes.example.>",
        "<help.lists.acme-bikes.example>",  # Mailman's list help@lists.acme-bikes.example
    ],
)
def test_a_customers_mail_through_the_businesss_own_list_is_answered(email_channel, post_mail, list_id):
    """Every such mail was skipped as "mailing list mail": the bot answered none of them."""
    response = post_mail(email_channel.key, mail(extra=f"List-Id: {list_id}\r\n{GROUP}"))
    assert response.status_code == 202 and response.json()["answered"] is True
    message = Message.objects.get()
    assert message.reply_state == Message.ReplyState.PENDING and not message.meta.get("automated")


@pytest.mark.parametrize(
    "extra, reason",
    [
        (f"List-Id: <riders.lists.example.com>\r\n{GROUP}", "Precedence: list"),  # somebody else's list
        ("List-Id: <riders.lists.example.com>\r\n", "List-Id"),
        # the business's other lists: the company-wide group would get the bot's answer, all staff
        (f"List-Id: <all.acme-bikes.example>\r\n{GROUP}", "Precedence: list"),
        (f"List-Id: <orders.acme-bikes.example>\r\n{GROUP}", "Precedence: list"),
        ("List-Id: <all.lists.acme-bikes.example>\r\n", "List-Id"),
        ("List-Id: <help.all.lists.acme-bikes.example>\r\n", "List-Id"),
        ("List-Id: <help.acme-bikes.example.lists.example.com>\r\n", "List-Id"),  # our name, their domain
        ("List-Id: <helpacme-bikes.example>\r\n", "List-Id"),
        ("List-Unsubscribe: <mailto:u@acme-bikes.example>\r\n", "List-Id"),  # a newsletter names no list
        ("List-Id: <help.acme-bikes.example>\r\nPrecedence: bulk\r\n", "Precedence: bulk"),
        ("List-Id: <help.acme-bikes.example>\r\nAuto-Submitted: auto-generated\r\n", "Auto-Submitted"),
    ],
)
def test_other_lists_and_bulk_mail_are_stored_and_never_answered(email_channel, post_mail, extra, reason):
    response = post_mail(email_channel.key, mail(extra=extra))
    assert response.status_code == 202 and response.json()["answered"] is False
    message = Message.objects.get()
    assert message.reply_state == Message.ReplyState.SKIPPED
    assert reason in message.meta["skip_reason"]
