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


# --- a stored password goes only to the server it was typed for


def email_data(config, **changes):
    """What the email form posts back unchanged (as the page shows it), with ``changes``."""
    data = {name: value for name, value in EmailForm(config=config).initial.items() if value not in (None, False)}
    return {**data, **changes}


@pytest.fixture
def smtp_login(email_channel, settings):
    settings.CHATNEXUS_MAIL_ALLOW_PRIVATE = True  # host names saved without a lookup
    email_channel.settings.update({"smtp_user": "help", "imap_host": "imap.acme.example", "imap_user": "help"})
    email_channel.secrets = {**email_channel.secrets, "smtp_password": "real-smtp-pw", "imap_password": "real-imap-pw"}
    email_channel.save()
    return email_channel


@pytest.mark.parametrize("change", [{"smtp_host": "mail.attacker.example"}, {"smtp_port": 2525},
                                    {"smtp_user": "mallory"}, {"smtp_use_tls": True}])
def test_changing_where_the_smtp_password_goes_asks_for_it_again(smtp_login, change):
    form = EmailForm(email_data(smtp_login, **change), config=smtp_login)
    assert not form.is_valid() and list(form.errors) == ["smtp_password"]
    assert form.errors["smtp_password"][0].startswith("Type the SMTP password again: the server settings changed")

    form = EmailForm(email_data(smtp_login, **change, smtp_password="new-smtp-pw"), config=smtp_login)
    assert form.is_valid(), form.errors
    assert form.apply(smtp_login).secrets["smtp_password"] == "new-smtp-pw"
    assert smtp_login.secrets["imap_password"] == "real-imap-pw"  # IMAP's server did not change


@pytest.mark.parametrize("change", [{"imap_host": "imap.attacker.example"}, {"imap_port": 143},
                                    {"imap_user": "mallory"}, {"imap_use_ssl": False}])
def test_changing_where_the_imap_password_goes_asks_for_it_again(smtp_login, change):
    form = EmailForm(email_data(smtp_login, **change), config=smtp_login)
    assert not form.is_valid() and list(form.errors) == ["imap_password"]
    form = EmailForm(email_data(smtp_login, **change, clear_imap_password=True), config=smtp_login)
    assert form.is_valid(), form.errors
    assert form.apply(smtp_login).secrets == {"inbound_secret": smtp_login.secrets["inbound_secret"],
                                              "smtp_password": "real-smtp-pw"}


def test_the_stored_passwords_stay_while_their_servers_do(smtp_login):
    form = EmailForm(email_data(smtp_login, from_name="Acme Help", max_replies_per_sender_per_day=9), config=smtp_login)
    assert form.is_valid(), form.errors
    secrets = form.apply(smtp_login).secrets
    assert secrets["smtp_password"] == "real-smtp-pw" and secrets["imap_password"] == "real-imap-pw"
    form = EmailForm(email_data(smtp_login, imap_host=""), config=smtp_login)  # no IMAP any more: nowhere to send it
    assert form.is_valid(), form.errors
    assert "imap_password" not in form.apply(smtp_login).secrets


def test_a_form_validated_before_the_server_changed_does_not_carry_the_new_password_back(smtp_login):
    """A manager posts the page as it showed mail.acme (its check of the host slow); meanwhile the owner
    points the channel at another server and types its password. The stale form, saved onto the config
    as stored now, moves the server back: the password typed for the other server must not go along."""
    from channels_app.models import ChannelConfig

    stale = EmailForm(email_data(smtp_login), config=smtp_login)
    assert stale.is_valid(), stale.errors
    owners = ChannelConfig.objects.get(id=smtp_login.id)
    owner = EmailForm(email_data(owners, smtp_host="smtp.new.example", smtp_password="owners-new-pw"), config=owners)
    assert owner.is_valid(), owner.errors
    owner.apply(owners).save()

    current = ChannelConfig.objects.get(id=smtp_login.id)
    stale.apply(current).save()
    saved = ChannelConfig.objects.get(id=smtp_login.id)
    assert saved.settings["smtp_host"] == smtp_login.settings["smtp_host"]
    assert "smtp_password" not in saved.secrets  # typed for smtp.new.example: dropped, not sent elsewhere
    assert saved.secrets["imap_password"] == "real-imap-pw"  # IMAP's server is where it was


def test_the_channels_page_keeps_the_smtp_password_from_a_new_host(client, alice, smtp_login):
    from django.urls import reverse

    from channels_app.models import ChannelConfig

    client.force_login(alice)
    data = {f"email-{name}": value for name, value in email_data(smtp_login, smtp_host="mail.attacker.example").items()}
    response = client.post(reverse("channels:bot", args=[smtp_login.bot_id]), {"channel": "email", **data})
    assert response.status_code == 400 and "Type the SMTP password again" in response.content.decode()
    config = ChannelConfig.objects.get(id=smtp_login.id)
    assert config.settings["smtp_host"] != "mail.attacker.example" and config.secrets["smtp_password"] == "real-smtp-pw"
    page = client.get(reverse("channels:bot", args=[smtp_login.bot_id])).content.decode()
    assert "Type it again when you change the SMTP host, port, user or STARTTLS" in page


@pytest.mark.parametrize("backend", ["console", "smtp"])
def test_the_email_section_says_the_smtp_host_is_optional_and_what_happens_without_one(client, alice, acme_bot,
                                                                                      settings, backend):
    from django.urls import reverse

    settings.EMAIL_BACKEND = f"django.core.mail.backends.{backend}.EmailBackend"
    client.force_login(alice)
    page = client.get(reverse("channels:bot", args=[acme_bot.id])).content.decode()
    assert "SMTP host (optional)" in page
    log_only = "Leave empty and replies are only written to this server&#x27;s log, not sent"
    platform = "Leave empty to send replies through this platform&#x27;s own mail server."
    assert (log_only in page, platform in page) == ((True, False) if backend == "console" else (False, True))
