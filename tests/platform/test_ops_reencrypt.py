"""``manage.py reencrypt_secrets`` after a key rotation: it exits non-zero while a value no listed
key decrypts is left (a ``reencrypt_secrets && drop the old keys`` script stops there instead of
losing it), and its count names the channels whose credentials it rewrote, not those with none."""
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from channels_app.models import ChannelConfig

pytestmark = pytest.mark.django_db

OTHER_KEY = "another-secret-key-0123456789abcdefghijklmnopqrstuvwxyz"


def channel(bot, kind, secrets):
    return ChannelConfig.objects.create(organization=bot.organization, bot=bot, kind=kind, secrets=secrets)


def test_it_exits_non_zero_while_a_value_cannot_be_read(acme_bot, settings):
    lost = channel(acme_bot, "whatsapp", {"auth_token": "t"})
    settings.SECRET_KEY = OTHER_KEY  # the old one not listed
    err = StringIO()
    # a CommandError: manage.py prints it and exits 1
    with pytest.raises(CommandError, match="1 value[(]s[)] could not be read"):
        call_command("reencrypt_secrets", stderr=err)
    assert f"channel {lost.id}: does not decrypt with any listed key; left as it is" in err.getvalue()
    assert ChannelConfig.objects.get(id=lost.id).secrets_unreadable  # left as it was

    call_command("reencrypt_secrets", "--forget-unreadable")  # told to: no error
    assert ChannelConfig.objects.get(id=lost.id).secrets == {}


def test_it_counts_the_channels_whose_credentials_it_rewrote(acme_bot, settings):
    channel(acme_bot, "whatsapp", {"auth_token": "t"})
    widget = channel(acme_bot, "widget", {})
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]  # rotated, the old key listed
    settings.SECRET_KEY = OTHER_KEY
    out = StringIO()
    call_command("reencrypt_secrets", stdout=out)
    assert "1 channel(s) re-encrypted under the current key" in out.getvalue()
    settings.SECRET_KEY_FALLBACKS = []  # the old key dropped: the channel without secrets was rewritten too
    assert not ChannelConfig.objects.get(id=widget.id).secrets_unreadable
