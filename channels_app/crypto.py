"""Secrets at rest: channel credentials are stored encrypted (Fernet, AES-128-CBC + HMAC).

The key is ``CHATNEXUS_ENCRYPTION_KEY`` (a Fernet key) or, when unset, derived from
``SECRET_KEY``. A value that does not decrypt is an error, never silently empty.
"""
import base64
import hashlib
import json

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings
from django.db import models


def _fernet():
    key = settings.ENCRYPTION_KEY
    if not key:
        key = base64.urlsafe_b64encode(hashlib.sha256(("chatnexus-secrets:" + settings.SECRET_KEY).encode()).digest())
    return Fernet(key)


def encrypt(value: str) -> str:
    return _fernet().encrypt(value.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken as error:
        raise ValueError("stored secret does not decrypt: was CHATNEXUS_ENCRYPTION_KEY or SECRET_KEY changed?") from error


class EncryptedJSONField(models.TextField):
    """A dict stored as Fernet ciphertext; plain dict in Python."""

    def from_db_value(self, value, expression, connection):
        if value in (None, ""):
            return {}
        return json.loads(decrypt(value))

    def to_python(self, value):
        if isinstance(value, dict):
            return value
        if value in (None, ""):
            return {}
        return json.loads(decrypt(value))

    def get_prep_value(self, value):
        return encrypt(json.dumps(value or {}))
