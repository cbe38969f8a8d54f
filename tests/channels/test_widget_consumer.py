"""The widget's websocket consumer in this process (an ASGI communicator: no server, no workers).

What an open socket does when the manager changes the widget under it (turned off, this site
taken off the allow-list, lower limits), which conversation events reach the visitor, and the
pre-chat email's length. Messages are stored for real; no worker answers them here.
``transactional_db`` because channels' database_sync_to_async closes the connection between calls.
"""
import json

import pytest
from asgiref.sync import async_to_sync
from asgiref.testing import ApplicationCommunicator

from bots import events
from bots.models import Conversation, Message
from channels_app.widget import inbound
from channels_app.widget.consumer import WidgetConsumer

SHOP = "https://shop.example"


pytestmark = pytest.mark.usefixtures("fresh_channel_layer")  # tests/conftest.py


@pytest.fixture
def widget(transactional_db, acme, acme_bot):
    """Acme's bot, its widget allowed on the shop's site."""
    from channels_app.models import ChannelConfig

    return ChannelConfig.objects.create(organization=acme, bot=acme_bot, kind="widget",
                                        settings={"allowed_origins": [SHOP]})


@pytest.fixture
def no_settings_cache(monkeypatch):
    """Read the widget's settings on every frame (the socket may keep them a few seconds)."""
    monkeypatch.setattr(inbound, "OPTIONS_FRESH_S", 0)


class Socket(ApplicationCommunicator):
    """A widget.js stand-in: opens, says hello, sends frames, reads frames."""

    def __init__(self, public_key, origin=SHOP):
        super().__init__(WidgetConsumer.as_asgi(), {
            "type": "websocket",
            "path": f"/ws/widget/{public_key}/",
            "headers": [(b"host", b"testserver"), (b"origin", origin.encode())],
            "query_string": b"",
            "client": ["127.0.0.1", 50000],
            "subprotocols": [],
            "url_route": {"args": (), "kwargs": {"public_key": public_key}},
        })

    async def open(self):
        """Connect and say hello: the session and history frames."""
        await self.send_input({"type": "websocket.connect"})
        assert (await self.receive_output(timeout=30))["type"] == "websocket.accept"
        await self.send(type="hello", token="")
        return await self.frame(), await self.frame()

    async def send(self, **frame):
        await self.send_input({"type": "websocket.receive", "text": json.dumps(frame)})

    async def frame(self, timeout=30):
        output = await self.receive_output(timeout)
        return json.loads(output["text"]) if output["type"] == "websocket.send" else output

    async def frames_until(self, predicate, timeout=30):
        frames = []
        while not frames or not predicate(frames[-1]):
            frames.append(await self.frame(timeout))
        return frames

    async def close(self):
        await self.send_input({"type": "websocket.disconnect", "code": 1000})
        await self.wait(timeout=5)


def db(function, *args):
    from channels.db import database_sync_to_async

    return database_sync_to_async(function)(*args)


def turn_off(widget):
    widget.enabled = False
    widget.save()


def remove_the_shop(widget):
    widget.settings["allowed_origins"] = ["https://another-shop.example"]
    widget.save()


@pytest.mark.parametrize("revoke", [turn_off, remove_the_shop], ids=["widget turned off", "site removed"])
def test_an_open_socket_is_closed_once_the_manager_revokes_the_widget(widget, no_settings_cache, revoke):
    async def chat():
        ws = Socket(widget.bot.public_key)
        session, _ = await ws.open()
        assert session["type"] == "session"
        await ws.send(type="message", id="m1", text="Do you sell tandems?")
        first = (await ws.frames_until(lambda f: f.get("client_id") == "m1"))[-1]
        await db(revoke, widget)
        await ws.send(type="message", id="m2", text="Hello?")
        refusal = (await ws.frames_until(lambda f: f.get("type") in ("error", "websocket.close")))[-1]
        closed = await ws.frame()
        await ws.close()
        return first, refusal, closed

    first, refusal, closed = async_to_sync(chat)()
    assert first["type"] == "message"
    assert refusal == {"type": "error", "code": "forbidden_origin",
                       "message": "This website is not allowed to use this chat."}
    assert closed == {"type": "websocket.close", "code": 4403}
    # (a worker of the suite may have answered the first: only the customer's side counts here)
    assert list(Message.objects.filter(direction="in").values_list("text", flat=True)) == ["Do you sell tandems?"]


def test_an_open_socket_follows_lowered_limits(widget, no_settings_cache):
    async def chat():
        ws = Socket(widget.bot.public_key)
        await ws.open()
        await ws.send(type="message", id="m1", text="x" * 30)
        first = (await ws.frames_until(lambda f: f.get("client_id") == "m1"))[-1]
        widget.settings.update(max_message_chars=20, messages_per_minute=1)
        await db(widget.save)
        await ws.send(type="message", id="m2", text="x" * 30)
        # (a worker of the suite may be answering m1 meanwhile: its reply events come in between)
        too_long = (await ws.frames_until(lambda f: f.get("client_id") == "m2"))[-1]
        await ws.send(type="message", id="m3", text="short")
        too_fast = (await ws.frames_until(lambda f: f.get("client_id") == "m3"))[-1]
        await ws.close()
        return first, too_long, too_fast

    first, too_long, too_fast = async_to_sync(chat)()
    assert first["type"] == "message"
    assert (too_long["code"], too_long["client_id"]) == ("too_long", "m2")
    assert (too_fast["code"], too_fast["client_id"]) == ("rate_limited", "m3")
    assert Message.objects.filter(direction="in").count() == 1


def test_a_failed_reply_reaches_the_visitor(widget):
    """The inference worker pushes ``reply.error`` when it cannot answer: the widget stops its typing dots."""
    async def chat():
        ws = Socket(widget.bot.public_key)
        await ws.open()
        await ws.send(type="message", id="m1", text="Are you there?")
        echo = (await ws.frames_until(lambda f: f.get("client_id") == "m1"))[-1]
        conversation_id = await db(lambda: Conversation.objects.get().id)
        await db(lambda: events.push(conversation_id, "reply.error", reply_to=echo["message"]["id"]))
        await db(lambda: events.push(conversation_id, "reply.start", reply_to=0))  # a marker: all before it arrived
        frames = await ws.frames_until(lambda f: f["type"] == "reply.start" and f.get("reply_to") == 0)
        await ws.close()
        return echo, frames

    echo, frames = async_to_sync(chat)()
    errors = [f for f in frames if f["type"] == "reply.error"]
    assert {"type": "reply.error", "reply_to": echo["message"]["id"]} in errors


def test_the_pre_chat_email_is_at_most_254_characters(widget):
    local = "a" * 64

    def address(length):  # a valid address of ``length`` characters (labels of at most 63)
        rest = length - len(local) - 1 - 63 - 1 - 63 - 1 - 4
        return f"{local}@{'b' * 63}.{'c' * 63}.{'d' * rest}.com"

    async def chat():
        ws = Socket(widget.bot.public_key)
        await ws.open()
        await ws.send(type="message", id="m1", text="Hi", email=address(255))
        refused = await ws.frame()
        await ws.send(type="message", id="m2", text="Hi", email=address(254))
        taken = (await ws.frames_until(lambda f: f.get("client_id") == "m2"))[-1]
        await ws.close()
        return refused, taken

    assert len(address(255)) == 255
    refused, taken = async_to_sync(chat)()
    assert (refused["code"], refused["client_id"]) == ("bad_email", "m1")
    assert taken["type"] == "message"
    assert Conversation.objects.get().contact_email == address(254)
    assert Message.objects.filter(direction="in").count() == 1


def test_a_message_sent_again_gets_its_echo_even_past_the_rate_limit(widget):
    """After a reload the widget sends again what it had not seen echoed; it is no new message, so
    the limit must not refuse it (the widget would mark it failed and put its words back to send)."""
    widget.settings.update(messages_per_minute=1)
    widget.save()

    async def chat():
        ws = Socket(widget.bot.public_key)
        await ws.open()
        echoes = []
        for _ in range(2):
            await ws.send(type="message", id="m1", text="Do you sell tandems?")
            echoes.append((await ws.frames_until(lambda f: f.get("client_id") == "m1"))[-1])
        await ws.close()
        return echoes

    first, again = async_to_sync(chat)()
    assert first["type"] == again["type"] == "message"
    assert again["message"]["id"] == first["message"]["id"]
    assert Message.objects.filter(direction="in").count() == 1
