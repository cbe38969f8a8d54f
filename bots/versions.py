"""A bot's published versions as the builder's Versions tab shows them: what each one changed,
how many replies it gave and how customers rated them; and what the draft would change.

Each bot reply records the version that answered it (``stats["bot_version"]``, written by the
inference task; 0 for a bot answering from its never-published draft).

A version also keeps, for each document read from a web page, its address and when it was read
(``PAGE_FIELDS``: not in the draft or the live config, since what the bot knows is the text), so a
restore that brings the document back brings back **Fetch again** and where it came from.
"""
from django.db.models import Count, Q
from django.db.models.fields.json import KT
from django.utils.dateparse import parse_datetime

from .models import Bot, BotVersion, Message

PAGE_FIELDS = ("source_url", "fetched_at")  # a knowledge entry's page, in versions only


def snapshot(bot: Bot, config: dict) -> dict:
    """``config`` (the draft being published) as its version keeps it: each document read from a web
    page with its address and when it was read."""
    pages = {}
    for item in bot.knowledge.exclude(source_url="").values("id", *PAGE_FIELDS):
        read = item["fetched_at"]
        pages[item["id"]] = {"source_url": item["source_url"], "fetched_at": read.isoformat() if read else None}
    return {**config, "knowledge": [{**entry, **pages.get(entry["id"], {})} for entry in config.get("knowledge", [])]}


def restored_fields(entry: dict) -> dict:
    """A version's knowledge entry as the ``KnowledgeItem`` fields a restore writes: its text, and its
    page where it was read from one. (A version published before pages were kept says nothing of
    them: the draft's item keeps its own.)"""
    fields = {"kind": entry["kind"], "title": entry["title"], "body": entry["body"]}
    if entry.get("source_url"):
        fields.update(source_url=entry["source_url"],
                      fetched_at=parse_datetime(entry["fetched_at"]) if entry.get("fetched_at") else None)
    return fields


def _known(entry: dict) -> dict:
    """A knowledge entry as the bot knows it (``KnowledgeItem.as_dict``): without its page."""
    return {key: value for key, value in entry.items() if key not in PAGE_FIELDS}


def _label(field: str) -> str:
    from .forms import BotSettingsForm

    form_field = BotSettingsForm.base_fields.get(field)
    return (form_field.label if form_field is not None and form_field.label else field.replace("_", " ").capitalize())


def changes(old: dict, new: dict) -> list[str]:
    """What ``new`` changes from ``old`` in words: the settings' labels, then the knowledge
    ("Knowledge: 1 added, 2 changed"); [] when nothing changed."""
    said = [_label(field) for field in Bot.DRAFT_FIELDS if old.get(field) != new.get(field)]
    before = {item["id"]: _known(item) for item in old.get("knowledge", [])}
    after = {item["id"]: _known(item) for item in new.get("knowledge", [])}
    counts = [
        (sum(1 for i in after if i not in before), "added"),
        (sum(1 for i in after if i in before and after[i] != before[i]), "changed"),
        (sum(1 for i in before if i not in after), "removed"),
    ]
    parts = [f"{n} {word}" for n, word in counts if n]
    if parts:
        said.append("Knowledge: " + ", ".join(parts))
    return said


def published(version: BotVersion) -> dict:
    """What ``version`` published (a draft config), without the count of knowledge deleted since or
    its documents' pages."""
    config = {key: value for key, value in version.config.items() if key != BotVersion.KNOWLEDGE_DELETED}
    return {**config, "knowledge": [_known(entry) for entry in config.get("knowledge", [])]}


def _deleted_since(version: BotVersion) -> list[str]:
    n = version.config.get(BotVersion.KNOWLEDGE_DELETED, 0)
    return [f"Knowledge deleted since: {n} item{'s' if n > 1 else ''}"] if n else []


def version_rows(bot: Bot) -> list[dict]:
    """Newest first: {"version", "config" (``published``), "changes", "replies", "helpful",
    "not_helpful"} per published version."""
    versions = list(bot.versions.select_related("published_by").order_by("number"))
    counted = (Message.objects.filter(bot=bot, sender=Message.Sender.BOT).exclude(channel="preview")
               .annotate(bot_version=KT("stats__bot_version")).values("bot_version")  # not Message.version
               .annotate(replies=Count("id"), helpful=Count("id", filter=Q(rating=Message.Rating.HELPFUL)),
                         not_helpful=Count("id", filter=Q(rating=Message.Rating.NOT_HELPFUL))))
    # the JSON number: text on PostgreSQL, int on SQLite
    by_version = {str(row["bot_version"]): row for row in counted}
    rows, previous = [], None
    for version in versions:
        numbers = by_version.get(str(version.number), {})
        if previous is not None:
            said = changes(previous, version.config) or ["Nothing: published again unchanged"]
        else:  # versions were kept from the 0012 migration on: an older bot's first kept one is not its first
            said = ["First version"] if version.number == 1 else ["Earlier versions were not kept"]
        rows.append({"version": version, "config": published(version), "changes": said + _deleted_since(version),
                     "replies": numbers.get("replies", 0), "helpful": numbers.get("helpful", 0),
                     "not_helpful": numbers.get("not_helpful", 0)})
        previous = version.config
    return rows[::-1]
