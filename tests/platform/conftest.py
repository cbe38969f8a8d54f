"""Platform test helpers: signed-in clients for the named users and a conversation maker."""
import pytest


@pytest.fixture
def as_user(client):
    """``as_user(user)`` → the test client signed in as ``user``."""

    def sign_in(user):
        client.force_login(user)
        return client

    return sign_in


def make_conversation(bot, text="Hello there", channel="widget", thread="visitor-1", **kwargs):
    """A stored inbound message (``receive(answer=False)``: no reply task is queued)."""
    from bots import services

    received = services.receive(bot=bot, channel=channel, thread_id=thread, text=text, answer=False, **kwargs)
    return received.conversation, received.message


@pytest.fixture
def smtp_settings(settings, mailbox):
    """Send this process's mail to the aiosmtpd sink (real SMTP over loopback)."""
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = mailbox.host
    settings.EMAIL_PORT = mailbox.port
    return mailbox
