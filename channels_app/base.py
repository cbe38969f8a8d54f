"""What every channel adapter provides, and the errors ``send`` may raise."""


class DeliveryError(Exception):
    """Sending failed. ``transient`` errors (429, 5xx, timeouts) are retried with backoff;
    permanent ones (a 4xx such as Twilio 63016) are stored on the message and not retried."""

    def __init__(self, message, *, transient: bool, code: str = ""):
        super().__init__(message)
        self.transient = transient
        self.code = code


class Adapter:
    """A channel's *send* face. Inbound faces are views/consumers in the channel's module."""

    name = ""

    def send(self, message) -> str:
        """Deliver the outbound ``message`` (a ``bots.models.Message``); return the
        channel's external id for it ('' if the channel has none)."""
        raise NotImplementedError
