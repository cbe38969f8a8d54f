"""The widget's rate limits (per visitor, per IP address and per bot, connections and messages), on the
project's sliding-window counter (chatnexus/ratelimit.py)."""
from chatnexus.ratelimit import Verdict, hit


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


def check_message(public_key: str, visitor_id: str, options: dict, client_ip: str) -> Verdict | None:
    for key, limit in (
        (f"msg:v:{public_key}:{visitor_id}", options["messages_per_minute"]),
        (f"msg:ip:{public_key}:{client_ip}", options["ip_messages_per_minute"]),
        (f"msg:b:{public_key}", options["bot_messages_per_minute"]),
    ):
        verdict = hit(key, limit)
        if not verdict.allowed:
            return verdict
    return None
