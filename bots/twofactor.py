"""Two-factor sign-in: a time-based one-time password (TOTP, RFC 6238: 6 digits every 30 s, what
authenticator apps make) after the password, or one of ten single-use recovery codes.

The TOTP maths is pyotp's; the enrolment QR code is segno's (an SVG, no image libraries).
The secret is stored encrypted like channel credentials (``channels_app.crypto``); recovery
codes only as SHA-256 digests. A code is taken one step either side of now (clocks drift) and
never twice: the last accepted time step is kept, so a code seen over someone's shoulder is
spent.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time

import pyotp
import segno
from django.db import transaction

from .models import TwoFactor

ISSUER = "ChatNexus"
RECOVERY_CODES = 10
STEP_S = 30


def new_secret() -> str:
    return pyotp.random_base32()  # 160 bits, as RFC 4226 recommends


def provisioning_uri(user, secret: str) -> str:
    """The otpauth:// URI an authenticator app scans."""
    return pyotp.TOTP(secret).provisioning_uri(name=user.get_username(), issuer_name=ISSUER)


def qr_svg(uri: str) -> str:
    """The URI as an inline SVG QR code."""
    return segno.make(uri, error="m").svg_inline(scale=4, dark="#111827")


def matching_step(secret: str, code: str, now: float | None = None) -> int | None:
    """The 30-second time step (now, or one either side) whose code is ``code``; None if none is."""
    code = "".join(code.split())
    if len(code) != 6 or not code.isascii() or not code.isdigit():  # "١٢٣٤٥٦" is digits too: no code
        return None
    totp, now = pyotp.TOTP(secret), time.time() if now is None else now
    for offset in (0, -1, 1):
        moment = now + offset * STEP_S
        if hmac.compare_digest(totp.at(moment), code):
            return totp.timecode(moment)
    return None


def _digest(code: str) -> str:
    return hashlib.sha256("".join(code.split()).replace("-", "").lower().encode()).hexdigest()


def new_recovery_codes() -> tuple[list[str], list[str]]:
    """(codes to show once, digests to store): ten codes like ``7f3a9-c21e0``."""
    codes = [f"{raw[:5]}-{raw[5:]}" for raw in (secrets.token_hex(5) for _ in range(RECOVERY_CODES))]
    return codes, [_digest(code) for code in codes]


def enable(user, secret: str) -> list[str]:
    """Turn it on for ``user`` with a confirmed secret; the recovery codes to show once."""
    codes, digests = new_recovery_codes()
    TwoFactor.objects.update_or_create(user=user, defaults={"secrets": {"totp": secret}, "recovery_digests": digests,
                                                            "last_step": 0})
    return codes


def renew_recovery_codes(two_factor: TwoFactor) -> list[str]:
    codes, digests = new_recovery_codes()
    two_factor.recovery_digests = digests
    two_factor.save(update_fields=["recovery_digests"])
    return codes


@transaction.atomic
def check(user, code: str, now: float | None = None) -> str | None:
    """Sign-in's second step: "totp" or "recovery" when ``code`` is accepted (and spent), else None."""
    two_factor = TwoFactor.objects.select_for_update().filter(user=user).first()
    if two_factor is None:
        return None
    step = matching_step(two_factor.secrets["totp"], code, now)
    if step is not None:
        if step <= two_factor.last_step:
            return None  # used already
        two_factor.last_step = step
        two_factor.save(update_fields=["last_step"])
        return "totp"
    digest = _digest(code)
    if digest in two_factor.recovery_digests:
        two_factor.recovery_digests = [d for d in two_factor.recovery_digests if d != digest]
        two_factor.save(update_fields=["recovery_digests"])
        return "recovery"
    return None
