"""The builder's live test chat: a websocket at ``ws/preview/<bot_id>/``.

Only a signed-in manager (owner/admin) of the bot's organisation, from a page of this site (its
Origin), may connect; anyone else is closed with code 4403, and so is an open socket whose session
stops signing its user in (signed out, password changed, deactivated) or who is no longer a
manager: both are checked again on each message. A user message goes through the same
pipeline as every channel (``services.receive`` on channel ``"preview"``, which
answers from the bot's *draft*), and the conversation's live events — the
inference worker's ``reply.start`` / ``reply.delta`` / ``reply.done`` and stored
``message`` events — are forwarded to the browser as JSON.

A handoff (a trigger phrase, or a reply the model could not give) pauses the bot as in any
chat, but a test chat has no team to answer it and no inbox to give it back from: the next
test message gives the conversation back to the bot first, so the admin can keep testing.

Each socket (and each "reset") is its own preview conversation: the thread id
carries a random nonce, so two tabs never share a history.
"""
import secrets
from importlib import import_module

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.contrib import auth
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils.crypto import constant_time_compare

from channels_app.widget.options import normalize_origin, own_origin

from . import events, services
from .models import Bot, Conversation, Membership

FORBIDDEN = 4403
MAX_TEXT = 2000
MAX_CLIENT_ID = 100


def same_origin(scope) -> bool:
    """The socket was opened by a page of this site: its Origin, scheme included, is PUBLIC_URL's or
    the site's own as the socket reached it (its scheme and a Host the site answers on, in
    ALLOWED_HOSTS: ``own_origin``, as the widget checks its Try page). Browsers always send Origin on
    websockets; the session cookie alone (SameSite=Lax) would let a page of a sibling subdomain in.
    A site published over https takes no http page: behind a proxy that ends TLS the socket looks
    plain (ws) and its Host is the public one, so a page served over plain http on that name (a
    network attacker's) would otherwise pass as the site's own."""
    headers = dict(scope.get("headers") or [])
    origin = normalize_origin(headers.get(b"origin", b"").decode("latin-1"))  # '' for none or "null"
    public = normalize_origin(settings.PUBLIC_URL)
    if not origin or (public.startswith("https://") and not origin.startswith("https://")):
        return False
    return origin in {public, own_origin(scope.get("scheme", "ws"), headers.get(b"host", b"").decode("latin-1"))}


class PreviewConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        self.groups_joined = set()
        self.nonce = secrets.token_hex(8)
        self.bot = None
        if same_origin(self.scope):  # another site's page cannot drive a signed-in manager's preview
            self.bot = await self._bot_for(self.scope.get("user"), self.scope["url_route"]["kwargs"]["bot_id"])
        await self.accept()  # accept first so the close code reaches the browser
        if self.bot is None:
            await self.close(code=FORBIDDEN)
            return
        await self.send_json({"event": "ready", "bot": self.bot.id})

    async def disconnect(self, code):
        for group in list(getattr(self, "groups_joined", ())):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive_json(self, content, **kwargs):
        if getattr(self, "bot", None) is None:
            return
        kind = content.get("type") if isinstance(content, dict) else None
        if kind == "reset":
            await self._reset()
        elif kind == "message":
            await self._message(content)
        else:
            await self.send_json({"event": "error", "error": "unknown message type"})

    async def conversation_event(self, event):
        """Forward a live event of one of our preview conversations (``bots.events.push``)."""
        await self.send_json({key: value for key, value in event.items() if key != "type"})

    # -----------------------------------------------------------------------

    async def _message(self, content):
        text = content.get("text")
        client_id = str(content.get("id") or "")[:MAX_CLIENT_ID]
        if not isinstance(text, str) or not text.strip():
            await self.send_json({"event": "error", "client_id": client_id, "error": "Type a message first."})
            return
        if len(text) > MAX_TEXT:
            await self.send_json({"event": "error", "client_id": client_id, "error": f"Keep it under {MAX_TEXT} characters."})
            return
        received = await database_sync_to_async(self._receive_and_join)(text.strip(), client_id)
        if received is None:  # bot deleted or membership revoked since connecting
            await self.close(code=FORBIDDEN)
            return
        await self.send_json(
            {"event": "accepted", "client_id": client_id, "message_id": received.message.id,
             "conversation_id": received.conversation.id}
        )  # fmt: skip

    def _receive_and_join(self, text, client_id):
        # Join the conversation's group inside the transaction that stores the
        # message: the reply task is queued only on commit, so no event is missed.
        # The bot is reloaded (and access re-checked) so the draft is the current one; so is the
        # user, from the session as it is now: signed out, password changed or deactivated ends it.
        bot = _managed_bot(_session_user(self.scope), self.bot.id)
        if bot is None:
            return None
        thread_id = f"preview-{self.scope['user'].id}-{self.nonce}"
        with transaction.atomic():
            handed_off = Conversation.objects.filter(bot=bot, channel="preview", external_id=thread_id,
                                                     bot_paused=True).first()
            if handed_off is not None:  # nobody would ever answer it: the bot takes the next message
                services.set_bot_paused(handed_off, False)
            received = services.receive(
                bot=bot,
                channel="preview",
                thread_id=thread_id,
                text=text,
                external_id=f"preview-{self.nonce}-{client_id}" if client_id else "",
            )
            group = events.group_for(received.conversation.id)
            if group not in self.groups_joined:
                async_to_sync(self.channel_layer.group_add)(group, self.channel_name)
                self.groups_joined.add(group)
        return received

    async def _reset(self):
        for group in list(self.groups_joined):
            await self.channel_layer.group_discard(group, self.channel_name)
        self.groups_joined.clear()
        self.nonce = secrets.token_hex(8)
        await self.send_json({"event": "reset"})

    @database_sync_to_async
    def _bot_for(self, user, bot_id):
        return _managed_bot(user, bot_id)


def _session_user(scope):
    """The user the socket's session signs in now, if still the one it connected as; else None.
    The session is read again from its store (the scope's copy was loaded at connect) and checked
    as Django checks it for a page, without its side effects (no cycle_key() or flush(), whose new
    cookie no socket frame could carry): a sign-out deletes it, a password change leaves its auth
    hash stale (a SECRET_KEY_FALLBACKS key still verifies it), an inactive user is refused."""
    session = scope.get("session")
    key = getattr(session, "session_key", None) if session is not None else None
    connected = scope.get("user")
    if not key or connected is None or not connected.is_authenticated:
        return None
    data = import_module(settings.SESSION_ENGINE).SessionStore(key).load()  # {} once deleted
    if str(data.get(auth.SESSION_KEY)) != str(connected.pk):
        return None
    user = get_user_model().objects.filter(pk=connected.pk, is_active=True).first()
    stored = data.get(auth.HASH_SESSION_KEY) or ""
    if user is None or not stored:
        return None
    hashes = [user.get_session_auth_hash(), *user.get_session_auth_fallback_hash()]
    return user if any(constant_time_compare(stored, known) for known in hashes) else None


def _managed_bot(user, bot_id):
    """The bot, if ``user`` is an owner/admin of its organisation; else None."""
    if user is None or not user.is_authenticated:
        return None
    bot = Bot.objects.filter(id=bot_id).first()
    if bot is None:
        return None
    membership = Membership.objects.filter(user=user, organization_id=bot.organization_id).first()
    if membership is None or not membership.can_manage:
        return None
    return bot
