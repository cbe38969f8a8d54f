"""Channel name -> adapter. Adding a channel means adding a module and a line here."""
from .preview import PreviewAdapter

ADAPTERS = {
    "preview": PreviewAdapter(),
}


def adapter_for(channel: str):
    try:
        return ADAPTERS[channel]
    except KeyError:
        raise LookupError(f"no adapter for channel {channel!r}; known: {sorted(ADAPTERS)}") from None
