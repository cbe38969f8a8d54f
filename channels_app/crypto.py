"""Secrets at rest: channel credentials and second factors are stored encrypted (Fernet,
AES-128-CBC + HMAC).

The key is ``CHATNEXUS_ENCRYPTION_KEY`` (a Fernet key: a malformed one stops the start,
chatnexus/settings.py) or, when unset, derived from ``SECRET_KEY``. Rotation: values written
under an earlier key still decrypt when that key is listed — earlier Fernet keys in
``CHATNEXUS_ENCRYPTION_OLD_KEYS`` (comma-separated), earlier secret keys in Django's
``SECRET_KEY_FALLBACKS`` (and ``SECRET_KEY`` itself once ``CHATNEXUS_ENCRYPTION_KEY`` is set
for the first time); ``manage.py reencrypt_secrets`` rewrites every stored value under the
current key, after which the old ones can go. A value that no listed key decrypts is an
error, never silently empty: its row still loads (``UnreadableSecrets``: the Channels page shows
and takes the credentials again), and reading the secrets raises ``Unreadable``.
"""
import base64
import hashlib
import json

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.db import models

from .base import DeliveryError

UNREADABLE = "the saved credentials cannot be read with the current keys: enter them again"


def _derived(secret_key: str) -> bytes:
    return base64.urlsafe_b64encode(hashlib.sha256(("chatnexus-secrets:" + secret_key).encode()).digest())


def _fernet() -> MultiFernet:
    """The current key first (it encrypts), then every earlier one listed (they still decrypt)."""
    current = settings.ENCRYPTION_KEY or _derived(settings.SECRET_KEY)
    earlier = list(settings.ENCRYPTION_OLD_KEYS)
    secret_keys = ([settings.SECRET_KEY] if settings.ENCRYPTION_KEY else []) + list(settings.SECRET_KEY_FALLBACKS)
    earlier += [_derived(key) for key in secret_keys]
    return MultiFernet([Fernet(key) for key in dict.fromkeys([current, *earlier])])


def encrypt(value: str) -> str:
    return _fernet().encrypt(value.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken as error:
        raise ValueError("stored secret does not decrypt: was CHATNEXUS_ENCRYPTION_KEY or SECRET_KEY changed?") from error


class Unreadable(DeliveryError, ValueError):
    """Secrets read that no listed key decrypts: a ValueError, as ``decrypt``'s, and a permanent
    DeliveryError, so a reply through a channel whose credentials need entering again fails for good
    in these words (its conversation handed to the team) rather than as an internal error."""

    def __init__(self):
        super().__init__(f"{UNREADABLE} (was CHATNEXUS_ENCRYPTION_KEY or SECRET_KEY changed?)",
                         transient=False, code="config")


class UnreadableSecrets:
    """What an ``EncryptedJSONField`` holds when no listed key decrypts it. The row loads (a page
    that does not need the secrets shows, its other fields save); reading them raises
    ``Unreadable``; saved unchanged, the ciphertext is written back as it was (an old key listed
    later still opens it)."""

    def __init__(self, token: str):
        self.token = token

    def _unreadable(self, *args, **kwargs):
        raise Unreadable()

    get = keys = items = values = copy = __getitem__ = __contains__ = __iter__ = __len__ = _unreadable

    def __repr__(self):
        return "<secrets no listed key decrypts>"


def _loaded(value):
    if value in (None, ""):
        return {}
    try:
        text = decrypt(value)
    except ValueError:
        return UnreadableSecrets(value)
    return json.loads(text)


class EncryptedJSONField(models.TextField):
    """A dict stored as Fernet ciphertext; plain dict in Python (``UnreadableSecrets`` when no
    listed key decrypts it)."""

    def from_db_value(self, value, expression, connection):
        return _loaded(value)

    def to_python(self, value):
        if isinstance(value, (dict, UnreadableSecrets)):
            return value
        return _loaded(value)

    def get_prep_value(self, value):
        if isinstance(value, UnreadableSecrets):
            return value.token
        return encrypt(json.dumps(value or {}))

    def value_to_string(self, obj):
        """What ``dumpdata`` writes: the ciphertext, as stored (``loaddata`` reads it back). Django's
        default, ``str(dict)``, put every secret in the dump in clear, and could not be loaded."""
        return self.get_prep_value(self.value_from_object(obj))
