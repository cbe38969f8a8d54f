"""The Channels page's forms on their own: what each field takes and where a new channel's
values come from (the deployment's settings, not numbers of the form's own)."""
import pytest

from channels_app.forms import EmailForm, WhatsAppForm

from .conftest import ACCOUNT_SID

pytestmark = pytest.mark.django_db

WHATSAPP = {"account_sid": ACCOUNT_SID, "phone_number": "whatsapp:+14155238886"}


def test_a_new_email_channel_starts_with_the_deployments_daily_reply_cap(settings, email_channel):
    settings.CHATNEXUS_EMAIL_MAX_REPLIES_PER_DAY = 12
    assert EmailForm().initial["max_replies_per_sender_per_day"] == 12
    assert 'value="12"' in str(EmailForm()["max_replies_per_sender_per_day"])
    email_channel.settings["max_replies_per_sender_per_day"] = 3  # a saved channel keeps its own
    assert EmailForm(config=email_channel).initial["max_replies_per_sender_per_day"] == 3


@pytest.mark.parametrize("token", ["0123456789abcdef0123456789ABCDEF"])
def test_a_twilio_auth_token_of_32_hex_digits_is_taken(token):
    assert WhatsAppForm({**WHATSAPP, "auth_token": token}).is_valid()


@pytest.mark.parametrize("token", ["0123456789abcdef0123456789abcde’", "0123456789abcdef", "twilio-auth-token-for-tests",
                                   "0123456789abcdef0123456789abcdef0"])
def test_a_twilio_auth_token_that_is_not_32_hex_digits_is_a_form_error(token):
    form = WhatsAppForm({**WHATSAPP, "auth_token": token})
    assert not form.is_valid()
    assert form.errors["auth_token"] == ["A Twilio auth token is 32 hex digits (Twilio Console, Account Info)."]
