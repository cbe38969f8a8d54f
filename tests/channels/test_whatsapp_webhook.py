"""WhatsApp's inbound webhook: signature, recipient and field checks; storing once.

These tests run in one transaction (no workers): nothing is generated or sent, only
what the webhook stores and answers is checked.
"""
import pytest

from bots.models import Conversation, Message

from .conftest import AUTH_TOKEN, CUSTOMER, whatsapp_params

pytestmark = pytest.mark.django_db


def path(config):
    return f"/channels/whatsapp/{config.key}/"


def test_it_stores_a_signed_message_and_answers_with_empty_twiml(whatsapp_channel, signed_post):
    response = signed_post(path(whatsapp_channel), whatsapp_params())
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/xml")
    assert response.content.decode().endswith("<Response/>")
    message = Message.objects.get(channel="whatsapp")
    assert message.text == "What are your opening hours?"
    assert message.external_id == "SM" + "a" * 32
    assert message.reply_state == Message.ReplyState.PENDING
    conversation = message.conversation
    assert conversation.external_id == CUSTOMER
    assert conversation.contact_phone == "+15551234567"
    assert conversation.contact_name == "Carla"


def test_it_refuses_a_bad_signature_and_stores_nothing(whatsapp_channel, signed_post):
    response = signed_post(path(whatsapp_channel), whatsapp_params(), token="not-the-token")
    assert response.status_code == 403
    assert not Message.objects.exists()
    assert not Conversation.objects.exists()


def test_it_refuses_a_missing_signature_and_stores_nothing(whatsapp_channel, signed_post):
    response = signed_post(path(whatsapp_channel), whatsapp_params(), signature="")
    assert response.status_code == 403
    assert not Message.objects.exists()


def test_it_refuses_a_signature_over_other_params(whatsapp_channel, signed_post):
    from django.conf import settings
    from twilio.request_validator import RequestValidator

    signed = RequestValidator(AUTH_TOKEN).compute_signature(settings.PUBLIC_URL + path(whatsapp_channel), whatsapp_params())
    response = signed_post(path(whatsapp_channel), whatsapp_params(Body="tampered"), signature=signed)
    assert response.status_code == 403
    assert not Message.objects.exists()


def test_it_checks_the_signature_against_the_public_url_not_the_host_django_sees(whatsapp_channel, client):
    from urllib.parse import urlencode

    from twilio.request_validator import RequestValidator

    params = whatsapp_params()
    as_seen_by_django = RequestValidator(AUTH_TOKEN).compute_signature("http://testserver" + path(whatsapp_channel), params)
    response = client.post(
        path(whatsapp_channel), urlencode(params), content_type="application/x-www-form-urlencoded",
        HTTP_X_TWILIO_SIGNATURE=as_seen_by_django,
    )  # fmt: skip
    assert response.status_code == 403


def test_it_stores_a_duplicate_message_sid_once(whatsapp_channel, signed_post):
    for _ in range(3):
        assert signed_post(path(whatsapp_channel), whatsapp_params()).status_code == 200
    assert Message.objects.filter(channel="whatsapp").count() == 1


def test_it_finds_the_channel_by_messaging_service_sid(whatsapp_channel, signed_post):
    params = whatsapp_params(To="whatsapp:+19998887777", MessagingServiceSid=whatsapp_channel.settings["messaging_service_sid"])
    assert signed_post(path(whatsapp_channel), params).status_code == 200
    assert Message.objects.count() == 1


def test_it_refuses_a_message_for_another_number(whatsapp_channel, signed_post):
    response = signed_post(path(whatsapp_channel), whatsapp_params(To="whatsapp:+19998887777"))
    assert response.status_code == 404
    assert not Message.objects.exists()


def test_it_answers_404_for_an_unknown_channel_key(whatsapp_channel, signed_post):
    assert signed_post("/channels/whatsapp/no-such-key/", whatsapp_params()).status_code == 404


def test_it_answers_405_to_get(whatsapp_channel, client):
    assert client.get(path(whatsapp_channel)).status_code == 405


@pytest.mark.parametrize(
    "overrides",
    [
        {"MessageSid": None, "SmsMessageSid": None, "SmsSid": None},
        {"From": None},
        {"NumMedia": "lots"},
        {"NumMedia": "-1"},
        {"NumMedia": "999"},
        {"MessageSid": "SM" + "x" * 500, "SmsMessageSid": None},
    ],
)
def test_it_refuses_malformed_fields_with_400(whatsapp_channel, signed_post, overrides):
    response = signed_post(path(whatsapp_channel), whatsapp_params(**overrides))
    assert response.status_code == 400
    assert not Message.objects.exists()


def test_it_refuses_an_oversized_body_with_413(whatsapp_channel, signed_post):
    response = signed_post(path(whatsapp_channel), whatsapp_params(Body="x" * 100_000))
    assert response.status_code == 413
    assert not Message.objects.exists()


def test_it_does_not_fail_on_invalid_utf8_in_an_unsigned_request(whatsapp_channel, client):
    body = b"Body=caf%E9+%FF%FE&From=whatsapp%3A%2B15551234567&To=whatsapp%3A%2B14155238886&MessageSid=SMbad"
    response = client.post(
        path(whatsapp_channel), body, content_type="application/x-www-form-urlencoded", HTTP_X_TWILIO_SIGNATURE="x"
    )
    assert response.status_code == 403  # unsigned; the point is: no 500 from the decoding


def test_it_stores_signed_invalid_utf8_as_replacement_text(whatsapp_channel, signed_post):
    # What Django decodes is what Twilio signed over; undecodable bytes become U+FFFD.
    response = signed_post(path(whatsapp_channel), whatsapp_params(Body="caf\ufffd"))
    assert response.status_code == 200
    assert Message.objects.get().text == "caf\ufffd"


def test_it_answers_a_media_only_message_with_canned_text(whatsapp_channel, signed_post):
    params = whatsapp_params(
        Body="", NumMedia="1", MediaUrl0="https://api.twilio.com/media/ME1", MediaContentType0="image/jpeg"
    )
    assert signed_post(path(whatsapp_channel), params).status_code == 200
    inbound = Message.objects.get(direction=Message.Direction.INBOUND)
    assert inbound.meta["media"] == [{"url": "https://api.twilio.com/media/ME1", "content_type": "image/jpeg"}]
    reply = Message.objects.get(direction=Message.Direction.OUTBOUND)
    assert reply.reply_to == inbound
    assert "can't see photos" in reply.text
    assert reply.delivery_status == Message.Delivery.PENDING
    inbound.refresh_from_db()
    assert inbound.reply_state == Message.ReplyState.DONE


def test_a_photo_alone_gets_the_bots_own_words_once_published(whatsapp_channel, signed_post):
    bot = whatsapp_channel.bot
    bot.no_text_message = "Merci pour la photo ! Je ne vois pas les images : pouvez-vous l'écrire ?"
    bot.save()
    photo = whatsapp_params(Body="", NumMedia="1", MediaUrl0="https://api.twilio.com/media/ME2",
                            MediaContentType0="image/jpeg", MessageSid="SMphoto1")
    assert signed_post(path(whatsapp_channel), photo).status_code == 200
    assert "can't see photos" in Message.objects.get(direction=Message.Direction.OUTBOUND).text  # the draft is not live
    bot.publish()
    assert signed_post(path(whatsapp_channel), dict(photo, MessageSid="SMphoto2")).status_code == 200
    assert Message.objects.filter(direction=Message.Direction.OUTBOUND).latest("id").text == bot.no_text_message


def test_a_document_alone_is_left_to_the_model_which_reads_it(whatsapp_channel, signed_post):
    params = whatsapp_params(Body="", NumMedia="2", MediaUrl0="https://x/ME3", MediaContentType0="image/jpeg",
                             MediaUrl1="https://x/ME4", MediaContentType1="application/pdf")
    assert signed_post(path(whatsapp_channel), params).status_code == 200
    inbound = Message.objects.get()  # no canned reply: the worker keeps the PDF, then the model answers
    assert inbound.reply_state == Message.ReplyState.PENDING


def test_it_keeps_media_urls_of_a_captioned_message_and_lets_the_bot_answer(whatsapp_channel, signed_post):
    params = whatsapp_params(Body="Is this bike in stock?", NumMedia="1", MediaUrl0="https://x/ME2", MediaContentType0="image/png")
    assert signed_post(path(whatsapp_channel), params).status_code == 200
    inbound = Message.objects.get()
    assert inbound.reply_state == Message.ReplyState.PENDING
    assert inbound.meta["media"][0]["url"] == "https://x/ME2"


def test_it_does_not_serve_another_channel_kind(acme, acme_bot, signed_post):
    from channels_app.models import ChannelConfig

    email = ChannelConfig.objects.create(organization=acme, bot=acme_bot, kind="email", secrets={"auth_token": AUTH_TOKEN})
    assert signed_post(f"/channels/whatsapp/{email.key}/", whatsapp_params()).status_code == 404


def test_it_stores_a_nul_character_as_replacement_text(whatsapp_channel, signed_post):
    assert signed_post(path(whatsapp_channel), whatsapp_params(Body="a\x00b", ProfileName="C\x00")).status_code == 200
    assert Message.objects.get().text == "a\ufffdb"


def test_it_refuses_a_nul_character_in_the_sender(whatsapp_channel, signed_post):
    assert signed_post(path(whatsapp_channel), whatsapp_params(From="whatsapp:+1\x00")).status_code == 400
