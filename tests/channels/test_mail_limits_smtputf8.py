""""Send a test email" to an address whose local part is beyond ASCII (RFC 6531: josé@example.com):
sent as the bot's replies to such a customer are (adapter.send_threaded), in UTF-8 where the
channel's SMTP server offers SMTPUTF8 (aiosmtpd on loopback, with and without it), and refused in
words where it does not. Django wrote the address as an encoded word
(``RCPT TO:<=?utf-8?q?jos=C3=A9?=@example.com>``): a mailbox of no one, the test "sent" all the same."""
import pytest
from django.core.exceptions import ValidationError

from channels_app.email import check

from .conftest import BOT_ADDRESS
from .test_email_check import check as page_check
from .test_email_delivery import use_server
from .test_email_idn import rcpt_smtp  # noqa: F401 - fixture

pytestmark = pytest.mark.django_db


def test_a_test_email_to_an_address_beyond_ascii_goes_in_utf8_or_is_refused_in_words(
        client, alice, email_channel, rcpt_smtp):
    """Through the Channels page's button, as an admin sends it."""
    use_server(email_channel, rcpt_smtp)
    where = f"{rcpt_smtp.host}:{rcpt_smtp.port}"
    client.force_login(alice)
    [(ok, sentence)] = page_check(client, email_channel.bot, "josé@example.com")[0]
    if not rcpt_smtp.smtputf8:
        assert (ok, sentence) == (False, "SMTP: not sent to josé@example.com: the mail server does not accept "
                                         f"international addresses (SMTPUTF8) ({where}), so the bot's replies cannot "
                                         "reach such an address either.")
        assert rcpt_smtp.messages == [] and rcpt_smtp.rcpt_commands == []
        return
    assert (ok, sentence) == (True, f"SMTP: sent a test email from {BOT_ADDRESS} to josé@example.com through {where}.")
    [sent] = rcpt_smtp.messages
    assert rcpt_smtp.rcpt_commands == ["TO:<josé@example.com>"] and sent["smtputf8"] is True
    assert sent["message"]["To"] == "josé@example.com"
    assert sent["message"]["Subject"] == f"Test email from {email_channel.bot.name} (ChatNexus)"


def test_an_address_beyond_ascii_is_one_a_test_email_may_go_to():
    """The Channels page checks the typed address with ``validate_recipient``: Django's own
    validator refuses every local part beyond ASCII."""
    check.validate_recipient("josé@example.com")
    check.validate_recipient("José.Ruiz+orders@müller-shop.de")
    # a zero-width space or a right-to-left mark is no letter: refused as Django refuses any other
    for typed in ("not an address", "josé@", "jo sé@example.com", "josé@example", "jos\u200be@example.com",
                  "\u202eese@example.com"):
        with pytest.raises(ValidationError):
            check.validate_recipient(typed)
