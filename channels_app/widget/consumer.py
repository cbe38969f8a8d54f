"""``WidgetConsumer``: the website widget's websocket, ``/ws/widget/<public_key>/``.

Thin: the decisions live in ``inbound``. The socket's first frame is
``{"type": "hello", "token": "<visitor token or empty>"}``: the token never rides in the
URL, where proxies and access logs would keep it. No hello within
``CHATNEXUS_WIDGET_HELLO_TIMEOUT_S``, or another first frame: closed with 4400. (A
``?token=`` in the URL is still read, only for widget scripts loaded before the hello.)
Then: origin allow-list (4403), visitor token (4401 when tampered; a new one is issued
when absent), connection rate limit (4429), then the ``session`` and ``history`` frames.
On each later frame: the widget's settings again (``inbound.recheck``: turned off or this site
removed since: 4403, nothing stored), validate, rate-limit with the current limits, ``receive()``;
other problems answer with an ``error`` frame and keep the socket. A ``sync`` frame (sent after a
file upload over HTTP, uploads.py) joins the visitor's conversation if the socket had none yet,
then resends history.
Conversation events from ``bots.events.push`` are forwarded as they come.
"""
import asyncio
import json
from urllib.parse import parse_qs

from django.conf import settings

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from bots.events import group_for

from . import inbound

FORWARDED_EVENTS = {"message", "reply.start", "reply.delta", "reply.done", "reply.cancelled", "reply.error",
                    "conversation"}


class WidgetConsumer(AsyncWebsocketConsumer):
    session = None
    group = None
    greeted = False  # the hello frame (or a legacy URL token) has been taken
    deadline = None

    async def connect(self):
        # Accept first so the refusal reason reaches the widget (a rejected handshake is a bare 403).
        await self.accept()
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        legacy_token = (query.get("token") or [""])[0]
        if legacy_token:
            await self._open(legacy_token)
        else:
            self.deadline = asyncio.ensure_future(self._hello_deadline())

    async def _hello_deadline(self):
        await asyncio.sleep(settings.CHATNEXUS_WIDGET_HELLO_TIMEOUT_S)
        if not self.greeted:
            self.greeted = True
            await self._refuse(inbound.Refusal("bad_frame", "No hello frame arrived; reconnect to chat.", close_code=4400))

    async def _refuse(self, refusal):
        """Tell the widget why (an ``error`` frame), then close with the refusal's code."""
        await self.send_json(refusal.frame())
        await self.close(code=refusal.close_code)

    async def _open(self, token):
        self.greeted = True
        headers = dict(self.scope.get("headers") or [])
        origin = headers.get(b"origin", b"").decode("latin-1")
        client_ip = (self.scope.get("client") or ["?"])[0]
        public_key = self.scope["url_route"]["kwargs"]["public_key"]
        result = await database_sync_to_async(inbound.open_session)(public_key, origin, token, client_ip)
        if isinstance(result, inbound.Refusal):
            await self._refuse(result)
            return
        self.session = result
        await self.send_json({"type": "session", "token": result.token, "visitor": result.visitor_id})
        if result.conversation_id is not None:
            await self._join(result.conversation_id)
        await self.send_json(await database_sync_to_async(inbound.history)(result.conversation_id))

    async def disconnect(self, code):
        if self.deadline is not None:
            self.deadline.cancel()
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        if not self.greeted:
            self.deadline.cancel()
            token = inbound.parse_hello(text_data)
            if isinstance(token, inbound.Refusal):
                self.greeted = True
                await self._refuse(token)
                return
            await self._open(token)
            return
        if self.session is None:
            return
        refusal = await database_sync_to_async(inbound.recheck)(self.session)
        if refusal is not None:  # the manager turned the widget off or removed this site since it opened
            self.session = None
            await self._refuse(refusal)
            return
        frame = inbound.parse_frame(text_data, self.session.options)
        if isinstance(frame, inbound.Refusal):
            await self.send_json(frame.frame())
            return
        if frame["type"] == "ping":
            await self.send_json({"type": "pong"})
            return
        if frame["type"] == "sync":  # a file sent over HTTP may have started the conversation: follow it
            if self.group is None:
                conversation_id = await database_sync_to_async(inbound.conversation_of)(self.session.bot_id,
                                                                                       self.session.visitor_id)
                if conversation_id is not None:  # join, then resend what was pushed before we listened
                    self.session.conversation_id = conversation_id
                    await self._join(conversation_id)
                    await self.send_json(await database_sync_to_async(inbound.history)(conversation_id))
            return
        if frame["type"] == "rate":
            result = await database_sync_to_async(inbound.rate)(self.session, frame)
            await self.send_json(result.frame() if isinstance(result, inbound.Refusal) else result)
            return
        result = await database_sync_to_async(inbound.take_message)(self.session, frame)
        if isinstance(result, inbound.Refusal):
            await self.send_json({**result.frame(), "client_id": frame["id"]})
            return
        conversation_id, echo = result
        if self.group is None:
            # First message: the conversation exists now. Events pushed before we joined
            # (the echo, perhaps a fast reply) are resent; the reply's deltas follow live.
            self.session.conversation_id = conversation_id
            await self._join(conversation_id)
            await self.send_json(echo)
            late = await database_sync_to_async(inbound.reply_if_done)(echo["message"]["id"])
            if late:
                await self.send_json(late)
        else:
            await self.send_json(echo)

    async def conversation_event(self, event):
        kind = event.get("event")
        if kind not in FORWARDED_EVENTS:
            return
        frame = {"type": kind}
        if kind in ("reply.start", "reply.delta", "reply.done", "reply.cancelled", "reply.error"):
            frame["reply_to"] = event.get("reply_to")
        if kind == "reply.delta":
            frame["delta"] = event.get("delta", "")
        if "message" in event and isinstance(event["message"], dict):
            frame["message"] = {k: event["message"].get(k)
                                for k in ("id", "direction", "sender", "text", "created", "reply_to", "attachments")}
        if kind == "conversation":
            frame.update({k: event[k] for k in ("bot_paused", "status") if k in event})
        await self.send_json(frame)

    async def _join(self, conversation_id):
        self.group = group_for(conversation_id)
        await self.channel_layer.group_add(self.group, self.channel_name)

    async def send_json(self, data):
        await self.send(text_data=json.dumps(data))
