"""Sliding-window rate limits on the Django cache (Redis in distributed mode, so every
web process shares the counters).

``hit(key, limit)`` counts one event and says whether the events of the last minute are
still within ``limit``; the caller turns a refusal into a clear message. The last minute
is estimated from two fixed one-minute counters, the current one and the one before,
weighting the previous by the share of it still inside the sliding minute (the counter
Cloudflare describes for its own limits): two keys per limit, one atomic ``incr`` per
event, and no burst of twice the limit across a minute boundary as with a plain fixed
window.
"""
import math
import time
from dataclasses import dataclass

from django.core.cache import cache

WINDOW_S = 60


@dataclass
class Verdict:
    allowed: bool
    retry_after: int  # seconds until the estimate is back within the limit (when refused)


def _count(cache_key: str) -> int:
    if cache.add(cache_key, 1, timeout=2 * WINDOW_S + 5):
        return 1
    try:
        return cache.incr(cache_key)
    except ValueError:  # expired between add and incr
        cache.set(cache_key, 1, timeout=2 * WINDOW_S + 5)
        return 1


def hit(key: str, limit: int, now: float | None = None) -> Verdict:
    now = time.time() if now is None else now
    limit = max(0, int(limit))
    window = int(now // WINDOW_S)
    elapsed = now - window * WINDOW_S  # seconds into the current window
    current = _count(f"cn:rl:{key}:{window}")
    previous = int(cache.get(f"cn:rl:{key}:{window - 1}") or 0)
    weight = 1 - elapsed / WINDOW_S  # share of the previous window still in the last minute
    if previous * weight + current <= limit:
        return Verdict(allowed=True, retry_after=0)
    return Verdict(allowed=False, retry_after=_retry_after(previous, current, limit, elapsed))


def _retry_after(previous: int, current: int, limit: int, elapsed: float) -> int:
    """Seconds until one more event fits (previous * weight + current + 1 <= limit), if nothing
    else arrives meanwhile (refused events count too: a client that keeps trying waits longer)."""
    if current + 1 <= limit and previous:  # the previous window's share has to shrink
        wait = WINDOW_S * (1 - (limit - current - 1) / previous) - elapsed
    else:  # the current window is full on its own: it has to slide out too
        wait = (WINDOW_S - elapsed) + WINDOW_S * (1 - (limit - 1) / current)
    return max(1, math.ceil(wait))


def check_connection(public_key: str, visitor_key: str, options: dict) -> Verdict | None:
    """``None`` when the connection may go ahead, else the refusing verdict."""
    for key, limit in (
        (f"conn:v:{public_key}:{visitor_key}", options["connections_per_minute"]),
        (f"conn:b:{public_key}", options["bot_connections_per_minute"]),
    ):
        verdict = hit(key, limit)
        if not verdict.allowed:
            return verdict
    return None


def check_message(public_key: str, visitor_id: str, options: dict) -> Verdict | None:
    for key, limit in (
        (f"msg:v:{public_key}:{visitor_id}", options["messages_per_minute"]),
        (f"msg:b:{public_key}", options["bot_messages_per_minute"]),
    ):
        verdict = hit(key, limit)
        if not verdict.allowed:
            return verdict
    return None
