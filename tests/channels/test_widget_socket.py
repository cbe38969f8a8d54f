"""The widget's websocket against the live ASGI server, with a real websocket client.

Who may connect (origin allow-list, signed visitor tokens), what a visitor may send
(frame validation, size and rate limits), and what they get back (history, echoes).
The real workers answer what is queued; each test waits for them to finish (``workers_done``).
"""
import json

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.channels.widget_helpers import *  # noqa: F401,F403 - fixtures and helpers
from tests.channels.widget_helpers import frames_until, open_socket, recv, ws_url

pytestmark = pytest.mark.usefixtures("workers_done")


def closed_with(ws):
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            ws.recv(timeout=20)
    return closed.value.rcvd.code if closed.value.rcvd else None


def start(live_server_url, channel, host_site, token=None):
    """A connected visitor: ``(socket, session frame, history frame)``."""
    ws = open_socket(live_server_url, channel.bot.public_key, host_site.origin, token)
    session, history = recv(ws), recv(ws)
    assert session["type"] == "session" and history["type"] == "history"
    return ws, session, history


def send(ws, **frame):
    """Send a frame; return the answer to it (skipping live copies of earlier messages)."""
    ws.send(json.dumps(frame))
    answers = frames_until(ws, lambda f: f.get("client_id") == frame.get("id") or (f["type"] == "error" and "client_id" not in f))
    return answers[-1]


def test_it_refuses_a_disallowed_origin_and_stores_nothing(widget_channel, live_server_url):
    from bots.models import Message

    ws = open_socket(live_server_url, widget_channel.bot.public_key, "https://evil.example")
    assert recv(ws) == {"type": "error", "code": "forbidden_origin", "message": "This website is not allowed to use this chat."}
    assert closed_with(ws) == 4403
    assert not Message.objects.exists()


def test_it_refuses_a_bot_without_an_enabled_widget(transactional_db, widget_channel, globex_bot, host_site, live_server_url):
    ws = open_socket(live_server_url, globex_bot.public_key, host_site.origin)  # Globex has no widget
    assert recv(ws)["code"] == "forbidden_origin" and closed_with(ws) == 4403
    widget_channel.enabled = False
    widget_channel.save()
    ws = open_socket(live_server_url, widget_channel.bot.public_key, host_site.origin)
    assert recv(ws)["code"] == "forbidden_origin" and closed_with(ws) == 4403
    ws = open_socket(live_server_url, "bot_does_not_exist", host_site.origin)
    assert recv(ws)["code"] == "forbidden_origin" and closed_with(ws) == 4403


def test_it_refuses_a_tampered_visitor_token(widget_channel, host_site, live_server_url):
    ws, session, _ = start(live_server_url, widget_channel, host_site)
    ws.close()
    token = session["token"]
    payload, rest = token.split(":", 1)
    forged = payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB") + ":" + rest
    ws = open_socket(live_server_url, widget_channel.bot.public_key, host_site.origin, forged)
    assert recv(ws)["code"] == "bad_token" and closed_with(ws) == 4401

    # The genuine token still works and names the same visitor.
    ws, again, _ = start(live_server_url, widget_channel, host_site, token)
    assert again["visitor"] == session["visitor"]
    ws.close()


def test_the_visitor_token_travels_in_the_hello_frame_not_the_url(widget_channel, host_site, live_server_url):
    from bots.models import Message

    ws, session, _ = start(live_server_url, widget_channel, host_site)
    ws.close()
    url = ws_url(live_server_url, widget_channel.bot.public_key)

    # A first frame that is not a hello (here: a message) is refused and not stored.
    ws = connect(url, origin=host_site.origin, open_timeout=20)
    ws.send(json.dumps({"type": "message", "id": "m1", "text": "hello?"}))
    assert recv(ws)["code"] == "bad_frame" and closed_with(ws) == 4400
    # A hello whose token is not a string is a bad token.
    ws = open_socket(live_server_url, widget_channel.bot.public_key, host_site.origin, hello=False)
    ws.send(json.dumps({"type": "hello", "token": ["x"]}))
    assert recv(ws)["code"] == "bad_token" and closed_with(ws) == 4401
    # Silence: closed when the hello timeout (3 s under test) runs out, with the reason.
    ws = open_socket(live_server_url, widget_channel.bot.public_key, host_site.origin, hello=False)
    assert recv(ws)["code"] == "bad_frame" and closed_with(ws) == 4400
    assert not Message.objects.exists()

    # Scripts loaded before the hello still put the token in the URL: it is still honoured.
    ws = connect(url + "?token=" + session["token"], origin=host_site.origin, open_timeout=20)
    again = recv(ws)
    assert again["type"] == "session" and again["visitor"] == session["visitor"]
    ws.close()


def test_it_answers_malformed_frames_with_an_error_and_loses_nothing(widget_channel, host_site, live_server_url):
    from bots.models import Message

    ws, _, _ = start(live_server_url, widget_channel, host_site)
    bad = [
        ("not json", "bad_frame"),
        ("[1, 2]", "bad_frame"),
        (json.dumps({"type": "launch-missiles", "id": "a1"}), "bad_frame"),
        (json.dumps({"type": "message", "text": "no id"}), "bad_frame"),
        (json.dumps({"type": "message", "text": "bad id", "id": "<script>"}), "bad_frame"),
        (json.dumps({"type": "message", "text": 42, "id": "a2"}), "bad_frame"),
        (json.dumps({"type": "message", "text": ["x"], "id": "a3"}), "bad_frame"),
        (json.dumps({"type": "message", "text": "   ", "id": "a4"}), "empty"),
        (json.dumps({"type": "message", "text": "x" * 2001, "id": "a5"}), "too_long"),
        (json.dumps({"type": "message", "text": "y" * 500_000, "id": "a6"}), "too_long"),
        (json.dumps({"type": "message", "text": "hi", "id": "a7", "email": "not-an-email"}), "bad_email"),
        (json.dumps({"type": "message", "text": "hi", "id": "a8", "email": {"x": 1}}), "bad_frame"),
    ]
    for raw, code in bad:
        ws.send(raw)
        frame = recv(ws)
        assert (frame["type"], frame["code"]) == ("error", code), raw[:80]
        assert frame["message"]
    ws.send(b"\x00\x01binary")
    assert recv(ws)["code"] == "bad_frame"
    assert not Message.objects.exists()

    echo = send(ws, type="message", text="Do you sell tandems?", id="ok-1")
    assert echo["type"] == "message" and echo["client_id"] == "ok-1"
    assert echo["message"]["text"] == "Do you sell tandems?" and echo["message"]["direction"] == "in"
    stored = Message.objects.get()
    assert stored.id == echo["message"]["id"] and stored.channel == "widget"
    ws.close()


def test_it_rate_limits_messages_with_a_clear_message(widget_channel, host_site, live_server_url):
    from bots.models import Message

    widget_channel.settings["messages_per_minute"] = 2
    widget_channel.save()
    ws, _, _ = start(live_server_url, widget_channel, host_site)
    # Five messages inside a minute span at most two fixed windows of 2: at least one is refused.
    frames = [send(ws, type="message", text=f"message {i}", id=f"m{i}") for i in range(5)]
    refused = [f for f in frames if f["type"] == "error"]
    accepted = [f for f in frames if f["type"] == "message"]
    assert refused and len(accepted) <= 4
    assert all(f["code"] == "rate_limited" and "too quickly" in f["message"] and f["retry_after"] >= 1 for f in refused)
    assert {f["client_id"] for f in refused} | {f["client_id"] for f in accepted} == {f"m{i}" for i in range(5)}
    assert sorted(Message.objects.values_list("text", flat=True)) == sorted(f["message"]["text"] for f in accepted)
    ws.close()


def test_it_rate_limits_connections(widget_channel, host_site, live_server_url):
    widget_channel.settings["connections_per_minute"] = 2
    widget_channel.save()
    outcomes = []
    for _ in range(5):
        ws = open_socket(live_server_url, widget_channel.bot.public_key, host_site.origin)
        frame = recv(ws)
        if frame["type"] == "error":
            assert frame["code"] == "rate_limited" and "Too many connections" in frame["message"]
            assert closed_with(ws) == 4429
        outcomes.append(frame["type"])
        ws.close()
    assert "error" in outcomes and outcomes.count("session") <= 4


def test_it_gives_a_returning_visitor_their_history_and_nobody_else(widget_channel, host_site, live_server_url):
    ws, session, history = start(live_server_url, widget_channel, host_site)
    assert history["messages"] == []
    send(ws, type="message", text="Where is my order 1234?", id="q1", email="dana@example.com")
    # The same client id again (a resend after a reconnect) is stored once.
    assert send(ws, type="message", text="Where is my order 1234?", id="q1")["client_id"] == "q1"
    ws.close()

    ws, again, history = start(live_server_url, widget_channel, host_site, session["token"])
    assert again["visitor"] == session["visitor"]
    assert [m["text"] for m in history["messages"]] == ["Where is my order 1234?"]
    assert history["pending"] == history["messages"][0]["id"]  # still waiting for the bot
    assert "stats" not in history["messages"][0]
    ws.close()

    ws, stranger, history = start(live_server_url, widget_channel, host_site)  # no token: a new visitor
    assert stranger["visitor"] != session["visitor"] and history["messages"] == []
    ws.close()

    from bots.models import Conversation

    conversation = Conversation.objects.get()
    assert conversation.external_id == session["visitor"] and conversation.contact_email == "dana@example.com"
    assert conversation.messages.count() == 1


def test_it_hands_the_conversation_to_a_human(widget_channel, host_site, live_server_url):
    from bots.models import Conversation, Message
    from bots.services import HANDOFF_REPLY
    from channels_app.widget.inbound import HANDOFF_TEXT

    ws, _, _ = start(live_server_url, widget_channel, host_site)
    echo = send(ws, type="handoff", id="h1")
    assert echo["type"] == "message" and echo["message"]["sender"] == "customer"
    conversation = Conversation.objects.get()
    assert conversation.bot_paused and conversation.needs_human
    inbound = Message.objects.get(direction="in")
    assert inbound.reply_state == "skipped" and inbound.text == HANDOFF_TEXT  # an older widget sends no words
    assert Message.objects.get(direction="out").text == HANDOFF_REPLY
    ws.close()


def test_the_handoff_request_is_in_the_widgets_language(widget_channel, host_site, live_server_url):
    from bots.models import Message

    ws, _, _ = start(live_server_url, widget_channel, host_site)
    send(ws, type="handoff", id="h2", text="Ich möchte bitte mit einem Menschen sprechen.")
    assert Message.objects.get(direction="in").text == "Ich möchte bitte mit einem Menschen sprechen."
    ws.close()


def test_a_visitor_rates_the_bots_replies_in_their_own_conversation_only(widget_channel, host_site, live_server_url):
    from bots import services
    from bots.models import Message

    ws, session, _ = start(live_server_url, widget_channel, host_site)
    echo = send(ws, type="message", text="Do you fix e-bikes?", id="q1")
    question = Message.objects.get(id=echo["message"]["id"])
    reply, _ = services.record_reply(question, "Yes, every make.", {})

    def rate(sock, **frame):
        sock.send(json.dumps({"type": "rate", **frame}))
        return frames_until(sock, lambda f: f["type"] in ("rated", "error"))[-1]

    assert rate(ws, message=reply.id, rating=-1) == {"type": "rated", "message": reply.id, "rating": -1}
    assert rate(ws, message=reply.id, rating=1) == {"type": "rated", "message": reply.id, "rating": 1}  # changed
    assert Message.objects.get(id=reply.id).rating == 1
    assert rate(ws, message=question.id, rating=1)["code"] == "not_found"  # the visitor's own message
    for bad in ({"message": reply.id, "rating": 5}, {"message": str(reply.id), "rating": 1}, {"rating": 1},
                {"message": reply.id, "rating": True}):
        assert rate(ws, **bad)["code"] == "bad_frame", bad
    ws.close()

    stranger, _, _ = start(live_server_url, widget_channel, host_site)  # another visitor, no conversation yet
    assert rate(stranger, message=reply.id, rating=-1)["code"] == "not_found"
    send(stranger, type="message", text="Hello", id="s1")  # now with a conversation of their own
    assert rate(stranger, message=reply.id, rating=-1)["code"] == "not_found"
    stranger.close()
    assert Message.objects.get(id=reply.id).rating == 1

    ws, _, history = start(live_server_url, widget_channel, host_site, session["token"])
    assert [(m["text"], m["rating"]) for m in history["messages"]] == [("Do you fix e-bikes?", None),
                                                                     ("Yes, every make.", 1)]
    ws.close()


def test_a_lone_surrogate_is_stored_as_replacement_text_and_a_surrogate_token_is_a_bad_token(
    widget_channel, host_site, live_server_url
):
    from bots.models import Message

    # JSON may escape half an emoji ("\ud83d"): valid JSON, but no UTF-8 text the database can keep
    ws, _, _ = start(live_server_url, widget_channel, host_site)
    echo = send(ws, type="message", text="hi \ud83d there", id="sur-1")
    assert echo["type"] == "message" and echo["message"]["text"] == "hi \ufffd there"
    assert Message.objects.get().text == "hi \ufffd there"
    ws.close()

    ws = open_socket(live_server_url, widget_channel.bot.public_key, host_site.origin, hello=False)
    ws.send(json.dumps({"type": "hello", "token": "\ud800:x"}))
    assert recv(ws)["code"] == "bad_token" and closed_with(ws) == 4401


def test_one_address_minting_new_visitors_cannot_spend_the_whole_bots_budget(widget_channel, host_site, live_server_url):
    """Tokens are free: each new visitor has its own per-visitor budget, but not its own address."""
    from bots.models import Message

    widget_channel.settings["ip_messages_per_minute"] = 2
    widget_channel.save()
    frames = []
    for i in range(5):  # five fresh visitors, all from 127.0.0.1, one message each
        ws, _, _ = start(live_server_url, widget_channel, host_site)
        frames.append(send(ws, type="message", text=f"message {i}", id=f"m{i}"))
        ws.close()
    refused = [f for f in frames if f["type"] == "error"]
    assert refused and all(f["code"] == "rate_limited" for f in refused)
    assert Message.objects.count() == 5 - len(refused) <= 4
