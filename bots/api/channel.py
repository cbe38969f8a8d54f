"""The ``api`` channel: conversations driven through the REST API.

Your own backend posts customer messages (``POST /api/conversations/inbound/``)
and reads the bot's replies (``GET /api/conversations/<id>/messages/``). Nothing is
pushed anywhere, so sending a stored reply only marks it sent (live listeners get
the message event).
"""
from channels_app.base import Adapter

from .. import events, services


class ApiAdapter(Adapter):
    name = "api"

    def send(self, message):
        events.push(message.conversation_id, "message", message=services.serialize_message(message))
        return ""
