"""A WhatsApp customer who writes STOP (or another opt-out word alone) gets nothing more until they
write again: the message is stored, not answered; the re-engagement template and an agent's reply are
refused in words the agent sees, the reply's text kept; START or any later message ends the opt-out.

Everything comes in through the signed webhook; replies go out through the real ``deliver`` task
body, in this process, to the stub Twilio API."""
import secrets
from datetime import timedelta

import pytest
from django.utils import timezone

from bots import services
from bots.models import Conversation, Message
from channels_app.tasks import deliver

from .conftest import CUSTOMER, whatsapp_params
from .test_whatsapp_window import with_template

pytestmark = pytest.mark.django_db


@pytest.fixture
def write(whatsapp_channel, signed_post):
    """``write(body, sid=...)``: the customer's message through the signed webhook; returns it as stored."""
    def post(body, sid=None, sender=CUSTOMER):
        sid = sid or "SM" + secrets.token_hex(16)
        response = signed_post(f"/channels/whatsapp/{whatsapp_channel.key}/",
                               whatsapp_params(Body=body, MessageSid=sid, SmsMessageSid=sid, SmsSid=sid, From=sender))
        assert response.status_code == 200
        return Message.objects.get(external_id=sid)

    return post


def thread(client, user, conversation):
    client.force_login(user)
    return client.get(f"/inbox/{conversation.id}/").content.decode()


@pytest.mark.parametrize("body", ["STOP", "stop!", "Stop all", " STOPALL ", "Unsubscribe.", "opt-out", "QUIT",
                                  "Arrêt", "BAJA"])
def test_it_stores_an_opt_out_word_unanswered_and_says_so_in_the_inbox(write, client, alice, body):
    message = write(body)
    assert message.text == body
    assert message.reply_state == Message.ReplyState.SKIPPED and message.meta["skip_reason"] == "opt-out"
    page = thread(client, alice, message.conversation)
    assert 'id="channel-notice"' in page and "opted out of WhatsApp messages" in page
    assert "until they write again" in page


def test_a_sentence_with_an_opt_out_word_is_answered(write):
    message = write("When do you stop serving lunch?")
    assert message.reply_state == Message.ReplyState.PENDING
    assert not Message.objects.filter(meta__skip_reason="opt-out").exists()


def test_the_question_still_waiting_for_the_bot_is_left_unanswered(write):
    question = write("What are your opening hours?")
    write("STOP")
    question.refresh_from_db()
    assert question.reply_state == Message.ReplyState.SKIPPED and question.meta["skip_reason"] == "opt-out"


def test_an_agents_reply_is_refused_kept_and_explained(write, client, alice, twilio_stub):
    conversation = write("STOP").conversation
    client.force_login(alice)
    client.post(f"/inbox/{conversation.id}/reply/", {"text": "Sorry to see you go! One last offer?"})
    reply = Message.objects.get(direction="out")
    deliver(reply.id)
    reply.refresh_from_db()
    assert reply.delivery_status == Message.Delivery.FAILED and reply.delivery_attempts == 1
    assert "opted out of WhatsApp messages" in reply.delivery_error and '"STOP"' in reply.delivery_error
    assert twilio_stub.messages() == []
    page = thread(client, alice, conversation)
    assert "Sorry to see you go! One last offer?" in page and "nothing is sent to them until they write again" in page
    assert not Conversation.objects.get(id=conversation.id).needs_human  # nothing for the team to do


def test_a_bot_reply_the_opt_out_refused_does_not_flag_the_conversation(write, twilio_stub):
    """A reply that fails for good flags its conversation for the team (test_delivery_failed.py), but
    not this one: the customer asked for silence, and "Needs a human" would only nag the team."""
    question = write("What are your opening hours?")
    reply, _ = services.record_reply(question, "We open at 9am.", {})  # written just before the STOP came
    write("STOP")
    deliver(reply.id)
    reply.refresh_from_db()
    assert reply.delivery_status == Message.Delivery.FAILED and "opted out" in reply.delivery_error
    assert not Conversation.objects.get(id=question.conversation_id).needs_human
    assert twilio_stub.messages() == []


def test_the_reengagement_template_is_refused(write, client, alice, whatsapp_channel, twilio_stub):
    with_template(whatsapp_channel)
    stop = write("Stop")
    Message.objects.filter(id=stop.id).update(created=timezone.now() - timedelta(hours=30))  # the window closed since
    page = thread(client, alice, stop.conversation)
    assert "opted out" in page and "/reengage/" not in page  # no button to send it
    response = client.post(f"/channels/whatsapp/conversations/{stop.conversation.id}/reengage/", follow=True)
    assert "Not sent: the customer opted out of WhatsApp messages" in response.content.decode()
    assert not Message.objects.filter(direction="out").exists()
    assert twilio_stub.messages() == []


@pytest.mark.parametrize("again", ["START", "unstop", "Actually, one more question: do you rent e-bikes?"])
def test_writing_again_ends_the_opt_out(write, client, alice, twilio_stub, again):
    conversation = write("STOP").conversation
    message = write(again)
    assert message.reply_state == Message.ReplyState.PENDING
    assert "opted out" not in thread(client, alice, conversation)
    client.post(f"/inbox/{conversation.id}/reply/", {"text": "Welcome back!"})
    reply = Message.objects.get(direction="out")
    deliver(reply.id)
    reply.refresh_from_db()
    assert reply.delivery_status == Message.Delivery.SENT
    [sent] = twilio_stub.messages(to=CUSTOMER)
    assert sent["form"]["Body"] == "Welcome back!"


def test_a_redelivered_stop_does_not_opt_out_again(write, client, alice):
    stop = write("STOP", sid="SM" + "1" * 32)
    write("Hi again", sid="SM" + "2" * 32)
    write("STOP", sid="SM" + "1" * 32)  # Twilio retrying the first webhook
    assert Message.objects.filter(direction="in").count() == 2
    assert "opted out" not in thread(client, alice, Conversation.objects.get(id=stop.conversation_id))


def test_the_opt_out_is_the_customers_own(write, client, alice, twilio_stub):
    write("STOP")
    other = write("Hi", sender="whatsapp:+15557654321").conversation
    client.force_login(alice)
    client.post(f"/inbox/{other.id}/reply/", {"text": "Hello!"})
    reply = Message.objects.get(direction="out")
    deliver(reply.id)
    reply.refresh_from_db()
    assert reply.delivery_status == Message.Delivery.SENT


def test_giving_back_after_a_stop_does_not_answer_what_the_team_held(write, bob):
    """The team took over; the customer asked, then wrote STOP: given back, the bot writes nothing (a
    reply could only be refused). Once they write again, giving back answers as it always does."""
    conversation = write("Hi").conversation
    services.set_bot_paused(conversation, True, by=bob)
    question = write("Do you fix e-bikes?")
    write("STOP")
    services.set_bot_paused(Conversation.objects.get(id=conversation.id), False)
    question.refresh_from_db()
    assert question.reply_state == Message.ReplyState.SKIPPED
    assert not Message.objects.filter(conversation=conversation, reply_state=Message.ReplyState.PENDING).exists()

    services.set_bot_paused(Conversation.objects.get(id=conversation.id), True, by=bob)
    again = write("Sorry, wrong button. How long does a repair take?")
    assert Message.objects.get(id=again.id).reply_state == Message.ReplyState.SKIPPED  # the team has it
    services.set_bot_paused(Conversation.objects.get(id=conversation.id), False)
    assert Message.objects.get(id=again.id).reply_state == Message.ReplyState.PENDING
