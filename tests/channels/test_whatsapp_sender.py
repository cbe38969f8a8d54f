"""Replies go out from the number the customer wrote to. A Messaging Service holds several WhatsApp
numbers; a reply from another one reaches the customer from a number they never wrote to, whose
24-hour window never opened (Twilio error 63016). The reply is sent in this process by the real
``deliver`` task body to the stub Twilio API."""
import pytest

from bots import services
from bots.models import Message
from channels_app.tasks import deliver

from .conftest import BOT_NUMBER, CUSTOMER, whatsapp_params

pytestmark = pytest.mark.django_db

SECOND_NUMBER = "whatsapp:+19998887777"  # the service's other number (the channel's own is BOT_NUMBER)


def written_to(config, signed_post, number):
    params = whatsapp_params(To=number, MessagingServiceSid=config.settings["messaging_service_sid"])
    assert signed_post(f"/channels/whatsapp/{config.key}/", params).status_code == 200
    return Message.objects.get(direction=Message.Direction.INBOUND)


@pytest.mark.parametrize("number", [SECOND_NUMBER, BOT_NUMBER])
def test_the_bots_reply_comes_from_the_services_number_the_customer_wrote_to(whatsapp_channel, signed_post, twilio_stub,
                                                                            number):
    inbound = written_to(whatsapp_channel, signed_post, number)
    reply, _ = services.record_reply(inbound, "We open at nine.", {})
    deliver(reply.id)
    [request] = twilio_stub.messages(to=CUSTOMER)
    assert request["form"]["From"] == number


def test_an_agents_answer_comes_from_that_number_too(whatsapp_channel, signed_post, twilio_stub, alice):
    inbound = written_to(whatsapp_channel, signed_post, SECOND_NUMBER)
    answer = services.agent_reply(inbound.conversation, alice, "I'll check with the workshop.")
    deliver(answer.id)
    [request] = twilio_stub.messages(to=CUSTOMER)
    assert request["form"]["From"] == SECOND_NUMBER

