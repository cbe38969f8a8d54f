"""Dashboard numbers for an organisation or one bot, computed in Python.

Percentiles are computed here rather than in SQL so the same code runs on SQLite
(embedded) and PostgreSQL. Windows are small (days of one tenant's messages), and
only the few columns needed are fetched.

Speculative decoding figures come from each bot reply's ``Message.stats``
(``GenerationStats.as_dict()``): the acceptance rate is pooled
(sum accepted / sum drafted) and the estimated speedup is the mean number of
tokens produced per target forward (sum new_tokens / sum target_forwards) — plain
decoding makes exactly one token per forward, so this is the ceiling of the
speedup when drafting is free. The prompt reuse rate is the share of prompt tokens the
worker did not prefill because an earlier prompt's cache held them (sum prefix_reused /
sum prompt_tokens: a bot's system prompt, a conversation's earlier turns).
"""
import math
from collections import Counter
from datetime import datetime, time, timedelta

from django.db.models import Q
from django.utils import timezone

from . import hours
from .models import Message


def percentile(values, q):
    """The ``q``-th percentile (0..100) of ``values`` by linear interpolation; None if empty."""
    data = sorted(v for v in values if v is not None)
    if not data:
        return None
    if len(data) == 1:
        return float(data[0])
    rank = (len(data) - 1) * q / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return float(data[low] + (data[high] - data[low]) * (rank - low))


def mean(values):
    data = [v for v in values if v is not None]
    return sum(data) / len(data) if data else None


def _round(value, digits=3):
    return None if value is None else round(value, digits)


def _agent_waits(messages):
    """(seconds each answered handoff waited, how many handoffs). A handoff is the message the bot's handoff
    (or away) message replies to — the customer's request for a person, or a message the model failed to
    answer — not those still waiting that went with it; its wait runs to the first agent message after it.
    One that ended before an agent wrote ends unanswered: the bot spoke again (the conversation was closed
    or given back, and it answered the next message), or a new handoff began (only a conversation the bot
    has again is handed off). Each handoff of a conversation counts on its own."""
    handed = {m.reply_to_id for m in messages if m.sender == Message.Sender.SYSTEM}
    waiting, waits, handoffs = {}, [], 0  # waiting: conversation -> when its open handoff began
    for m in sorted(messages, key=lambda m: (m.created, m.id)):
        if m.id in handed:
            handoffs += 1
            waiting[m.conversation_id] = m.created  # an earlier one still waiting ended unanswered
        elif m.sender == Message.Sender.AGENT and m.conversation_id in waiting:
            waits.append((m.created - waiting.pop(m.conversation_id)).total_seconds())
        elif m.sender == Message.Sender.BOT:
            waiting.pop(m.conversation_id, None)
    return waits, handoffs


def window(organization, days, now=None):
    """(time zone, first day, its start): the organisation's last ``days`` days, today included. Days
    are the organisation's (its time zone, as team hours): a message at 17:30 in Los Angeles is that
    day's, not the next UTC day's."""
    zone = hours.zone(organization.timezone)
    first_day = timezone.localdate(now or timezone.now(), zone) - timedelta(days=days - 1)
    return zone, first_day, datetime.combine(first_day, time.min, tzinfo=zone)


def summary(organization, bot=None, days=14, now=None):
    """Everything the dashboard shows, as a JSON-ready dict.

    Conversations are those with a message in the window (a WhatsApp number, a widget visitor or
    an API thread is one conversation for good: one started long ago counts when it is active).
    ``series`` has one entry per day (oldest first): conversations with a message that day,
    inbound and outbound messages, median reply latency.
    """
    zone, first_day, since = window(organization, days, now)  # the totals cover exactly the days the series shows
    scope = {"organization": organization, **({"bot": bot} if bot is not None else {})}
    # neither the builder's test chat nor mail a machine sent (newsletters, list mail, auto-replies:
    # channels_app/email/inbound.py) is customers' traffic
    customers = ~Q(channel="preview") & ~Q(meta__has_key="automated")

    messages = list(
        Message.objects.filter(customers, **scope, created__gte=since).exclude(sender=Message.Sender.NOTE).values_list(
            "id", "created", "direction", "sender", "conversation_id", "channel", "reply_to_id", named=True
        )
    )
    replies = list(
        Message.objects.filter(customers, **scope, created__gte=since, sender=Message.Sender.BOT).values_list(
            "created", "latency_s", "ttft_s", "tokens_per_s", "stats", "rating"
        )
    )

    days_list = [first_day + timedelta(days=i) for i in range(days)]
    series = {d: {"conversations": set(), "inbound": 0, "outbound": 0, "latencies": []} for d in days_list}
    for m in messages:
        day = timezone.localdate(m.created, zone)
        if day in series:
            series[day]["conversations"].add(m.conversation_id)
            series[day]["inbound" if m.direction == Message.Direction.INBOUND else "outbound"] += 1
    conversations = {m.conversation_id: m.channel for m in messages}  # a conversation's messages share its channel
    # the bot's handoff (or away) message marks each handoff: a customer's request, or a reply the model failed
    handoff_conversations = {m.conversation_id for m in messages if m.sender == Message.Sender.SYSTEM}
    waits, handoffs = _agent_waits(messages)
    # speed is the model's: canned replies (a photo alone, no model) would pull every latency to ~0
    model_replies = [r for r in replies if not (r[4] or {}).get("canned")]
    for created, latency, *_ in model_replies:
        day = timezone.localdate(created, zone)
        if day in series and latency is not None:
            series[day]["latencies"].append(latency)

    latencies = [r[1] for r in model_replies]
    ttfts = [r[2] for r in model_replies]
    stats = [r[4] or {} for r in model_replies]
    drafted = sum(s.get("drafted", 0) or 0 for s in stats)
    accepted = sum(s.get("accepted", 0) or 0 for s in stats)
    new_tokens = sum(s.get("new_tokens", 0) or 0 for s in stats)
    forwards = sum(s.get("target_forwards", 0) or 0 for s in stats)
    prompt_tokens = sum(s.get("prompt_tokens", 0) or 0 for s in stats)
    reused_tokens = sum(s.get("prefix_reused", 0) or 0 for s in stats)
    ratings = [r[5] for r in replies if r[5] is not None]
    # the time to first token runs from the engine's start: what the message waited before it (the queue,
    # the prompt) is the rest of its latency, less the engine's whole time
    queued = [max(0.0, r[1] - s["total_s"]) for r, s in zip(model_replies, stats)
              if r[1] is not None and s.get("total_s") is not None]

    return {
        "days": days,
        "timezone": zone.key,  # the days' and the times'
        "conversations": len(conversations),
        "messages": len(messages),
        "replies": len(replies),
        "latency_median_s": _round(percentile(latencies, 50)),
        "latency_p95_s": _round(percentile(latencies, 95)),
        "ttft_median_s": _round(percentile(ttfts, 50)),
        "ttft_p95_s": _round(percentile(ttfts, 95)),
        "queue_median_s": _round(percentile(queued, 50)),
        "queue_p95_s": _round(percentile(queued, 95)),
        "tokens_per_s": _round(mean(r[3] for r in model_replies), 2),
        "acceptance_rate": _round(accepted / drafted if drafted else None),
        "tokens_per_forward": _round(new_tokens / forwards if forwards else None),
        "prompt_reuse_rate": _round(reused_tokens / prompt_tokens if prompt_tokens else None),
        "handoff_rate": _round(
            len(handoff_conversations) / len(conversations) if conversations else None
        ),
        # each message handed to the team -> the first agent message after it (of those answered)
        "agent_response_median_s": _round(percentile(waits, 50), 1),
        "agent_response_p95_s": _round(percentile(waits, 95), 1),
        "handoffs": handoffs,
        "handoffs_answered": len(waits),
        "rated_replies": len(ratings),
        # share of the replies customers rated that they found helpful (widget thumbs)
        "helpful_rate": _round(sum(r > 0 for r in ratings) / len(ratings) if ratings else None),
        "channels": dict(Counter(conversations.values())),
        "series": [
            {
                "day": d.isoformat(),
                "conversations": len(series[d]["conversations"]),
                "inbound": series[d]["inbound"],
                "outbound": series[d]["outbound"],
                "latency_median_s": _round(percentile(series[d]["latencies"], 50)),
            }
            for d in days_list
        ],
    }
