"""Customers' attachments in the inbox. WhatsApp media: listed on the thread, kept in our
storage by a worker as the message arrives (or when an agent opens one first), fetched
from the (stub) Twilio API with the channel's credentials, which go to this account's
Twilio media only. Email attachments: kept with the message. Never shown to another
organisation, never rendered when they are markup, deleted with their conversation.
"""
import base64
import hashlib
from pathlib import Path

import pytest
from django.conf import settings

from bots.models import Attachment, Message
from tests.conftest import wait_for

from .conftest import ACCOUNT_SID, AUTH_TOKEN, whatsapp_params
from .mails import MAIL_WITH_ATTACHMENT, mail

pytestmark = pytest.mark.django_db

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF a customer's photo"


def body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


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
    assert response.status_code == 200 and body(response) == JPEG
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


def test_a_download_cut_off_mid_file_is_a_clear_502_and_the_other_files_are_kept(
    whatsapp_channel, twilio_stub, signed_post, client, alice
):
    """urllib3's own errors while reading the file were no requests error: a 500, and the media
    task died before the files after it."""
    from urllib.parse import urlsplit

    from channels_app.whatsapp import media

    cut = twilio_stub.add_media(ACCOUNT_SID, JPEG * 200, "image/jpeg")
    whole = twilio_stub.add_media(ACCOUNT_SID, JPEG, "image/jpeg")
    twilio_stub.cut_files.add(urlsplit(cut).path)
    message = receive_media(signed_post, whatsapp_channel, (cut, "image/jpeg"), (whole, "image/jpeg"))
    client.force_login(alice)
    response = client.get(f"/channels/whatsapp/media/{message.id}/0/")
    assert response.status_code == 502 and b"could not reach Twilio" in response.content
    [error] = media.store_all(message)
    assert error.status == 502  # the task tries it again later
    assert [a.index for a in Attachment.objects.filter(message=message)] == [1]


def test_markup_is_a_download_never_rendered_on_our_origin(whatsapp_channel, twilio_stub, signed_post, client, alice):
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    url = twilio_stub.add_media(ACCOUNT_SID, svg, "image/svg+xml")
    message = receive_media(signed_post, whatsapp_channel, (url, "image/svg+xml"))
    client.force_login(alice)
    response = client.get(f"/channels/whatsapp/media/{message.id}/0/")
    assert response.status_code == 200 and body(response) == svg
    assert response["Content-Disposition"].startswith("attachment;")


def test_an_opened_photo_is_kept_and_outlives_its_deletion_at_twilio(whatsapp_channel, twilio_stub, signed_post,
                                                                      client, alice):
    url = twilio_stub.add_media(ACCOUNT_SID, JPEG, "image/jpeg")
    message = receive_media(signed_post, whatsapp_channel, (url, "image/jpeg"))
    client.force_login(alice)
    assert body(client.get(f"/channels/whatsapp/media/{message.id}/0/")) == JPEG
    [kept] = Attachment.objects.filter(message=message)
    assert (kept.organization_id, kept.index, kept.size) == (message.organization_id, 0, len(JPEG))
    assert kept.sha256 == hashlib.sha256(JPEG).hexdigest() and Path(kept.file.path).read_bytes() == JPEG
    twilio_stub.media.clear()  # deleted at Twilio
    asked = len(twilio_stub.requests)
    response = client.get(f"/channels/whatsapp/media/{message.id}/0/")
    assert response.status_code == 200 and body(response) == JPEG
    assert response["Content-Disposition"] == "inline" and response["X-Content-Type-Options"] == "nosniff"
    assert len(twilio_stub.requests) == asked  # served from our copy


def test_the_worker_keeps_media_as_the_message_arrives(transactional_db, whatsapp_channel, twilio_stub, signed_post,
                                                       celery_workers, client, alice):
    photo, voice = twilio_stub.add_media(ACCOUNT_SID, JPEG, "image/jpeg"), twilio_stub.add_media(ACCOUNT_SID, b"OggS", "audio/ogg")
    message = receive_media(signed_post, whatsapp_channel, (photo, "image/jpeg"), (voice, "audio/ogg"), body="See both")
    kept = wait_for(lambda: list(Attachment.objects.filter(message=message)) if
                    Attachment.objects.filter(message=message).count() == 2 else None, what="the worker to keep both")
    assert [(a.index, a.content_type, Path(a.file.path).read_bytes()) for a in kept] == [
        (0, "image/jpeg", JPEG), (1, "audio/ogg", b"OggS")]
    twilio_stub.media.clear()  # deleted at Twilio before any agent looked
    client.force_login(alice)
    response = client.get(f"/channels/whatsapp/media/{message.id}/1/")
    assert response.status_code == 200 and body(response) == b"OggS"


def test_email_attachments_are_kept_with_the_message(email_channel, post_mail, client, alice, charlie):
    post_mail(email_channel.key, MAIL_WITH_ATTACHMENT)
    post_mail(email_channel.key, MAIL_WITH_ATTACHMENT)  # a redelivery keeps nothing twice
    post_mail(email_channel.key, mail(message_id="<plain@example.com>"))
    message = Message.objects.get(external_id="att@example.com")
    [kept] = Attachment.objects.all()
    photo = base64.b64decode("/9j/4AAQ")
    assert (kept.message_id, kept.filename, kept.content_type, kept.size) == (message.id, "frame.jpg", "image/jpeg", 6)
    assert Path(kept.file.path).read_bytes() == photo
    assert Path(kept.file.path).parent == Path(settings.ATTACHMENTS_DIR) / str(message.organization_id)
    client.force_login(alice)
    link = f"/inbox/attachments/{kept.id}/"
    page = client.get(f"/inbox/{message.conversation_id}/").content.decode()
    assert f'<a href="{link}"' in page and "Attachment 1: frame.jpg (image/jpeg)" in page
    assert page.count("Attachment 1:") == 1  # the plain mail lists none
    thread = client.get(f"/inbox/{message.conversation_id}/messages.json").json()
    [inbound] = [m for m in thread["messages"] if m["id"] == message.id]
    assert inbound["attachments"] == [{"label": "frame.jpg (image/jpeg)", "url": link}]
    response = client.get(link)
    assert response.status_code == 200 and body(response) == photo
    assert response["Content-Type"] == "image/jpeg" and response["Content-Disposition"] == 'inline; filename="frame.jpg"'
    assert "default-src 'none'" in response["Content-Security-Policy"]
    client.force_login(charlie)
    assert client.get(link).status_code == 404


def test_an_emailed_web_page_is_a_download_under_its_own_name(email_channel, post_mail, client, alice):
    html = b"<html><script>alert(document.cookie)</script></html>"
    raw = MAIL_WITH_ATTACHMENT.replace(b"Content-Type: image/jpeg", b"Content-Type: text/html").replace(
        b"filename=frame.jpg", "filename*=utf-8''Factura%20%C3%B1.html".encode()).replace(
        b"/9j/4AAQ", base64.b64encode(html))
    post_mail(email_channel.key, raw)
    [kept] = Attachment.objects.all()
    client.force_login(alice)
    response = client.get(f"/inbox/attachments/{kept.id}/")
    assert body(response) == html and response["Content-Type"] == "text/html"
    assert response["Content-Disposition"] == "attachment; filename*=utf-8''Factura%20%C3%B1.html"
    assert response["X-Content-Type-Options"] == "nosniff"


def test_mail_stored_before_files_were_kept_lists_names_only(email_channel, post_mail, client, alice):
    post_mail(email_channel.key, MAIL_WITH_ATTACHMENT)
    Attachment.objects.all().delete()  # as for a message stored by an earlier version
    message = Message.objects.get(external_id="att@example.com")
    client.force_login(alice)
    page = client.get(f"/inbox/{message.conversation_id}/").content.decode()
    assert "Attachment 1: frame.jpg (image/jpeg)" in page and "/inbox/attachments/" not in page


def test_deleting_a_conversation_deletes_its_files(email_channel, post_mail, django_capture_on_commit_callbacks):
    post_mail(email_channel.key, MAIL_WITH_ATTACHMENT)
    [kept] = Attachment.objects.all()
    path = Path(kept.file.path)
    assert path.is_file()
    with django_capture_on_commit_callbacks(execute=True):
        kept.message.conversation.delete()
    assert not Attachment.objects.exists() and not path.exists()


def test_the_whatsapp_route_serves_whatsapp_files_only(email_channel, post_mail, client, alice):
    post_mail(email_channel.key, MAIL_WITH_ATTACHMENT)
    message = Message.objects.get(external_id="att@example.com")
    client.force_login(alice)
    assert client.get(f"/channels/whatsapp/media/{message.id}/0/").status_code == 404


def test_a_whatsapp_pdf_alone_is_answered_by_the_model_from_its_text(whatsapp_channel, twilio_stub, signed_post):
    from inference.tasks import _turns
    from tests.builder.test_knowledge_forms import pdf

    url = twilio_stub.add_media(ACCOUNT_SID, pdf("Total due EUR 129.00"), "application/pdf")
    message = receive_media(signed_post, whatsapp_channel, (url, "application/pdf"), body="")
    assert message.reply_state == Message.ReplyState.PENDING  # no canned "can't see photos" reply
    assert not Message.objects.filter(direction=Message.Direction.OUTBOUND).exists()
    assert _turns(message)[-1] == {"role": "user", "content": "[Attached file attachment 1:]\nTotal due EUR 129.00"}


def test_the_model_reads_a_whatsapp_pdf_the_media_task_has_not_kept_yet(whatsapp_channel, twilio_stub, signed_post):
    from bots.models import Attachment
    from inference.tasks import _turns
    from tests.builder.test_knowledge_forms import pdf

    url = twilio_stub.add_media(ACCOUNT_SID, pdf("Total due EUR 129.00"), "application/pdf")
    photo = twilio_stub.add_media(ACCOUNT_SID, JPEG, "image/jpeg")
    message = receive_media(signed_post, whatsapp_channel, (photo, "image/jpeg"), (url, "application/pdf"),
                            body="Is this invoice right?")
    assert not Attachment.objects.exists()  # no worker here: the media task has not run
    turns = _turns(message)
    assert turns[-1] == {"role": "user", "content": "Is this invoice right?\n\n[Attached file attachment 2:]\nTotal due EUR 129.00"}
    # only what the model can read was fetched before the reply; the photo waits for the task
    assert [(a.index, a.content_type) for a in Attachment.objects.filter(message=message)] == [(1, "application/pdf")]
    asked = len(twilio_stub.requests)
    assert _turns(message) == turns and len(twilio_stub.requests) == asked  # kept once: Twilio not asked again


def test_a_reply_is_written_without_a_file_twilio_will_not_hand_over(whatsapp_channel, twilio_stub, signed_post):
    from inference.tasks import _turns

    gone = twilio_stub.base_url + f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/MM1/Media/ME404"  # unknown to Twilio
    message = receive_media(signed_post, whatsapp_channel, (gone, "application/pdf"), body="Is this invoice right?")
    assert _turns(message)[-1] == {"role": "user", "content": "Is this invoice right?"}


@pytest.mark.django_db(transaction=True)
def test_a_customers_pdf_is_read_before_the_reply_waits_for_the_model(whatsapp_channel, twilio_stub, signed_post):
    """A PDF takes up to 30 s to read: read while holding the model, it kept every other reply (and in
    ``serve``, whose two threads also deliver, every delivery) waiting. Its text is read, and kept,
    before the reply task waits for the model: here held by the test until the text is there."""
    import threading

    from bots import files
    from inference import runtime
    from inference.tasks import _generate
    from tests.builder.test_knowledge_forms import pdf
    from tests.conftest import wait_for

    url = twilio_stub.add_media(ACCOUNT_SID, pdf("Total due EUR 129.00"), "application/pdf")
    message = receive_media(signed_post, whatsapp_channel, (url, "application/pdf"), body="Is this invoice right?")
    config = message.bot.live_config()
    outcome = []

    def reply():
        try:
            outcome.append(_generate(message, config))
        finally:
            from django.db import connection

            connection.close()

    with runtime.generation_lock:  # another reply is being written
        task = threading.Thread(target=reply)
        task.start()
        wait_for(lambda: any(key[0] in {a.id for a in message.attachments.all()} for key in list(files._texts)),
                 timeout=60, what="the PDF's text read before the model is free")
        # the team takes over meanwhile: the task then finds nothing to answer, and the test no model run
        Message.objects.filter(id=message.id).update(reply_state=Message.ReplyState.SKIPPED)
    task.join(120)
    assert outcome == [None]
