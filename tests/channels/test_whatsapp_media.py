"""A WhatsApp customer's attachments in the inbox: listed on the thread, fetched from the
(stub) Twilio API with the channel's credentials when an agent opens one, never stored,
never for another organisation, and credentials sent to this account's Twilio media only.
"""
import pytest

from bots.models import Message

from .conftest import ACCOUNT_SID, AUTH_TOKEN, whatsapp_params
from .mails import MAIL_WITH_ATTACHMENT, mail

pytestmark = pytest.mark.django_db

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF a customer's photo"


def receive_media(signed_post, whatsapp_channel, *media, body=""):
    """The customer sends `media` [(url, content type)] through the signed webhook; the stored message."""
    params = whatsapp_params(Body=body, NumMedia=str(len(media)))
    for i, (url, content_type) in enumerate(media):
        params[f"MediaUrl{i}"], params[f"MediaContentType{i}"] = url, content_type
    assert signed_post(f"/channels/whatsapp/{whatsapp_channel.key}/", params).status_code == 200
    return Message.objects.get(direction=Message.Direction.INBOUND)


def test_an_agent_opens_a_customers_photo_from_the_thread(whatsapp_channel, twilio_stub, signed_post, client, bob):
    url = twilio_stub.add_media(ACCOUNT_SID, JPEG, "image/jpeg")
    message = receive_media(signed_post, whatsapp_channel, (url, "image/jpeg"), body="Is this frame cracked?")
    client.force_login(bob)  # an agent: the inbox is theirs
    page = client.get(f"/inbox/{message.conversation_id}/").content.decode()
    link = f"/channels/whatsapp/media/{message.id}/0/"
    assert f'href="{link}"' in page and "Attachment 1: image/jpeg" in page
    thread = client.get(f"/inbox/{message.conversation_id}/messages.json").json()
    [inbound] = [m for m in thread["messages"] if m["id"] == message.id]
    assert inbound["attachments"] == [{"label": "image/jpeg", "url": link}]

    response = client.get(link)
    assert response.status_code == 200 and response.content == JPEG
    assert response["Content-Type"] == "image/jpeg" and response["Content-Disposition"] == "inline"
    assert response["X-Content-Type-Options"] == "nosniff" and "default-src 'none'" in response["Content-Security-Policy"]
    # Twilio got the channel's credentials; its CDN (another host) got none
    assert twilio_stub.requests[-1]["auth"] == (ACCOUNT_SID, AUTH_TOKEN)
    assert twilio_stub.file_requests and twilio_stub.file_requests[-1]["auth"] is None


def test_another_organisation_gets_a_404_and_twilio_is_not_asked(whatsapp_channel, twilio_stub, signed_post, client,
                                                                 charlie):
    url = twilio_stub.add_media(ACCOUNT_SID, JPEG, "image/jpeg")
    message = receive_media(signed_post, whatsapp_channel, (url, "image/jpeg"))
    client.force_login(charlie)  # Globex's owner
    assert client.get(f"/channels/whatsapp/media/{message.id}/0/").status_code == 404
    client.logout()
    assert client.get(f"/channels/whatsapp/media/{message.id}/0/").status_code == 302  # to the login page
    assert not [r for r in twilio_stub.requests if "/Media/" in r["path"]]


def test_credentials_go_only_to_this_accounts_twilio_media(whatsapp_channel, twilio_stub, signed_post, client, alice):
    other_account = twilio_stub.add_media("AC" + "9" * 32, JPEG, "image/jpeg")
    message = receive_media(signed_post, whatsapp_channel, ("https://evil.example/2010-04-01/Accounts/x/ME1", "image/png"),
                            (other_account, "image/jpeg"), ("http://api.twilio.com/2010-04-01/Accounts/" + ACCOUNT_SID + "/Me",
                                                            "image/png"))  # fmt: skip
    client.force_login(alice)
    for index in range(3):
        response = client.get(f"/channels/whatsapp/media/{message.id}/{index}/")
        assert response.status_code == 404 and b"not one of this Twilio account's media" in response.content
    assert client.get(f"/channels/whatsapp/media/{message.id}/3/").status_code == 404  # no such attachment
    assert not twilio_stub.requests


def test_a_deleted_attachment_is_a_clear_502(whatsapp_channel, twilio_stub, signed_post, client, alice):
    url = twilio_stub.add_media(ACCOUNT_SID, JPEG, "image/jpeg")
    message = receive_media(signed_post, whatsapp_channel, (url, "image/jpeg"))
    twilio_stub.media.clear()  # deleted at Twilio
    client.force_login(alice)
    response = client.get(f"/channels/whatsapp/media/{message.id}/0/")
    assert response.status_code == 502 and b"Twilio answered 404" in response.content


def test_markup_is_a_download_never_rendered_on_our_origin(whatsapp_channel, twilio_stub, signed_post, client, alice):
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    url = twilio_stub.add_media(ACCOUNT_SID, svg, "image/svg+xml")
    message = receive_media(signed_post, whatsapp_channel, (url, "image/svg+xml"))
    client.force_login(alice)
    response = client.get(f"/channels/whatsapp/media/{message.id}/0/")
    assert response.status_code == 200 and response.content == svg
    assert response["Content-Disposition"].startswith("attachment;")


def test_email_attachments_are_listed_by_name(email_channel, post_mail, client, alice):
    post_mail(email_channel.key, MAIL_WITH_ATTACHMENT)
    post_mail(email_channel.key, mail(message_id="<plain@example.com>"))
    message = Message.objects.get(external_id="att@example.com")
    client.force_login(alice)
    page = client.get(f"/inbox/{message.conversation_id}/").content.decode()
    assert "Attachment 1: frame.jpg (image/jpeg)" in page
    assert page.count("Attachment 1:") == 1  # the plain mail lists none
