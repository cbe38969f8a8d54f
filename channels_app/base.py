"""What every channel adapter provides, and the errors ``send`` may raise."""


class DeliveryError(Exception):
    """Sending failed. ``transient`` errors (429, 5xx, timeouts) are retried with backoff;
    permanent ones (a 4xx such as Twilio 63016) are stored on the message and not retried."""

    def __init__(self, message, *, transient: bool, code: str = ""):
        super().__init__(message)
        self.transient = transient
        self.code = code


def one_line(value, limit: int = 300) -> str:
    """An error's words for a sentence on a page: bytes decoded, whitespace collapsed, at most ``limit`` characters."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return " ".join(str(value).split())[:limit]


class Adapter:
    """A channel's *send* face. Inbound faces are views/consumers in the channel's module."""

    name = ""
    label = ""  # the channel as errors name it ("email", "WhatsApp")

    def connected_config(self, message):
        """The bot's enabled ``ChannelConfig`` for this channel; a permanent error without one."""
        from .models import ChannelConfig

        config = ChannelConfig.objects.filter(bot_id=message.bot_id, kind=self.name).first()
        if config is None or not config.enabled:
            raise DeliveryError(f"the bot's {self.label} channel is not connected", transient=False, code="config")
        return config

    def inbox_notice(self, conversation) -> dict | None:
        """What the inbox should tell an agent about this conversation's channel right now:
        {"text", "action" (a URL to POST, or None), "action_label"}; None for nothing."""
        return None

    def refusal(self, conversation) -> str | None:
        """Why nothing may be sent to this conversation's customer now, in the words the inbox shows;
        None while anything may (the default). ``send`` refuses then, and the bot given a conversation
        back does not write a reply that could only be refused."""
        return None

    def keep_files(self, message) -> None:
        """Before the model reads the inbound ``message`` (``bots.files.prompt_text``): make sure
        its files are in our storage. Channels that store them with the message need nothing."""

    def settle(self, message) -> None:
        """After a send was recorded as sent: anything the channel told us while it was under way
        (WhatsApp: status callbacks that overtook it). Nothing by default."""

    def send(self, message) -> str:
        """Deliver the outbound ``message`` (a ``bots.models.Message``); return the
        channel's external id for it ('' if the channel has none)."""
        raise NotImplementedError
