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
file upload over HTTP, uploads.py) joins the visitor's conversation if the socket is not in it
yet, then resends history.
Conversation events from ``bots.events.push`` are forwarded as they come.

The socket listens to two groups: its conversation's, and its visitor's (``live.visitor_group``,
every tab of the visitor). Whenever the conversation is new to the socket (the visitor's first
message, a conversation the team erased and the next message started again, one that another tab
or an upload started: ``live.follow``, whose event only says "look again": the database names the
conversation), the socket leaves the old group, joins the new one and
sends a ``history`` frame: what was pushed before it listened. The layer forgets a group's members
``group_expiry`` after they joined (a day by default), so the socket joins again on every frame
from the widget (widget.js pings every few minutes) and on a timer (``refresh_interval``).
"""
import asyncio
import contextlib
import json
import logging
from urllib.parse import parse_qs

from django.conf import settings

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from bots.events import group_for

from . import inbound, live
from . import options as widget_options

log = logging.getLogger(__name__)

FORWARDED_EVENTS = {"message", "reply.start", "reply.delta", "reply.done", "reply.cancelled", "reply.error",
                    "conversation"}
GROUP_REFRESH_S = 3600  # an open socket joins its groups again at least this often (refresh_interval)


def refresh_interval(layer) -> float:
    """Seconds between an open socket's joins: well inside the layer's ``group_expiry``."""
    return min(GROUP_REFRESH_S, getattr(layer, "group_expiry", 86400) / 4)


class WidgetConsumer(AsyncWebsocketConsumer):
    session = None
    group = None  # the conversation's group, once the visitor has one
    visitor = None  # the group of the visitor's sockets, every tab (live.visitor_group)
    greeted = False  # the hello frame (or a legacy URL token) has been taken
    deadline = None
    refresher = None  # the task that joins the groups again (refresh_interval)
    joined_at = float("-inf")  # when the socket last joined its groups again (_listen)

    async def connect(self):
        self.listening = asyncio.Lock()  # one change of groups at a time (a frame, an event, the timer)
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
        own = widget_options.own_origin(self.scope.get("scheme", "ws"), headers.get(b"host", b"").decode("latin-1"))
        client_ip = (self.scope.get("client") or ["?"])[0]
        public_key = self.scope["url_route"]["kwargs"]["public_key"]
        result = await database_sync_to_async(inbound.open_session)(public_key, origin, token, client_ip, own)
        if isinstance(result, inbound.Refusal):
            await self._refuse(result)
            return
        self.session = result
        self.visitor = live.visitor_group(result.bot_id, result.visitor_id)
        await self.channel_layer.group_add(self.visitor, self.channel_name)
        await self.send_json({"type": "session", "token": result.token, "visitor": result.visitor_id})
        if result.conversation_id is not None:
            await self._follow(result.conversation_id)
        await self.send_json(await database_sync_to_async(inbound.history)(result.conversation_id))
        self.refresher = asyncio.ensure_future(self._keep_listening())

    async def disconnect(self, code):
        for task in (self.deadline, self.refresher):
            if task is not None:
                task.cancel()
        if self.refresher is not None:  # a join it already sent must not land after the discards below
            with contextlib.suppress(asyncio.CancelledError):
                await self.refresher
        async with self.listening:
            for group in (self.group, self.visitor):
                if group:
                    await self.channel_layer.group_discard(group, self.channel_name)

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
        # the widget is there: stay in the groups (its ping every few minutes is for this)
        await self._listen(at_most_every=getattr(self.channel_layer, "group_expiry", 86400) / 4)
        if frame["type"] == "ping":
            await self.send_json({"type": "pong"})
            return
        if frame["type"] == "sync":  # a file sent over HTTP may have started the conversation: follow it
            await self._follow_the_visitors()
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
        await self.send_json(echo)
        if await self._follow(conversation_id):
            # A conversation new to this socket: the first message, one another tab started that we did
            # not hear of, or a new one after the team erased ours. All of it, with what was pushed before
            # we listened (a fast reply); the visitor's other tabs follow too.
            await self._send_history()
            await sync_to_async(live.follow)(self.session.bot_id, self.session.visitor_id, conversation_id)

    async def widget_conversation(self, event):
        """``live.follow``: another tab's message or an upload started the visitor's conversation.

        The word may be late: this very socket's first message announced its conversation, the team
        erased it, the next message started another. So the database says which conversation is the
        visitor's now, not the event (following the event took the socket back to the erased one)."""
        if self.session is not None:
            await self._follow_the_visitors()

    async def _follow_the_visitors(self):
        """Follow the visitor's conversation as the database has it now, with its history if it is new
        to the socket."""
        conversation_id = await database_sync_to_async(inbound.conversation_of)(self.session.bot_id,
                                                                               self.session.visitor_id)
        if conversation_id is not None and await self._follow(conversation_id):
            await self._send_history()

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

    async def _follow(self, conversation_id) -> bool:
        """Listen to ``conversation_id``'s events, no longer to the conversation before (erased); False
        when the socket already did."""
        group = group_for(conversation_id)
        async with self.listening:
            if group == self.group:
                return False
            if self.group:
                await self.channel_layer.group_discard(self.group, self.channel_name)
            self.group, self.session.conversation_id = group, conversation_id
            await self.channel_layer.group_add(group, self.channel_name)
        return True

    async def _send_history(self):
        await self.send_json(await database_sync_to_async(inbound.history)(self.session.conversation_id))

    async def _listen(self, at_most_every: float = 0.0):
        """Join the groups again: the layer drops a member ``group_expiry`` after it joined. Not again
        within ``at_most_every`` seconds of the last time (a frame from the widget: a flood of them
        is not a flood of writes to the layer)."""
        now = asyncio.get_running_loop().time()
        if now - self.joined_at < at_most_every:
            return
        async with self.listening:
            for group in (self.visitor, self.group):
                if group:
                    await self.channel_layer.group_add(group, self.channel_name)
            self.joined_at = now

    async def _keep_listening(self):
        """A socket nobody writes on for days (a tab left open) still hears the team's answer."""
        while True:
            await asyncio.sleep(refresh_interval(self.channel_layer))
            try:
                await self._listen()
            except Exception:  # noqa: BLE001 - the layer's hiccup: try again next time
                log.warning("widget: could not rejoin the socket's groups", exc_info=True)

    async def send_json(self, data):
        await self.send(text_data=json.dumps(data))
