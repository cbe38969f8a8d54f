"""A bot as a file: its draft settings and knowledge exported as JSON, and imported as a new,
unpublished bot — to move a bot from a staging server to production, keep a copy, or start
from a colleague's.

    {"chatnexus_bot": 1, "settings": {<Bot.DRAFT_FIELDS>},
     "knowledge": [{"kind", "title", "body"(, "source_url", "fetched_at")}, ...]}

A document read from a web page carries its page (``versions.PAGE_FIELDS``: its address and when
it was read, as a published version keeps them), so the imported bot's document is read again
from it as the original's is. Import checks everything the builder checks (``BotSettingsForm``,
the FAQ and document limits, a page's address as the API checks it) and creates nothing unless
the whole file passes; settings the file lacks (an older export) take their defaults, unknown
ones are ignored, and an item without a page (an older export too) is text only. Conversations, channels and versions stay where
they are: a file carries no customer data and no secrets.
"""
from __future__ import annotations

import json

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from .documents import MAX_DOC_CHARS
from .models import Bot, KnowledgeItem
from .services import storable
from .versions import PAGE_FIELDS, snapshot

FORMAT = 1
MAX_BYTES = 5 * 1024 * 1024
MAX_ITEMS = 2000


class TransferError(ValueError):
    pass


def export(bot: Bot) -> dict:
    config = bot.draft_config()
    return {
        "chatnexus_bot": FORMAT,
        "settings": {field: config[field] for field in Bot.DRAFT_FIELDS},
        "knowledge": [{key: item[key] for key in ("kind", "title", "body", *PAGE_FIELDS) if key in item}
                      for item in snapshot(bot, config)["knowledge"]],  # a document's page where it has one
    }


def _checked_page(number: int, item: dict) -> dict:
    """An item's page as ``KnowledgeItem`` fields: {} without one; its address checked as the API
    checks it (the model field's validators: a web address, at most 500 characters)."""
    url = item.get("source_url") or ""
    if not url:
        return {}
    if not isinstance(url, str):
        raise TransferError(f'Knowledge item {number}: "source_url" must be text.')
    url = storable(url)
    try:
        KnowledgeItem._meta.get_field("source_url").clean(url, None)
    except ValidationError as error:
        raise TransferError(f'Knowledge item {number}, "source_url": {" ".join(error.messages)}') from None
    read = item.get("fetched_at")
    if read is not None:
        try:
            read = parse_datetime(read)  # None: not a date
        except (TypeError, ValueError):  # not text; a 30th of February
            read = None
        if read is None:
            raise TransferError(f'Knowledge item {number}, "fetched_at": a date and time such as '
                                '"2025-05-01T09:30:00+00:00", or null.')
        if timezone.is_naive(read):
            read = timezone.make_aware(read)
    return {"source_url": url, "fetched_at": read}


def _checked_knowledge(items) -> list[dict]:
    from .faq_import import MAX_QUESTION

    if not isinstance(items, list) or len(items) > MAX_ITEMS:
        raise TransferError(f'"knowledge" must be a list of at most {MAX_ITEMS} items.')
    checked = []
    for number, item in enumerate(items, 1):
        if not isinstance(item, dict) or item.get("kind") not in KnowledgeItem.Kind.values:
            raise TransferError(f'Knowledge item {number}: "kind" must be one of {", ".join(KnowledgeItem.Kind.values)}.')
        title, body = item.get("title", ""), item.get("body", "")
        if not isinstance(title, str) or not isinstance(body, str) or not body.strip():
            raise TransferError(f'Knowledge item {number}: "title" and "body" must be text, and "body" not empty.')
        if len(title) > MAX_QUESTION or len(body) > MAX_DOC_CHARS:  # what the builder takes (a document's cap)
            raise TransferError(f"Knowledge item {number} is too long (a title at most {MAX_QUESTION} characters, "
                                f"a body {MAX_DOC_CHARS:,}).")
        if item["kind"] == KnowledgeItem.Kind.FAQ and not title.strip():
            raise TransferError(f"Knowledge item {number}: a FAQ pair needs its question (title).")
        checked.append({"kind": item["kind"], "title": storable(title), "body": storable(body),  # NUL, "\ud800"
                        **_checked_page(number, item)})
    return checked


def read(raw: bytes) -> dict:
    """The parsed file; TransferError with a sentence when it is not an exported bot."""
    if len(raw) > MAX_BYTES:
        raise TransferError(f"That file is too large: the limit is {MAX_BYTES // (1024 * 1024)} MB.")
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: "[" * 200000
        raise TransferError("That is not a JSON file exported from ChatNexus.") from None
    if not isinstance(data, dict) or data.get("chatnexus_bot") != FORMAT:
        raise TransferError("That JSON file is not a ChatNexus bot export (no \"chatnexus_bot\": 1).")
    if not isinstance(data.get("settings"), dict):
        raise TransferError('The file has no "settings".')
    return data


@transaction.atomic
def import_bot(organization, data: dict) -> Bot:
    """A new, unpublished bot of ``organization`` from ``read()``'s data; TransferError naming what is wrong."""
    from .forms import BotSettingsForm

    knowledge = _checked_knowledge(data.get("knowledge", []))
    defaults = Bot()
    fields = {field: data["settings"].get(field, getattr(defaults, field)) for field in Bot.DRAFT_FIELDS}
    form_data = {k: ("on" if v is True else "" if v is False else storable(str(v))) for k, v in fields.items()
                 if v is not None}
    # a blank setting is sent blank: left out, the form would keep the model's default instead
    # (an exported bot without handoff triggers came back handing off on "talk to a human")
    form = BotSettingsForm(form_data, instance=Bot(organization=organization))
    if not form.is_valid():
        problems = "; ".join(f"{field}: {' '.join(errors)}" for field, errors in form.errors.items())
        raise TransferError(f"The file's settings do not pass the builder's checks — {problems}")
    bot = form.save()
    KnowledgeItem.objects.bulk_create(KnowledgeItem(bot=bot, **item) for item in knowledge)
    return bot
