""""Check the Twilio settings" on the Channels page: the saved Account SID and Auth Token sent to
the loopback Twilio stub as Twilio's client sends them (GET the account resource), each outcome
said in words in the WhatsApp section; no message sent, a wrong setting never a 500."""
import pytest
from django.urls import reverse

from .conftest import ACCOUNT_SID, AUTH_TOKEN

pytestmark = pytest.mark.django_db


def check(client, bot):
    response = client.post(reverse("channels:check-whatsapp", args=[bot.id]))
    assert response.status_code == 302 and response["Location"].endswith("#whatsapp")
    page = client.get(response["Location"].split("#")[0])
    assert page.status_code == 200 and 'id="whatsapp-notes"' in page.content.decode()
    return page.context["notes"]["whatsapp"]


def test_twilio_accepts_the_saved_credentials(client, alice, whatsapp_channel, twilio_stub):
    twilio_stub.tokens[ACCOUNT_SID] = AUTH_TOKEN
    client.force_login(alice)
    assert check(client, whatsapp_channel.bot) == [
        [True, "Twilio accepted the Account SID and Auth Token: the account 'Acme Bikes' is active."]]
    [asked] = twilio_stub.requests
    assert asked["path"] == f"/2010-04-01/Accounts/{ACCOUNT_SID}.json" and asked["auth"] == (ACCOUNT_SID, AUTH_TOKEN)
    assert twilio_stub.messages() == []  # nothing sent


def test_a_wrong_auth_token_is_said_in_words(client, alice, whatsapp_channel, twilio_stub):
    twilio_stub.tokens[ACCOUNT_SID] = "the-real-token"
    client.force_login(alice)
    [(ok, sentence)] = check(client, whatsapp_channel.bot)
    assert not ok and sentence.startswith(f"Twilio refused the Account SID {ACCOUNT_SID} with this Auth Token (error 20003)")


def test_a_suspended_account_cannot_send(client, alice, whatsapp_channel, twilio_stub):
    twilio_stub.account_status[ACCOUNT_SID] = "suspended"
    client.force_login(alice)
    [(ok, sentence)] = check(client, whatsapp_channel.bot)
    assert not ok and "the account 'Acme Bikes' is suspended: it cannot send." in sentence


def test_twilio_out_of_reach_is_said_in_words(client, alice, whatsapp_channel, settings):
    from tests.conftest import free_port

    settings.TWILIO_API_BASE_URL = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    client.force_login(alice)
    [(ok, sentence)] = check(client, whatsapp_channel.bot)
    assert not ok and sentence.startswith("Could not reach Twilio: ")


def test_without_saved_credentials_or_settings_it_says_what_to_save(client, alice, acme_bot, whatsapp_channel, twilio_stub):
    client.force_login(alice)
    whatsapp_channel.secrets = {}
    whatsapp_channel.save()
    assert check(client, whatsapp_channel.bot) == [[False, "Twilio not tried: save the Account SID and Auth Token first."]]
    whatsapp_channel.delete()
    assert check(client, acme_bot) == [[False, "Save the WhatsApp settings first."]]
    assert twilio_stub.requests == []


def test_only_the_bots_managers_may_check_and_only_real_channels(client, alice, bob, whatsapp_channel, twilio_stub):
    url = reverse("channels:check-whatsapp", args=[whatsapp_channel.bot.id])
    client.force_login(bob)  # Acme's agent
    assert client.post(url).status_code == 404
    client.force_login(alice)
    assert client.post(f"/channels/bots/{whatsapp_channel.bot.id}/check/widget/").status_code == 404
    assert twilio_stub.requests == []
