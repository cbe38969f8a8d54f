"""Visitors' files over the widget's upload endpoint, against the live ASGI server.

Real HTTP (multipart, as widget.js posts it), the real websocket for the conversation a
file starts, the attachments storage the inbox reads, and the real workers: a caption goes to
the model with its file, a PDF or text file alone goes to the model, an image alone gets the
canned reply. Each test waits for the workers to finish its messages (a reply still being
written while the test database is emptied deadlocked the flush in a full run).
"""
import hashlib
import json

import pytest
import requests

from tests.channels.widget_helpers import *  # noqa: F401,F403 - fixtures and helpers
from tests.channels.widget_helpers import frames_until, open_socket, recv
from tests.conftest import wait_for

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


pytestmark = pytest.mark.usefixtures("workers_done")


def model_reply(inbound):
    """The bot's reply to ``inbound`` once a worker wrote it; written by the model, not canned."""
    from bots.models import Message

    reply = wait_for(lambda: Message.objects.filter(reply_to=inbound).first(), timeout=180, what="the bot's reply")
    assert reply.text.strip() and not reply.stats.get("canned")
    return reply


def new_visitor(live_server_url, channel, host_site):
    """A visitor's socket after hello: ``(socket, token)``."""
    ws = open_socket(live_server_url, channel.bot.public_key, host_site.origin)
    session, history = recv(ws), recv(ws)
    assert session["type"] == "session" and history["type"] == "history"
    return ws, session["token"]


def upload(live_server_url, public_key, origin, token, *, client_id="f1", text="", file=("receipt.png", PNG, "image/png")):
    headers = {"Origin": origin} if origin else {}
    files = {"file": file} if file is not None else {}
    return requests.post(f"{live_server_url}/channels/widget/{public_key}/upload/", headers=headers, files=files,
                         data={"token": token, "id": client_id, "text": text}, timeout=30)


def test_an_image_alone_is_kept_answered_and_followed_by_the_socket(widget_channel, host_site, live_server_url):
    from bots.models import Attachment, Message
    from bots.models.bots import NO_TEXT_MESSAGE

    ws, token = new_visitor(live_server_url, widget_channel, host_site)
    response = upload(live_server_url, widget_channel.bot.public_key, host_site.origin, token)
    assert response.status_code == 201, response.text
    assert response.headers["Access-Control-Allow-Origin"] == host_site.origin
    frame = response.json()
    assert frame["client_id"] == "f1" and frame["message"]["direction"] == "in"
    assert frame["message"]["attachments"] == [{"name": "receipt.png", "content_type": "image/png", "size": len(PNG)}]

    inbound = Message.objects.get(direction="in")
    assert inbound.channel == "widget" and inbound.text == "" and inbound.meta["skip_reason"].startswith("image only")
    attachment = Attachment.objects.get(message=inbound)
    assert attachment.organization_id == widget_channel.organization_id
    with attachment.file.open("rb") as stored:
        assert stored.read() == PNG
    assert attachment.sha256 == hashlib.sha256(PNG).hexdigest()
    assert Message.objects.get(direction="out").text == NO_TEXT_MESSAGE

    # The socket had no conversation when it opened; "sync" joins the one the file started.
    ws.send(json.dumps({"type": "sync"}))
    history = frames_until(ws, lambda f: f["type"] == "history")[-1]
    assert [(m["direction"], m["text"], [a["name"] for a in m["attachments"]]) for m in history["messages"]] == [
        ("in", "", ["receipt.png"]), ("out", NO_TEXT_MESSAGE, [])]
    # Joined: the next message of the conversation reaches the socket live.
    assert upload(live_server_url, widget_channel.bot.public_key, host_site.origin, token, client_id="f2",
                  text="Here is the back too").status_code == 201
    # (a delivery worker, where one runs, may push the canned reply's own event first)
    live = frames_until(ws, lambda f: f["type"] == "message" and f["message"]["direction"] == "in")[-1]
    assert live["message"]["text"] == "Here is the back too"
    assert live["message"]["attachments"] == [{"name": "receipt.png", "content_type": "image/png", "size": len(PNG)}]
    ws.close()


def test_the_team_finds_the_file_in_the_inbox_and_nobody_else_does(widget_channel, host_site, live_server_url,
                                                                    client, alice, charlie):
    from django.urls import reverse

    from bots.models import Attachment, Conversation

    ws, token = new_visitor(live_server_url, widget_channel, host_site)
    assert upload(live_server_url, widget_channel.bot.public_key, host_site.origin, token).status_code == 201
    conversation, attachment = Conversation.objects.get(), Attachment.objects.get()
    link = reverse("inbox:attachment", args=[attachment.id])
    client.force_login(alice)
    page = client.get(reverse("inbox:thread", args=[conversation.id])).content.decode()
    assert f'href="{link}"' in page and "receipt.png (image/png)" in page
    polled = client.get(reverse("inbox:thread-json", args=[conversation.id])).json()
    assert polled["messages"][0]["attachments"] == [{"label": "receipt.png (image/png)", "url": link}]
    served = client.get(link)
    assert b"".join(served.streaming_content) == PNG and served["X-Content-Type-Options"] == "nosniff"
    client.force_login(charlie)  # another organisation
    assert client.get(link).status_code == 404
    ws.close()


def test_a_caption_goes_to_the_bot_with_the_file(widget_channel, host_site, live_server_url):
    from bots.models import Attachment, Message

    ws, token = new_visitor(live_server_url, widget_channel, host_site)
    response = upload(live_server_url, widget_channel.bot.public_key, host_site.origin, token, text="Is this invoice right?",
                      file=("invoice.pdf", PDF, "application/pdf"))
    assert response.status_code == 201, response.text
    inbound = Message.objects.get()
    assert inbound.text == "Is this invoice right?" and not inbound.meta.get("skip_reason")
    assert Attachment.objects.get(message=inbound).content_type == "application/pdf"
    model_reply(inbound)
    ws.close()


@pytest.mark.parametrize("name,content_type,text", [("invoice.pdf", "application/pdf", "Total due EUR 129.00"),
                                                     ("order.txt", "text/plain", "Order 1042, blue frame")])
def test_a_document_alone_goes_to_the_model_which_reads_it(name, content_type, text, widget_channel, host_site,
                                                           live_server_url):
    from bots.models import Message
    from inference.tasks import _turns
    from tests.builder.test_knowledge_forms import pdf

    content = pdf(text) if content_type == "application/pdf" else text.encode()
    ws, token = new_visitor(live_server_url, widget_channel, host_site)
    assert upload(live_server_url, widget_channel.bot.public_key, host_site.origin, token,
                  file=(name, content, content_type)).status_code == 201
    inbound = Message.objects.get()
    assert inbound.text == "" and not inbound.meta.get("skip_reason")
    assert _turns(inbound)[-1] == {"role": "user", "content": f"[Attached file {name}:]\n{text}"}
    model_reply(inbound)  # the model answered it, no canned reply
    ws.close()


def test_a_retried_upload_is_stored_once(widget_channel, host_site, live_server_url):
    from bots.models import Attachment, Message

    ws, token = new_visitor(live_server_url, widget_channel, host_site)
    first = upload(live_server_url, widget_channel.bot.public_key, host_site.origin, token, client_id="same")
    again = upload(live_server_url, widget_channel.bot.public_key, host_site.origin, token, client_id="same")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["message"]["id"] == first.json()["message"]["id"]
    assert Message.objects.filter(direction="in").count() == 1 and Attachment.objects.count() == 1
    ws.close()


def test_a_retried_upload_is_answered_even_past_the_rate_limit(widget_channel, host_site, live_server_url):
    """The widget posts again a file whose answer it lost: no new message, so the limit must not refuse
    it (it was counted first: a 429, and the widget marked a stored file failed)."""
    from bots.models import Attachment

    widget_channel.settings = {**widget_channel.settings, "messages_per_minute": 1}
    widget_channel.save()
    ws, token = new_visitor(live_server_url, widget_channel, host_site)
    answers = [upload(live_server_url, widget_channel.bot.public_key, host_site.origin, token, client_id=client_id)
               for client_id in ("f1", "f2", "f1")]
    assert [a.status_code for a in answers] == [201, 429, 200]
    assert answers[2].json() == answers[0].json()  # the stored message's echo
    assert Attachment.objects.count() == 1
    ws.close()


HTML = b"<!doctype html><script>alert(1)</script>"


@pytest.mark.parametrize("case, status, code", [
    ("no origin", 403, "forbidden_origin"),
    ("other origin", 403, "forbidden_origin"),
    ("tampered token", 401, "bad_token"),
    ("another bot's token", 401, "bad_token"),
    ("bad client id", 400, "bad_frame"),
    ("no file", 400, "no_file"),
    ("empty file", 400, "empty_file"),
    ("html as png", 415, "file_type"),
    ("svg", 415, "file_type"),
    ("binary as text", 415, "file_type"),
    ("too large", 413, "too_large"),
    ("caption too long", 400, "too_long"),
    ("uploads off", 403, "uploads_off"),
])  # fmt: skip
def test_it_refuses_what_it_must_and_stores_nothing(case, status, code, widget_channel, globex_bot, host_site,
                                                    live_server_url):
    from bots.models import Attachment, Conversation, Message
    from channels_app.widget import tokens

    key = widget_channel.bot.public_key
    widget_channel.settings = {**widget_channel.settings, "max_upload_mb": 1, "max_message_chars": 50,
                               "file_uploads": case != "uploads off"}
    widget_channel.save()
    _, token = tokens.issue(key)
    origin, kwargs = host_site.origin, {}
    if case == "no origin":
        origin = ""
    elif case == "other origin":
        origin = "https://evil.example"
    elif case == "tampered token":
        token = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    elif case == "another bot's token":
        _, token = tokens.issue(globex_bot.public_key)
    elif case == "bad client id":
        kwargs["client_id"] = "not ok!"
    elif case == "no file":
        kwargs["file"] = None
    elif case == "empty file":
        kwargs["file"] = ("empty.png", b"", "image/png")
    elif case == "html as png":
        kwargs["file"] = ("cute.png", HTML, "image/png")
    elif case == "svg":
        kwargs["file"] = ("logo.svg", b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml")
    elif case == "binary as text":
        kwargs["file"] = ("notes.txt", b"MZ\x90\x00\x03\x00\x00\x00", "text/plain")
    elif case == "too large":
        kwargs["file"] = ("big.png", PNG + b"\x00" * (1024 * 1024), "image/png")
    elif case == "caption too long":
        kwargs["text"] = "x" * 51

    response = upload(live_server_url, key, origin, token, **kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error" and body["code"] == code and body["message"]
    # the page may read why, unless it is a page the bot does not allow
    assert ("Access-Control-Allow-Origin" in response.headers) == (code != "forbidden_origin")
    assert not Message.objects.exists() and not Attachment.objects.exists() and not Conversation.objects.exists()


@pytest.mark.parametrize("content_type, body", [
    ("multipart/form-data; boundary=xyz", b"--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n"),
    ("multipart/form-data", b"no boundary at all"),
    ("application/json", b'{"token": "x", "file": "aGVsbG8="}'),
])  # fmt: skip
def test_a_malformed_post_gets_a_clear_error_not_a_500(content_type, body, widget_channel, host_site, live_server_url):
    from bots.models import Message

    response = requests.post(f"{live_server_url}/channels/widget/{widget_channel.bot.public_key}/upload/", data=body,
                             headers={"Origin": host_site.origin, "Content-Type": content_type}, timeout=30)
    assert response.status_code in (400, 401), response.text
    assert response.json()["type"] == "error" and response.json()["message"]
    assert not Message.objects.exists()


def test_files_count_against_the_message_rate_limit(widget_channel, host_site, live_server_url):
    from bots.models import Attachment

    widget_channel.settings = {**widget_channel.settings, "messages_per_minute": 2}
    widget_channel.save()
    ws, token = new_visitor(live_server_url, widget_channel, host_site)
    answers = [upload(live_server_url, widget_channel.bot.public_key, host_site.origin, token, client_id=f"f{i}")
               for i in range(3)]
    assert [a.status_code for a in answers] == [201, 201, 429]
    assert answers[2].json()["code"] == "rate_limited" and int(answers[2].headers["Retry-After"]) > 0
    assert Attachment.objects.count() == 2
    ws.close()


def test_the_widget_config_says_whether_files_are_taken(widget_channel, host_site, live_server_url):
    url = f"{live_server_url}/channels/widget/{widget_channel.bot.public_key}/config/"
    look = requests.get(url, headers={"Origin": host_site.origin}, timeout=30).json()
    assert (look["uploads"], look["max_upload_mb"]) == (True, 5)
    widget_channel.settings = {**widget_channel.settings, "file_uploads": False, "max_upload_mb": 2}
    widget_channel.save()
    look = requests.get(url, headers={"Origin": host_site.origin}, timeout=30).json()
    assert (look["uploads"], look["max_upload_mb"]) == (False, 2)
