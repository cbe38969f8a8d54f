"""WhatsApp status callbacks move a reply's delivery state forward only.

The reply is sent in this process by the real ``deliver`` task body (called directly)
to the stub Twilio API; the callbacks are signed like Twilio signs them.
"""
import pytest

from bots import services
from bots.models import Message
from channels_app.tasks import deliver

from .conftest import CUSTOMER, whatsapp_params

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent_reply(whatsapp_channel, signed_post, twilio_stub):
    assert signed_post(f"/channels/whatsapp/{whatsapp_channel.key}/", whatsapp_params()).status_code == 200
    inbound = Message.objects.get()
    reply, _ = services.record_reply(inbound, "We are open Monday to Friday, 9am to 6pm.", {})
    deliver(reply.id)
    reply.refresh_from_db()
    assert reply.delivery_status == Message.Delivery.SENT
    [request] = twilio_stub.messages(to=CUSTOMER)
    assert reply.external_id == request["sid"]
    return reply


def callback(signed_post, config, reply, status, sid=None, **extra):
    params = {"MessageSid": sid or reply.external_id, "MessageStatus": status, "AccountSid": config.settings["account_sid"], **extra}
    return signed_post(f"/channels/whatsapp/{config.key}/status/?m={reply.id}", params)


def test_it_sends_the_status_callback_url_to_twilio(sent_reply, whatsapp_channel, twilio_stub):
    from django.conf import settings

    [request] = twilio_stub.messages()
    assert request["form"]["StatusCallback"] == f"{settings.PUBLIC_URL}/channels/whatsapp/{whatsapp_channel.key}/status/?m={sent_reply.id}"
    assert request["form"]["From"] == "whatsapp:+14155238886"
    assert request["auth"] == (whatsapp_channel.settings["account_sid"], "twilio-auth-token-for-tests")


def test_it_moves_delivery_state_forward_only(sent_reply, whatsapp_channel, signed_post):
    steps = [
        ("queued", Message.Delivery.SENT),
        ("delivered", Message.Delivery.DELIVERED),
        ("sent", Message.Delivery.DELIVERED),  # late callback: ignored
        ("read", Message.Delivery.READ),
        ("delivered", Message.Delivery.READ),
        ("failed", Message.Delivery.READ),
    ]
    for twilio_status, expected in steps:
        assert callback(signed_post, whatsapp_channel, sent_reply, twilio_status).status_code == 204
        sent_reply.refresh_from_db()
        assert sent_reply.delivery_status == expected, twilio_status


def test_it_stores_a_failed_status_with_its_error_code(sent_reply, whatsapp_channel, signed_post):
    response = callback(signed_post, whatsapp_channel, sent_reply, "undelivered", ErrorCode="63016")
    assert response.status_code == 204
    sent_reply.refresh_from_db()
    assert sent_reply.delivery_status == Message.Delivery.FAILED
    assert sent_reply.delivery_error.startswith("63016")
    assert "24-hour" in sent_reply.delivery_error


def test_a_late_undelivered_after_delivered_flags_nothing(
        sent_reply, whatsapp_channel, signed_post, django_capture_on_commit_callbacks):
    """The customer has the reply: a callback out of order changes neither its state nor the team's list."""
    from bots.models import Conversation

    assert callback(signed_post, whatsapp_channel, sent_reply, "delivered").status_code == 204
    assert not Conversation.objects.get(id=sent_reply.conversation_id).needs_human
    with django_capture_on_commit_callbacks(execute=True):
        assert callback(signed_post, whatsapp_channel, sent_reply, "undelivered",
                        sid=sent_reply.external_id, ErrorCode="63016").status_code == 204
    assert Conversation.objects.get(id=sent_reply.conversation_id).needs_human is False  # delivered stays


def test_a_reply_twilio_reports_undelivered_puts_the_conversation_under_needs_a_human(
        sent_reply, whatsapp_channel, signed_post, django_capture_on_commit_callbacks):
    """Accepted, then undelivered: the customer got nothing, and the team is told as when the send fails."""
    from bots.models import Conversation

    with django_capture_on_commit_callbacks(execute=True):
        assert callback(signed_post, whatsapp_channel, sent_reply, "undelivered", ErrorCode="63016").status_code == 204
    assert Conversation.objects.get(id=sent_reply.conversation_id).needs_human


def test_it_refuses_an_unsigned_status_callback(sent_reply, whatsapp_channel, signed_post):
    params = {"MessageSid": sent_reply.external_id, "MessageStatus": "read"}
    response = signed_post(f"/channels/whatsapp/{whatsapp_channel.key}/status/?m={sent_reply.id}", params, signature="bogus")
    assert response.status_code == 403
    sent_reply.refresh_from_db()
    assert sent_reply.delivery_status == Message.Delivery.SENT


@pytest.mark.parametrize(
    "query, params, status",
    [
        ("", {"MessageStatus": "read"}, 400),  # no MessageSid
        ("", {"MessageSid": "SMx", "MessageStatus": "exploded"}, 400),  # unknown status
        ("?m=abc", {"MessageSid": "SMx", "MessageStatus": "read"}, 400),  # message id not a number
        ("", {"MessageSid": "SMx", "MessageStatus": "read"}, 400),  # no message id
        ("?m=999999", {"MessageSid": "SMx", "MessageStatus": "read"}, 404),  # no such message
    ],
)
def test_it_refuses_malformed_status_callbacks(sent_reply, whatsapp_channel, signed_post, query, params, status):
    response = signed_post(f"/channels/whatsapp/{whatsapp_channel.key}/status/{query}", params)
    assert response.status_code == status


def test_it_ignores_a_sid_that_is_not_this_messages(sent_reply, whatsapp_channel, signed_post):
    assert callback(signed_post, whatsapp_channel, sent_reply, "read", sid="SM" + "f" * 32).status_code == 404
    sent_reply.refresh_from_db()
    assert sent_reply.delivery_status == Message.Delivery.SENT


def test_it_does_not_touch_another_bots_message(sent_reply, globex, globex_bot, signed_post):
    from channels_app.models import ChannelConfig

    other = ChannelConfig.objects.create(
        organization=globex, bot=globex_bot, kind="whatsapp",
        settings={"account_sid": "AC" + "9" * 32, "phone_number": "+15550000000"}, secrets={"auth_token": "twilio-auth-token-for-tests"},
    )  # fmt: skip
    assert callback(signed_post, other, sent_reply, "read").status_code == 404
    sent_reply.refresh_from_db()
    assert sent_reply.delivery_status == Message.Delivery.SENT


def split_reply_with_second_part_refused(channel, signed_post, twilio_stub, text, status, **error):
    """A customer's message, the bot's reply `text` (several parts), sent with Twilio refusing part 2
    for now: the deliver task's first try, which re-raises (the worker would retry in 2 s)."""
    assert signed_post(f"/channels/whatsapp/{channel.key}/", whatsapp_params()).status_code == 200
    reply, _ = services.record_reply(Message.objects.get(), text, {})
    twilio_stub.fail_request(2, status, **error)
    with pytest.raises(Exception):
        deliver(reply.id)
    reply.refresh_from_db()
    return reply


def test_a_callback_for_the_first_part_leaves_the_rest_to_be_sent(whatsapp_channel, signed_post, twilio_stub):
    """Part 1 accepted, part 2 refused for now (a retry waits): Twilio's callback for part 1 must not
    mark the reply sent, or the retry finds nothing to claim and the rest never goes out."""
    text = " ".join(f"Part of a long answer, sentence {i}." for i in range(100))  # three parts
    reply = split_reply_with_second_part_refused(whatsapp_channel, signed_post, twilio_stub, text, 503,
                                                 code=20503, message="Service Unavailable")
    assert reply.delivery_status == Message.Delivery.PENDING and len(reply.meta["twilio_sids"]) == 1

    assert callback(signed_post, whatsapp_channel, reply, "delivered", sid=reply.meta["twilio_sids"][0]).status_code == 204
    reply.refresh_from_db()
    assert reply.delivery_status == Message.Delivery.PENDING  # still the deliver task's
    deliver(reply.id)  # the retry
    reply.refresh_from_db()
    assert reply.delivery_status == Message.Delivery.SENT and len(reply.meta["twilio_sids"]) == 3
    assert " ".join(r["form"]["Body"] for r in twilio_stub.messages(to=CUSTOMER) if "sid" in r) == text


@pytest.mark.django_db(transaction=True)
def test_a_status_that_overtakes_the_send_is_kept_and_applied(whatsapp_channel, signed_post, twilio_stub):
    """Twilio may call back (a fast "undelivered") before our send has recorded the part's sid. It does
    not retry a refused callback: answered 404, the failure was lost and the reply stayed "sent"."""
    import threading

    assert signed_post(f"/channels/whatsapp/{whatsapp_channel.key}/", whatsapp_params()).status_code == 200
    inbound = Message.objects.get()
    reply, _ = services.record_reply(inbound, "We are open Monday to Friday, 9am to 6pm.", {})
    answers = []

    def overtake(record):  # Twilio's callback, made while its answer to the send is still on the way
        def call():
            params = {"MessageSid": record["sid"], "MessageStatus": "undelivered", "ErrorCode": "63016",
                      "AccountSid": whatsapp_channel.settings["account_sid"]}
            answers.append(signed_post(f"/channels/whatsapp/{whatsapp_channel.key}/status/?m={reply.id}", params))
            from django.db import connection

            connection.close()

        caller = threading.Thread(target=call)
        caller.start()
        caller.join()

    twilio_stub.on_create = overtake
    deliver(reply.id)
    assert [a.status_code for a in answers] == [204]
    reply.refresh_from_db()
    assert reply.delivery_status == Message.Delivery.FAILED and reply.delivery_error.startswith("63016")
    assert reply.conversation.needs_human  # applied by settle_parts: the team told


def test_a_split_reply_whose_first_part_failed_while_the_rest_waited_keeps_twilios_error(
        whatsapp_channel, signed_post, twilio_stub):
    """Part 1 undelivered (its callback came while part 2 waited out a 429), then part 2 went out: the
    reply ends failed, and the inbox still says why (Twilio's error for part 1), not an empty reason."""
    text = " ".join(f"Part of a long answer, sentence {i}." for i in range(60))  # two parts
    reply = split_reply_with_second_part_refused(whatsapp_channel, signed_post, twilio_stub, text, 429,
                                                 code=20429, message="Too Many Requests")
    [first] = reply.meta["twilio_sids"]
    assert callback(signed_post, whatsapp_channel, reply, "undelivered", sid=first, ErrorCode="63016").status_code == 204

    deliver(reply.id)  # the retry: part 2 goes out
    reply.refresh_from_db()
    assert reply.meta["twilio_parts"] == 2 and len(reply.meta["twilio_sids"]) == 2
    assert reply.delivery_status == Message.Delivery.FAILED
    assert reply.delivery_error.startswith("63016") and "24-hour" in reply.delivery_error
    # part 2's own callbacks change neither
    assert callback(signed_post, whatsapp_channel, reply, "delivered", sid=reply.meta["twilio_sids"][1]).status_code == 204
    reply.refresh_from_db()
    assert reply.delivery_status == Message.Delivery.FAILED and reply.delivery_error.startswith("63016")
