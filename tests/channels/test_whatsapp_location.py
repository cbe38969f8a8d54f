"""A location the customer shares on WhatsApp (no text, no media: Twilio sends Latitude, Longitude,
and Address and Label for a place) is stored as words the agent and the bot read, not as a blank message."""
import pytest

from bots.files import prompt_text
from bots.models import Message

from .conftest import whatsapp_params

pytestmark = pytest.mark.django_db


def location(**fields):
    return whatsapp_params(Body="", NumMedia="0", MessageType="location", **fields)


def test_a_shared_place_is_stored_with_its_address_for_the_bot_to_answer(whatsapp_channel, signed_post):
    params = location(Latitude="52.520008", Longitude="13.404954", Address="Alexanderplatz 1, 10178 Berlin",
                      Label="Alexa Shopping Center")
    assert signed_post(f"/channels/whatsapp/{whatsapp_channel.key}/", params).status_code == 200
    message = Message.objects.get()
    assert message.text == ("📍 Alexa Shopping Center, Alexanderplatz 1, 10178 Berlin (52.520008, 13.404954)\n"
                            "https://www.google.com/maps/search/?api=1&query=52.520008,13.404954")
    assert message.meta["location"] == {"latitude": "52.520008", "longitude": "13.404954",
                                        "address": "Alexanderplatz 1, 10178 Berlin", "label": "Alexa Shopping Center"}
    assert message.reply_state == Message.ReplyState.PENDING  # the model answers it
    assert "Alexanderplatz 1, 10178 Berlin" in prompt_text(message)


def test_a_dropped_pin_is_stored_with_its_coordinates(whatsapp_channel, signed_post):
    assert signed_post(f"/channels/whatsapp/{whatsapp_channel.key}/",
                       location(Latitude="-33.8568", Longitude="151.2153")).status_code == 200
    assert Message.objects.get().text.startswith("📍 -33.8568, 151.2153\nhttps://www.google.com/maps/")


@pytest.mark.parametrize("latitude, longitude", [("north", "13.4"), ("52.5", ""), ("91", "13.4"), ("nan", "13.4")])
def test_coordinates_that_are_no_place_are_refused_and_nothing_is_stored(whatsapp_channel, signed_post, latitude, longitude):
    response = signed_post(f"/channels/whatsapp/{whatsapp_channel.key}/", location(Latitude=latitude, Longitude=longitude))
    assert response.status_code == 400 and b"Latitude and Longitude" in response.content
    assert not Message.objects.exists()
