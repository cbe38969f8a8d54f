"""Signed visitor tokens: the widget's only proof of who a visitor is.

A token is ``django.core.signing`` over ``{"b": bot public key, "v": visitor id}``
with its own salt, so it cannot be forged, edited, or reused on another bot. The
widget keeps it in the host page's localStorage; holding it is what lets a visitor
see their own conversation's history after a reload.
"""
import secrets

from django.core import signing

SALT = "chatnexus.widget.visitor"


def issue(public_key: str) -> tuple[str, str]:
    """A new visitor: ``(visitor_id, token)``."""
    visitor_id = "v_" + secrets.token_urlsafe(18)
    return visitor_id, signing.dumps({"b": public_key, "v": visitor_id}, salt=SALT, compress=True)


def verify(public_key: str, token: str) -> str | None:
    """The visitor id in ``token`` if it is genuine and for this bot, else ``None``."""
    if not token or len(token) > 500:
        return None
    try:
        data = signing.loads(token, salt=SALT)
    except (signing.BadSignature, UnicodeError):  # forged, or not even text its signer can encode
        return None
    if not isinstance(data, dict) or data.get("b") != public_key or not isinstance(data.get("v"), str):
        return None
    return data["v"]
