"""The builder's live preview: replies stream over the websocket while they are
generated, so there is nothing left to send afterwards."""
from bots import events, services

from .base import Adapter


class PreviewAdapter(Adapter):
    name = "preview"

    def send(self, message):
        events.push(message.conversation_id, "message", message=services.serialize_message(message))
        return ""
