"""The live test chat's websocket (bots.consumers.PreviewConsumer), without a browser.

Only a manager of the bot's organisation may connect (else close 4403); a message
goes through services.receive on the "preview" channel and the conversation's
live events reach the socket. No inference worker runs here: the reply itself is
covered by the browser test. ``transactional_db`` because channels' database_sync_to_async
closes the connection between calls.
"""
import json

from asgiref.sync import async_to_sync
from asgiref.testing import ApplicationCommunicator

import pytest

from bots import events
from bots.consumers import PreviewConsumer
from bots.models import Conversation, Message


pytestmark = pytest.mark.usefixtures("fresh_channel_layer")  # tests/conftest.py


class Socket(ApplicationCommunicator):
    """A minimal websocket client for an ASGI consumer (channels.testing needs daphne)."""

    async def connect(self):
        await self.send_input({"type": "websocket.connect"})
        response = await self.receive_output(timeout=30)
        return response["type"] == "websocket.accept", response

    async def send_json_to(self, data):
        await self.send_input({"type": "websocket.receive", "text": json.dumps(data)})

    async def receive_json_from(self, timeout=30):
        response = await self.receive_output(timeout)
        assert response["type"] == "websocket.send", response
        return json.loads(response["text"])

    async def disconnect(self, code=1000):
        await self.send_input({"type": "websocket.disconnect", "code": code})
        await self.wait(timeout=5)


def signed_in_session(user):
    """The session a browser signed in as ``user`` sends (what AuthMiddlewareStack puts in the scope).
    Made in a thread of its own that closes its database connection: the helpers below call this
    from inside their event loop, whose thread would otherwise keep a connection to the test database."""
    from concurrent.futures import ThreadPoolExecutor
    from importlib import import_module

    from django.conf import settings
    from django.db import connection
    from django.test import Client

    store = import_module(settings.SESSION_ENGINE).SessionStore
    if not user.is_authenticated:
        return store()

    def log_in():
        try:
            client = Client()
            client.force_login(user)
            return client.session.session_key
        finally:
            connection.close()

    with ThreadPoolExecutor(1) as pool:
        return store(pool.submit(log_in).result())


def communicator(user, bot_id, origin="http://testserver", session=None):
    scope = {
        "type": "websocket",
        "path": f"/ws/preview/{bot_id}/",
        "headers": [(b"host", b"testserver")] + ([(b"origin", origin.encode())] if origin else []),
        "subprotocols": [],
        "user": user,
        "session": session if session is not None else signed_in_session(user),
        "url_route": {"args": (), "kwargs": {"bot_id": bot_id}},
    }
    return Socket(PreviewConsumer.as_asgi(), scope)


async def _refused(user, bot_id, **origin):
    comm = communicator(user, bot_id, **origin)
    connected, _ = await comm.connect()
    assert connected  # accepted first, so the browser sees the close code
    closed = await comm.receive_output(timeout=30)
    await comm.disconnect()
    return closed


def test_it_refuses_another_organisations_manager(transactional_db, charlie, acme_bot):
    closed = async_to_sync(_refused)(charlie, acme_bot.id)
    assert closed == {"type": "websocket.close", "code": 4403}


def test_it_refuses_an_agent(transactional_db, bob, acme_bot):
    assert async_to_sync(_refused)(bob, acme_bot.id)["code"] == 4403


@pytest.mark.parametrize("origin", ["https://evil.example", "http://testserver.evil.example", "null", ""])
def test_it_refuses_the_bots_own_manager_from_another_sites_page(transactional_db, alice, acme_bot, origin):
    assert async_to_sync(_refused)(alice, acme_bot.id, origin=origin)["code"] == 4403


def test_it_refuses_anonymous_users(transactional_db, acme_bot):
    from django.contrib.auth.models import AnonymousUser

    assert async_to_sync(_refused)(AnonymousUser(), acme_bot.id)["code"] == 4403


async def _chat(user, bot_id, other_event):
    comm = communicator(user, bot_id)
    connected, _ = await comm.connect()
    assert connected
    ready = await comm.receive_json_from(timeout=30)
    await comm.send_json_to({"type": "message", "id": "c1", "text": "  Hello there  "})
    accepted = await comm.receive_json_from(timeout=30)
    received = [accepted]
    # The "message" event pushed on commit arrives through the channel layer.
    received.append(await comm.receive_json_from(timeout=30))
    # Any later event of that conversation (e.g. the worker's deltas) is forwarded too.
    await other_event(accepted["conversation_id"])
    received.append(await comm.receive_json_from(timeout=30))
    await comm.send_json_to({"type": "message", "id": "c2", "text": ""})
    received.append(await comm.receive_json_from(timeout=30))
    await comm.disconnect()
    return ready, received


def test_it_stores_the_message_and_forwards_the_conversations_events(transactional_db, alice, acme_bot):
    from channels.db import database_sync_to_async

    async def push_delta(conversation_id):
        await database_sync_to_async(events.push)(conversation_id, "reply.delta", reply_to=1, delta="Hi")

    ready, (accepted, stored, delta, error) = async_to_sync(_chat)(alice, acme_bot.id, push_delta)
    assert ready == {"event": "ready", "bot": acme_bot.id}
    message = Message.objects.get(id=accepted["message_id"])
    assert (message.channel, message.text, message.direction) == ("preview", "Hello there", "in")
    conversation = Conversation.objects.get(id=accepted["conversation_id"])
    assert conversation.external_id.startswith(f"preview-{alice.id}-")
    assert stored["event"] == "message" and stored["message"]["id"] == message.id
    assert delta == {"event": "reply.delta", "reply_to": 1, "delta": "Hi"}
    assert error["event"] == "error"


async def _two_sessions(user, bot_id):
    ids = []
    for _ in range(2):
        comm = communicator(user, bot_id)
        await comm.connect()
        await comm.receive_json_from(timeout=30)
        await comm.send_json_to({"type": "message", "id": "same-client-id", "text": "Hi"})
        ids.append((await comm.receive_json_from(timeout=30))["conversation_id"])
        await comm.send_json_to({"type": "reset"})
        while (await comm.receive_json_from(timeout=30))["event"] != "reset":
            pass
        await comm.send_json_to({"type": "message", "id": "same-client-id", "text": "Hi again"})
        ids.append((await comm.receive_json_from(timeout=30))["conversation_id"])
        await comm.disconnect()
    return ids


def test_it_starts_a_new_conversation_per_session_and_reset(transactional_db, alice, acme_bot):
    ids = async_to_sync(_two_sessions)(alice, acme_bot.id)
    assert len(set(ids)) == 4
    assert Message.objects.filter(channel="preview").count() == 4


async def _chat_then(user, bot_id, session, revoke):
    """Chat once, ``revoke`` the user's right to the session (sync, database), then try again."""
    from channels.db import database_sync_to_async

    comm = communicator(user, bot_id, session=session)
    await comm.connect()
    await comm.receive_json_from(timeout=30)  # ready
    await comm.send_json_to({"type": "message", "id": "c1", "text": "Hi"})
    first = await comm.receive_json_from(timeout=30)
    await comm.receive_json_from(timeout=30)  # the stored message's event
    await database_sync_to_async(revoke)()
    await comm.send_json_to({"type": "message", "id": "c2", "text": "Still there?"})
    closed = await comm.receive_output(timeout=30)
    await comm.disconnect()
    return first, closed


def _sign_out(session):
    def revoke():
        from django.contrib.auth import logout
        from django.test import RequestFactory

        request = RequestFactory().post("/accounts/logout/")
        request.session = session.__class__(session.session_key)
        request.user = None
        logout(request)
    return revoke


def _change_password(user):
    def revoke():
        user.set_password("a-brand-new-passphrase-7")
        user.save()
    return revoke


def _deactivate(user):
    def revoke():
        type(user).objects.filter(id=user.id).update(is_active=False)
    return revoke


@pytest.mark.parametrize("revocation", ["sign out", "password change", "deactivated"])
def test_an_open_preview_closes_once_its_session_no_longer_signs_the_user_in(transactional_db, alice, acme_bot,
                                                                              revocation):
    session = signed_in_session(alice)
    revoke = {"sign out": _sign_out(session), "password change": _change_password(alice),
              "deactivated": _deactivate(alice)}[revocation]
    first, closed = async_to_sync(_chat_then)(alice, acme_bot.id, session, revoke)
    assert first["event"] == "accepted"
    assert closed == {"type": "websocket.close", "code": 4403}
    assert list(Message.objects.filter(channel="preview").values_list("text", flat=True)) == ["Hi"]


def test_a_session_from_before_a_secret_key_rotation_keeps_chatting_and_stays_signed_in(transactional_db, settings,
                                                                                       alice, acme_bot):
    """Django accepts a session hashed under a SECRET_KEY_FALLBACKS key, and on a page moves it to a new
    session key; a socket cannot send the new cookie, so checking it must change nothing."""
    from django.conf import settings as live

    old = "an-old-secret-key-0123456789abcdefghijklmnopqrstuvwxyz"
    settings.SECRET_KEY = old
    session = signed_in_session(alice)
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "a-new-secret-key-9876543210zyxwvutsrqponmlkjihgfedcba", [old]
    assert live.SECRET_KEY_FALLBACKS == [old]

    async def chat_twice():
        comm = communicator(alice, acme_bot.id, session=session)
        await comm.connect()
        await comm.receive_json_from(timeout=30)  # ready
        answers = []
        for n, text in enumerate(["Hi", "Still there?"]):
            await comm.send_json_to({"type": "message", "id": f"c{n}", "text": text})
            answers.append(await comm.receive_json_from(timeout=30))
            await comm.receive_json_from(timeout=30)  # the stored message's event
        await comm.disconnect()
        return answers

    answers = async_to_sync(chat_twice)()
    assert [a["event"] for a in answers] == ["accepted", "accepted"]
    assert session.__class__().exists(session.session_key)  # not moved to a key no browser knows
