"""Fixed-window rate limits on the Django cache (Redis in distributed mode, so every
web process shares the counters).

``hit(key, limit)`` counts one event in the current minute and says whether it is
still within ``limit``; the caller turns a refusal into a clear message.
"""
import time
from dataclasses import dataclass

from django.core.cache import cache

WINDOW_S = 60


@dataclass
class Verdict:
    allowed: bool
    retry_after: int  # seconds until the window resets (when refused)


def hit(key: str, limit: int) -> Verdict:
    now = time.time()
    window = int(now // WINDOW_S)
    cache_key = f"cn:rl:{key}:{window}"
    if cache.add(cache_key, 1, timeout=WINDOW_S + 5):
        count = 1
    else:
        try:
            count = cache.incr(cache_key)
        except ValueError:  # expired between add and incr
            cache.set(cache_key, 1, timeout=WINDOW_S + 5)
            count = 1
    retry_after = max(1, int((window + 1) * WINDOW_S - now))
    return Verdict(allowed=count <= max(0, int(limit)), retry_after=retry_after)


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
