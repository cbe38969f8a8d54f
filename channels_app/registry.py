"""Channel name -> adapter. Adding a channel means adding a module and a line here."""
from .preview import PreviewAdapter
from .widget.adapter import WidgetAdapter
from .whatsapp.adapter import WhatsAppAdapter
from .email.adapter import EmailAdapter
from bots.api.channel import ApiAdapter

ADAPTERS = {
    "preview": PreviewAdapter(),
    "widget": WidgetAdapter(),
    "whatsapp": WhatsAppAdapter(),
    "email": EmailAdapter(),
    "api": ApiAdapter(),  # conversations driven through the REST API (bots/api/channel.py)
}


def adapter_for(channel: str):
    try:
        return ADAPTERS[channel]
    except KeyError:
        raise LookupError(f"no adapter for channel {channel!r}; known: {sorted(ADAPTERS)}") from None
