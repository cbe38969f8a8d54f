"""The ``api`` channel: conversations driven through the REST API.

Your own backend posts customer messages (``POST /api/conversations/inbound/``) and gets the
replies one of two ways: it polls (``GET /api/messages/?reply_to=<id>``), or the bot's API
channel names a webhook and every message we send on the conversation — the bot's reply, an
agent's answer — is POSTed there, signed (webhook.py). Live listeners get the message event
either way.
"""
from channels_app.base import Adapter

from .. import events, services
from . import webhook


class ApiAdapter(Adapter):
    name = "api"
    label = "API"

    def send(self, message):
        from channels_app.models import ChannelConfig

        events.push(message.conversation_id, "message", message=services.serialize_message(message))
        config = ChannelConfig.objects.filter(bot_id=message.bot_id, kind=self.name, enabled=True).first()
        if config is not None and config.settings.get("webhook_url"):
            webhook.post(config, "message", webhook.message_payload(message), delivery=str(message.id))
        return ""
