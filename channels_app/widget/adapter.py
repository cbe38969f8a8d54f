"""The widget's *send* face: a stored reply reaches the visitor's open widget.

The reply's tokens already streamed live (``reply.delta``) while it was generated;
sending pushes the stored message to the conversation's group so every open tab
shows its final text. It stays in the database, so a widget that was closed sees it
in the history on its next connection. There is no outside service to fail.
"""
from bots import events

from ..base import Adapter
from .inbound import public_message


class WidgetAdapter(Adapter):
    name = "widget"

    def send(self, message):
        events.push(message.conversation_id, "message", message=public_message(message))
        return ""
