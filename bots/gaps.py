"""Questions to answer: what customers asked that the bot did not answer well — the knowledge to
add next. A bot's dashboard lists them with an "Add as FAQ" link into the builder.

A customer message counts when the bot's reply to it
- used the bot's fallback answer (any published version's, or the draft's): word for word, or a
  sentence of the reply close to it (difflib's ratio ≥ FALLBACK_LIKENESS: "I am not sure about
  that, let me get a colleague to help you!" — models paraphrase), or
- was rated not helpful (👎 in the widget), or
- was followed by the customer asking for a person (their next message was a handoff), or
- never came: the model failed on it or said nothing within the time limit (the message is
  marked failed and the conversation went to the team, inference/tasks.py).
The same question asked again (any case or spacing) is one row with a count. The window is the
tiles' (``stats.window``: the organisation's days). At most the newest SCANNED replies, handoffs
and failures are read each; where that cut the window short, the page says from when it read.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from difflib import SequenceMatcher

from django.db.models import OuterRef, Subquery
from django.db.models.fields.json import KT

from . import stats
from .knowledge import folded
from .models import Bot, Message

SCANNED = 2000  # newest replies (and handoffs, and failures) looked at: a bound on the page's work
SHOWN = 30
FALLBACK_LIKENESS = 0.8  # a reply's sentence this close to a fallback answer is that answer, reworded
SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")

REASONS = {"fallback": "fallback answer", "not_helpful": "rated not helpful", "handoff": "then asked for a person",
           "failed": "not answered (the model failed or ran out of time)"}


def _fallbacks(bot: Bot) -> set[str]:
    # that key alone: a version's config holds all its knowledge
    texts = {bot.fallback_answer} | set(bot.versions.values_list(KT("config__fallback_answer"), flat=True))
    return {folded(t) for t in texts if t and t.strip()}


def used_fallback(reply_text: str, fallbacks: set[str]) -> bool:
    """Whether a reply says one of the (folded) fallback answers: within it, or as one of its
    sentences (or two running together) close enough to one (FALLBACK_LIKENESS)."""
    text = folded(reply_text)
    if any(fallback in text for fallback in fallbacks):
        return True
    sentences = [s for s in SENTENCE_END.split(text) if s]
    pieces = sentences + [" ".join(pair) for pair in zip(sentences, sentences[1:])]
    return any(SequenceMatcher(None, piece, fallback).ratio() >= FALLBACK_LIKENESS
               for fallback in fallbacks for piece in pieces if 0.5 <= len(piece) / len(fallback) <= 2)


@dataclass
class Questions:
    rows: list[dict]  # {"question", "count", "reasons" (words), "last", "conversation_id"}
    read_from: datetime | None  # None: the whole window was read; else SCANNED cut it, all was read from then on


def _newest(messages, cuts: list) -> list:
    """The newest SCANNED of ``messages`` (newest first); where there were more, the oldest one read goes
    into ``cuts``."""
    found = list(messages[:SCANNED + 1])
    if len(found) > SCANNED:
        found = found[:SCANNED]
        cuts.append(found[-1].created)
    return found


def questions_to_answer(bot: Bot, days: int, limit: int = SHOWN, now=None) -> Questions:
    """The most asked first, then the most recent."""
    _, _, since = stats.window(bot.organization, days, now)
    found: dict[str, dict] = {}
    cuts: list[datetime] = []

    def note(question: Message, reason: str):
        if not question.text.strip():
            return
        row = found.setdefault(folded(question.text), {"question": question.text.strip(), "ids": set(), "reasons": set(),
                                                     "last": question.created, "conversation_id": question.conversation_id})
        row["ids"].add(question.id)
        row["reasons"].add(reason)
        if question.created > row["last"]:
            row.update(last=question.created, question=question.text.strip(), conversation_id=question.conversation_id)

    fallbacks = _fallbacks(bot)
    replies = (Message.objects.filter(bot=bot, sender=Message.Sender.BOT, created__gte=since, reply_to__isnull=False)
               .exclude(channel="preview").select_related("reply_to").order_by("-id"))
    for reply in _newest(replies, cuts):
        if reply.rating == Message.Rating.NOT_HELPFUL:
            note(reply.reply_to, "not_helpful")
        if fallbacks and used_fallback(reply.text, fallbacks):
            note(reply.reply_to, "fallback")
    # each handoff request's customer message before it, in one query (not one per handoff); a request
    # is what the bot's handoff message replies to (what waited with it went to the team too: not requests)
    before = Subquery(Message.objects.filter(conversation_id=OuterRef("conversation_id"),
                                             direction=Message.Direction.INBOUND, id__lt=OuterRef("id"))
                      .order_by("-id").values("id")[:1])
    handoffs = (Message.objects.filter(bot=bot, direction=Message.Direction.INBOUND, created__gte=since,
                                       meta__skip_reason="handoff", reply__sender=Message.Sender.SYSTEM)
                .exclude(channel="preview")
                .annotate(before=before).order_by("-id"))
    asked_before = [h.before for h in _newest(handoffs, cuts) if h.before is not None]
    for question in Message.objects.filter(id__in=asked_before):
        if (question.meta or {}).get("skip_reason") != "handoff":
            note(question, "handoff")
    failed = (Message.objects.filter(bot=bot, direction=Message.Direction.INBOUND, created__gte=since,
                                     reply_state=Message.ReplyState.FAILED)
              .exclude(channel="preview").order_by("-id"))
    for question in _newest(failed, cuts):
        note(question, "failed")
    rows = sorted(found.values(), key=lambda row: (-len(row["ids"]), -row["last"].timestamp()))[:limit]
    return Questions([{"question": row["question"], "count": len(row["ids"]), "last": row["last"],
                       "conversation_id": row["conversation_id"],
                       "reasons": [REASONS[reason] for reason in REASONS if reason in row["reasons"]]} for row in rows],
                     max(cuts, default=None))
