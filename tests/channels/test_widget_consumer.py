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

from bots import events, services
from bots.models import Conversation, Message
from channels_app.widget import inbound, live
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

    async def open(self, token=""):
        """Connect and say hello (as ``token``'s visitor, or a new one): the session and history frames."""
        await self.send_input({"type": "websocket.connect"})
        assert (await self.receive_output(timeout=30))["type"] == "websocket.accept"
        await self.send(type="hello", token=token)
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
        await self.wait(timeout=20)


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


def test_a_key_with_a_nul_is_no_widget(widget):
    """``/ws/widget/ab%00cd/``: the key reached PostgreSQL, which cannot compare text holding a NUL
    (a database error, the socket dropped without a word): now the refusal any unknown key gets."""
    refusal, closed = async_to_sync(Socket(widget.bot.public_key + "\x00").open)()
    assert refusal == {"type": "error", "code": "forbidden_origin",
                       "message": "This website is not allowed to use this chat."}
    assert closed == {"type": "websocket.close", "code": 4403}


def marker(conversation_id):
    """Push a ``reply.start`` for no message: a socket listening to the conversation hears it."""
    return db(lambda: events.push(conversation_id, "reply.start", reply_to=0))


def heard_marker(frame):
    return frame["type"] == "reply.start" and frame.get("reply_to") == 0


def test_a_socket_open_while_its_conversation_is_erased_follows_the_new_one(widget):
    """The team erased the conversation while the visitor's tab stayed open: their next message starts a
    new one, and the socket must listen to that one (typing, replies, ratings), not the erased one."""
    async def chat():
        ws = Socket(widget.bot.public_key)
        await ws.open()
        await ws.send(type="message", id="m1", text="Do you sell tandems?")
        await ws.frames_until(lambda f: f.get("client_id") == "m1")
        await db(lambda: services.delete_conversations(Conversation.objects.all()))
        await ws.send(type="message", id="m2", text="Hello again")
        echo = (await ws.frames_until(lambda f: f.get("client_id") == "m2"))[-1]
        history = (await ws.frames_until(lambda f: f["type"] == "history", timeout=20))[-1]
        reply = await db(lambda: services.record_reply(Message.objects.get(id=echo["message"]["id"]), "Yes.", {})[0])
        await marker(reply.conversation_id)
        heard = await ws.frames_until(heard_marker, timeout=20)
        await ws.send(type="rate", message=reply.id, rating=1)
        rated = (await ws.frames_until(lambda f: f["type"] in ("rated", "error")))[-1]
        await ws.close()
        return echo, history, heard, rated

    echo, history, heard, rated = async_to_sync(chat)()
    assert [m["text"] for m in history["messages"]] == ["Hello again"]  # the new conversation, whole
    assert heard[-1] == {"type": "reply.start", "reply_to": 0}
    assert rated["type"] == "rated"


def test_word_of_an_erased_conversation_arriving_late_does_not_pull_the_socket_back(widget):
    """The visitor's first message announces its conversation to all their tabs, this one too (live.follow).
    That word can arrive after the team erased the conversation and the next message started another:
    the socket must stay with the new one (it was taken back to the erased one, deaf to the reply)."""
    async def chat():
        ws = Socket(widget.bot.public_key)
        session, _ = await ws.open()
        await ws.send(type="message", id="m1", text="Do you sell tandems?")
        await ws.frames_until(lambda f: f.get("client_id") == "m1")
        erased = await db(lambda: Conversation.objects.get().id)
        await db(lambda: services.delete_conversations(Conversation.objects.all()))
        await ws.send(type="message", id="m2", text="Hello again")
        echo = (await ws.frames_until(lambda f: f.get("client_id") == "m2"))[-1]
        await ws.frames_until(lambda f: f["type"] == "history", timeout=20)
        current = await db(lambda: Message.objects.get(id=echo["message"]["id"]).conversation_id)
        await db(live.follow, widget.bot.id, session["visitor"], erased)  # the late word
        await marker(current)
        after = await ws.frames_until(lambda f: heard_marker(f) or f["type"] == "history", timeout=20)
        await ws.close()
        return erased, current, after

    erased, current, after = async_to_sync(chat)()
    assert erased != current
    assert after[-1] == {"type": "reply.start", "reply_to": 0}  # not a history frame of the erased one


def upload_a_photo(widget, token, client_id="f1"):
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.test import Client

    photo = SimpleUploadedFile("bike.png", b"\x89PNG\r\n\x1a\n" + bytes(64), content_type="image/png")
    response = Client().post(f"/channels/widget/{widget.bot.public_key}/upload/", {"token": token, "id": client_id, "file": photo},
                             HTTP_ORIGIN=SHOP)
    assert response.status_code == 201, response.content
    return response.json()


@pytest.mark.parametrize("by", ["message", "file"])
def test_a_second_tab_follows_the_conversation_another_tab_starts(widget, by):
    """Two tabs of one visitor, both open before the visitor wrote: what the first starts (a message, or a
    file over HTTP) reaches the second too, history first, then live."""
    async def chat():
        first, second = Socket(widget.bot.public_key), Socket(widget.bot.public_key)
        session, _ = await first.open()
        await second.open(session["token"])
        if by == "message":
            await first.send(type="message", id="m1", text="Do you sell tandems?")
            await first.frames_until(lambda f: f.get("client_id") == "m1")
        else:
            await db(upload_a_photo, widget, session["token"])
        history = (await second.frames_until(lambda f: f["type"] == "history", timeout=20))[-1]
        await marker(await db(lambda: Conversation.objects.get().id))
        await second.frames_until(heard_marker, timeout=20)
        await first.close()
        await second.close()
        return history

    history = async_to_sync(chat)()
    assert history["messages"][0]["direction"] == "in"
    assert history["messages"][0]["text"] == ("Do you sell tandems?" if by == "message" else "")


def test_a_socket_that_joins_a_conversation_by_writing_gets_it_whole(widget):
    """A tab that opened before the conversation existed, and heard nothing of it, writes: it gets the
    conversation so far, not only its own echo."""
    async def chat():
        ws = Socket(widget.bot.public_key)
        session, _ = await ws.open()
        # another tab's message, stored without this socket hearing of it
        await db(lambda: services.receive(bot=widget.bot, channel="widget", thread_id=session["visitor"],
                                          text="From the other tab", external_id=f"{session['visitor']}:x1",
                                          meta={"widget": True}, answer=False))
        await ws.send(type="message", id="m2", text="And from this one")
        frames = await ws.frames_until(lambda f: f["type"] == "history", timeout=20)
        await ws.close()
        return frames[-1]

    history = async_to_sync(chat)()
    assert [m["text"] for m in history["messages"]] == ["From the other tab", "And from this one"]


@pytest.fixture
def short_group_expiry(settings):
    """The channel layer forgets a group's members after a second (as it does after a day)."""
    layers = {name: {**layer, "CONFIG": {**layer.get("CONFIG", {}), "group_expiry": 1}}
              for name, layer in settings.CHANNEL_LAYERS.items()}
    settings.CHANNEL_LAYERS = layers


@pytest.mark.parametrize("keeps_it", ["the socket's timer", "the widget's ping"])
def test_an_open_socket_keeps_listening_past_the_layers_group_expiry(widget, short_group_expiry, keeps_it,
                                                                    monkeypatch):
    """A widget left open over a weekend must still show the team's Monday answer: the layer drops
    members added more than ``group_expiry`` ago from a group, unless they were added again since."""
    import asyncio

    from channels_app.widget import consumer

    if keeps_it == "the widget's ping":
        monkeypatch.setattr(consumer, "refresh_interval", lambda layer: 3600)

    async def chat():
        ws = Socket(widget.bot.public_key)
        await ws.open()
        await ws.send(type="message", id="m1", text="Do you sell tandems?")
        await ws.frames_until(lambda f: f.get("client_id") == "m1")
        for _ in range(3):  # a weekend
            await asyncio.sleep(1)
            if keeps_it == "the widget's ping":
                await ws.send(type="ping")
                await ws.frames_until(lambda f: f["type"] == "pong")
        await marker(await db(lambda: Conversation.objects.get().id))
        heard = await ws.frames_until(heard_marker, timeout=20)
        await ws.close()
        return heard

    assert async_to_sync(chat)()[-1] == {"type": "reply.start", "reply_to": 0}
