"""Sliding-window rate limits on the Django cache (Redis in distributed mode, so every
web process shares the counters). Used by the widget (channels_app/widget/ratelimit.py)
and by sign-in, sign-up and password reset (bots/views/accounts.py).

``hit(key, limit, window_s=60)`` counts one event and says whether the events of the last
window are still within ``limit``; the caller turns a refusal into a clear message.
``refund(verdict)`` takes back the event a hit counted: a limit on failures counts every
attempt before checking it (attempts sent in parallel are all counted before any is checked)
and refunds the ones that did not fail. The last window is estimated from two fixed
counters, the current one and the one before, weighting the previous by the share of it
still inside the sliding window (the counter Cloudflare describes for its own limits):
two keys per limit, one atomic ``incr`` per event, and no burst of twice the limit across
a window boundary as with a plain fixed window. ``address_key(address)`` is what a per-address
limit counts under: one IPv4 address, or one IPv6 /64.
"""
import ipaddress
import math
import time
from dataclasses import dataclass

from django.core.cache import cache

WINDOW_S = 60


@dataclass
class Verdict:
    allowed: bool
    retry_after: int  # seconds until the estimate is back within the limit (when refused)
    counted: str | None = None  # the counter a hit added to (for refund)


def address_key(address: str) -> str:
    """The rate-limit key of a client's address: an IPv4 address as it is; an IPv6 address cut to its
    /64 (a home, a phone or a rented server is given at least a /64 and may send from any of its 2**64
    addresses: counted one by one, they would be limited not at all). An IPv4 address written as IPv6
    (``::ffff:203.0.113.7``) is that IPv4 address; anything else (no address known) as it is."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.version == 4:
        return str(ip)
    return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))


def _count(cache_key: str, window_s: int) -> int:
    if cache.add(cache_key, 1, timeout=2 * window_s + 5):
        return 1
    try:
        return cache.incr(cache_key)
    except ValueError:  # expired between add and incr
        cache.set(cache_key, 1, timeout=2 * window_s + 5)
        return 1


def hit(key: str, limit: int, now: float | None = None, window_s: int = WINDOW_S) -> Verdict:
    """Count one event under `key`; allowed while the last `window_s` seconds hold at most `limit`."""
    now = time.time() if now is None else now
    limit = max(0, int(limit))
    window = int(now // window_s)
    elapsed = now - window * window_s  # seconds into the current window
    name = f"cn:rl:{window_s}:{key}:{window}"
    current = _count(name, window_s)
    previous = int(cache.get(f"cn:rl:{window_s}:{key}:{window - 1}") or 0)
    weight = 1 - elapsed / window_s  # share of the previous window still in the sliding one
    if previous * weight + current <= limit:
        return Verdict(allowed=True, retry_after=0, counted=name)
    return Verdict(allowed=False, retry_after=_retry_after(previous, current, limit, elapsed, window_s), counted=name)


def refund(verdict: Verdict) -> None:
    """Take back the event `verdict`'s hit counted (once; a counter gone already is left alone)."""
    if verdict.counted:
        try:
            cache.decr(verdict.counted)
        except ValueError:  # expired meanwhile: nothing left to take back
            pass
        verdict.counted = None


def _retry_after(previous: int, current: int, limit: int, elapsed: float, window_s: int) -> int:
    """Seconds until one more event fits (previous * weight + current + 1 <= limit), if nothing
    else arrives meanwhile (refused events count too: a client that keeps trying waits longer)."""
    if current + 1 <= limit and previous:  # the previous window's share has to shrink
        wait = window_s * (1 - (limit - current - 1) / previous) - elapsed
    else:  # the current window is full on its own: it has to slide out too
        wait = (window_s - elapsed) + window_s * (1 - (limit - 1) / current)
    return max(1, math.ceil(wait))
