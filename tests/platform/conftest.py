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


@pytest.fixture(scope="session")
def tiny_target_dir(tmp_path_factory) -> str:
    """A tiny random Llama with a byte tokenizer (512 positions): a real model the worker runs fast."""
    from tests.engine.conftest import byte_tokenizer, save, tiny_llama

    tokenizer = byte_tokenizer()
    return save(tiny_llama(len(tokenizer), layers=2, hidden=64, seed=0), tokenizer, tmp_path_factory.mktemp("target"))
