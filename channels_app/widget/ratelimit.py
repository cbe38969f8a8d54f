"""The widget's rate limits (per visitor, per address and per bot, connections and messages), on the
project's sliding-window counter (chatnexus/ratelimit.py). Tokens are free to mint, so each per-visitor
limit has a per-address one beside it: without it one client could spend the bot's whole budget and
lock every real visitor out. An address is one IPv4 address or one IPv6 /64 (``address_key``)."""
from chatnexus.ratelimit import Verdict, address_key, hit


def check_connection(public_key: str, visitor_id: str | None, options: dict, client_ip: str) -> Verdict | None:
    """``None`` when the connection may go ahead, else the refusing verdict. A new visitor (no token
    yet) is counted by address under the per-visitor limit."""
    address = address_key(client_ip)
    return _first_refusal(
        (f"conn:v:{public_key}:{visitor_id or 'ip:' + address}", options["connections_per_minute"]),
        (f"conn:ip:{public_key}:{address}", options["ip_connections_per_minute"]),
        (f"conn:b:{public_key}", options["bot_connections_per_minute"]),
    )


def check_message(public_key: str, visitor_id: str, options: dict, client_ip: str) -> Verdict | None:
    return _first_refusal(
        (f"msg:v:{public_key}:{visitor_id}", options["messages_per_minute"]),
        (f"msg:ip:{public_key}:{address_key(client_ip)}", options["ip_messages_per_minute"]),
        (f"msg:b:{public_key}", options["bot_messages_per_minute"]),
    )


def _first_refusal(*limits: tuple[str, int]) -> Verdict | None:
    """Count the event under each ``(key, limit)`` in turn, up to the first that refuses it: the
    narrower limits first, so one client's refused events never reach the whole bot's count."""
    for key, limit in limits:
        verdict = hit(key, limit)
        if not verdict.allowed:
            return verdict
    return None
