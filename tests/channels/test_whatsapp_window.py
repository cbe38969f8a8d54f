"""WhatsApp's 24-hour window in the inbox: nothing said while it is open; once closed, the
agent is told a free-text reply will not arrive and, when the channel has an approved
re-engagement template, sends it — through a real worker to the stub Twilio API, as a
ContentSid with the customer's name as {{1}} and no Body."""
import json
from datetime import timedelta

from django.utils import timezone

from bots import services
from bots.models import Conversation, Message
from channels_app.forms import WhatsAppForm
from tests.conftest import wait_for

from .conftest import ACCOUNT_SID, AUTH_TOKEN, CUSTOMER

TEMPLATE = "HX" + "ab" * 16


def customer_wrote(config, hours_ago, name="Carla"):
    received = services.receive(bot=config.bot, channel="whatsapp", thread_id=CUSTOMER, text="Hi",
                                contact={"phone": CUSTOMER[len("whatsapp:"):], "name": name},
                                external_id=f"SM{hours_ago:032d}", answer=False, skip_reason="test")
    Message.objects.filter(id=received.message.id).update(created=timezone.now() - timedelta(hours=hours_ago))
    return received.conversation


def with_template(config):
    config.settings = {**config.settings, "reengage_content_sid": TEMPLATE}
    config.save()


def test_nothing_is_said_while_the_window_is_open(client, alice, whatsapp_channel):
    conversation = customer_wrote(whatsapp_channel, hours_ago=23)
    client.force_login(alice)
    assert 'id="channel-notice"' not in client.get(f"/inbox/{conversation.id}/").content.decode()


def test_a_closed_window_without_a_template_says_what_to_set_up(client, alice, whatsapp_channel):
    conversation = customer_wrote(whatsapp_channel, hours_ago=25)
    client.force_login(alice)
    page = client.get(f"/inbox/{conversation.id}/").content.decode()
    assert 'id="channel-notice"' in page and "window closed" in page and "63016" in page
    assert "Add an approved re-engagement template" in page and "/reengage/" not in page
    response = client.post(f"/channels/whatsapp/conversations/{conversation.id}/reengage/", follow=True)
    assert "has no re-engagement template" in response.content.decode()
    assert not Message.objects.filter(direction="out").exists()


def test_an_agent_sends_the_template_through_twilio(transactional_db, client, alice, whatsapp_channel, twilio_stub,
                                                    celery_workers):
    with_template(whatsapp_channel)
    conversation = customer_wrote(whatsapp_channel, hours_ago=30)
    client.force_login(alice)
    page = client.get(f"/inbox/{conversation.id}/").content.decode()
    link = f"/channels/whatsapp/conversations/{conversation.id}/reengage/"
    assert f'action="{link}"' in page and "Send the re-engagement template" in page
    assert client.post(link).status_code == 302
    sent = wait_for(lambda: Message.objects.filter(direction="out", delivery_status="sent").first(),
                    timeout=120, what="the template to be delivered")
    [request] = twilio_stub.messages(to=CUSTOMER)
    assert request["auth"] == (ACCOUNT_SID, AUTH_TOKEN)
    assert request["form"]["ContentSid"] == TEMPLATE and "Body" not in request["form"]
    assert json.loads(request["form"]["ContentVariables"]) == {"1": "Carla"}
    assert sent.sender == "agent" and sent.external_id == request["sid"] and TEMPLATE in sent.text
    assert Conversation.objects.get(id=conversation.id).bot_paused  # an agent has it now


def test_only_whatsapp_conversations_of_the_organisation_can_be_reengaged(client, alice, charlie, whatsapp_channel,
                                                                          acme_bot):
    with_template(whatsapp_channel)
    conversation = customer_wrote(whatsapp_channel, hours_ago=30)
    widget = services.receive(bot=acme_bot, channel="widget", thread_id="v1", text="Hi", answer=False).conversation
    client.force_login(alice)
    assert client.post(f"/channels/whatsapp/conversations/{widget.id}/reengage/").status_code == 404
    client.force_login(charlie)
    assert client.post(f"/channels/whatsapp/conversations/{conversation.id}/reengage/").status_code == 404
    assert not Message.objects.filter(direction="out").exists()


def test_the_template_sid_is_checked_in_the_channel_form():
    base = {"account_sid": ACCOUNT_SID, "auth_token": "0123456789abcdef" * 2, "phone_number": "whatsapp:+14155238886"}
    assert WhatsAppForm({**base, "reengage_content_sid": TEMPLATE}).is_valid()
    form = WhatsAppForm({**base, "reengage_content_sid": "HX123"})
    assert not form.is_valid() and "HX followed by 32 hex digits" in str(form.errors)
