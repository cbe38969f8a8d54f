"""Twilio accepts a reply but its answer comes after ``TWILIO_TIMEOUT_S`` (a read timeout): the part is
looked up in Twilio's Messages list and recorded, not sent again — the customer read it twice. One that
Twilio did not create is still sent again.

The reply is sent by the real ``deliver`` task body, in this process, to the stub Twilio API; a retry
the task asks for is run here too, as the worker would run it."""
import pytest

from bots import services
from bots.models import Message
from channels_app.base import DeliveryError
from channels_app.tasks import deliver

from .conftest import CUSTOMER, whatsapp_params

pytestmark = pytest.mark.django_db

TIMEOUT_S = 1


@pytest.fixture
def reply(whatsapp_channel, signed_post, twilio_stub, settings):
    settings.TWILIO_TIMEOUT_S = TIMEOUT_S
    assert signed_post(f"/channels/whatsapp/{whatsapp_channel.key}/", whatsapp_params()).status_code == 200
    reply, _ = services.record_reply(Message.objects.get(), "We are open Monday to Friday, 9am to 6pm.", {})
    return reply


def deliver_as_the_worker(message_id, attempts=3):
    """The deliver task, and the retries it asks for (without their wait): called directly, the task
    re-raises the transient error it would have retried."""
    for _ in range(attempts):
        try:
            deliver(message_id)
            return
        except DeliveryError as error:
            assert error.transient


def test_a_reply_twilio_accepted_but_answered_late_is_sent_once(reply, twilio_stub):
    twilio_stub.delay_next(TIMEOUT_S + 2)
    deliver_as_the_worker(reply.id)
    [request] = twilio_stub.messages(to=CUSTOMER)
    reply.refresh_from_db()
    assert reply.delivery_status == Message.Delivery.SENT and reply.delivery_attempts == 1
    assert reply.external_id == request["sid"] and reply.meta["twilio_sids"] == [request["sid"]]


def test_the_same_words_sent_before_are_not_taken_for_the_part(reply, twilio_stub, whatsapp_channel, signed_post):
    """An earlier reply with the same text (the customer asked twice) is no proof this one went out."""
    deliver_as_the_worker(reply.id)
    sid = "SM" + "c" * 32
    params = whatsapp_params(MessageSid=sid, SmsMessageSid=sid, SmsSid=sid)
    assert signed_post(f"/channels/whatsapp/{whatsapp_channel.key}/", params).status_code == 200
    again, _ = services.record_reply(Message.objects.get(external_id=sid), reply.text, {})
    twilio_stub.fail_next(500, code=20500, message="Internal Server Error")
    twilio_stub.delay_next(TIMEOUT_S + 2)  # late, and not created
    deliver_as_the_worker(again.id)
    first, failed, sent = twilio_stub.messages(to=CUSTOMER)
    again.refresh_from_db()
    assert "sid" not in failed and again.external_id == sent["sid"] != first["sid"]
    assert again.delivery_status == Message.Delivery.SENT and again.delivery_attempts == 2
