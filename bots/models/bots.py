"""Bots as the no-code builder edits them, and their knowledge.

The builder edits the *draft* fields in place. ``publish()`` freezes the draft and
the knowledge into ``published_config``, the only thing the pipeline reads, so
edits go live only when published. Each publish is kept as a ``BotVersion``;
``restore()`` brings one back into the draft (the builder's Versions tab).
"""
import secrets

from django.conf import settings
from django.db import connection, models, transaction
from django.utils import timezone

from .tenants import Organization


def _public_key():
    return "bot_" + secrets.token_urlsafe(18)


HANDOFF_MESSAGE = "I've asked a member of our team to join this conversation. They'll reply here shortly."
AWAY_MESSAGE = "Our team is away right now. I've passed your message on: they'll reply here when they're back."
NO_TEXT_MESSAGE = ("Thanks, I've kept your file for our team. I can't see photos, play voice notes or read a "
                   "file without text — could you tell me in words what you need?")
MAX_SUGGESTIONS = 4  # suggested questions: buttons under the greeting (widget, test chat)


def suggestion_list(text, limit=MAX_SUGGESTIONS) -> list[str]:
    """A config's suggested questions, one per line (blank lines dropped), at most ``limit`` (None: all)."""
    return [line.strip() for line in (text or "").splitlines() if line.strip()][:limit]


BUILTIN_DRAFTERS = ("", "suffix", "lookup", "suffix+lookup", "none")  # "": the worker's CHATNEXUS_DRAFTER


def drafter_allowed(spec: str) -> bool:
    """Whether a bot may use drafter ``spec`` on this server: a built-in one, the worker's default,
    or one the operator listed in CHATNEXUS_BOT_DRAFTERS."""
    return spec in BUILTIN_DRAFTERS or spec == settings.CHATNEXUS_DRAFTER or spec in settings.CHATNEXUS_BOT_DRAFTERS

class Bot(models.Model):
    class Tone(models.TextChoices):
        FRIENDLY = "friendly", "Friendly"
        FORMAL = "formal", "Formal"
        PLAYFUL = "playful", "Playful"
        CONCISE = "concise", "Concise and factual"

    class Length(models.TextChoices):
        SHORT = "short", "Short (1–2 sentences)"
        MEDIUM = "medium", "Medium (a short paragraph)"
        LONG = "long", "Detailed"

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="bots")
    # Public identifier used by the widget snippet; never the database id.
    public_key = models.CharField(max_length=40, unique=True, default=_public_key)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    # -- persona
    name = models.CharField(max_length=80, default="Assistant")  # the bot's display name
    role = models.CharField(max_length=120, blank=True, default="customer support assistant")
    company = models.CharField(max_length=120, blank=True)
    avatar_color = models.CharField(max_length=7, default="#4f46e5")  # hex colour for avatar/launcher

    # -- brand voice
    tone = models.CharField(max_length=12, choices=Tone.choices, default=Tone.FRIENDLY)
    voice_notes = models.TextField(blank=True)  # free notes: words to use, words to avoid
    use_emoji = models.BooleanField(default=False)
    reply_length = models.CharField(max_length=8, choices=Length.choices, default=Length.SHORT)

    # -- behaviour
    greeting = models.CharField(max_length=300, blank=True, default="Hi! How can I help you today?")
    instructions = models.TextField(blank=True)
    topics_to_avoid = models.TextField(blank=True)  # one per line
    fallback_answer = models.CharField(
        max_length=300, blank=True, default="I'm not sure about that — let me get a colleague to help."
    )
    handoff_triggers = models.TextField(blank=True, default="talk to a human\nspeak to an agent\nreal person")
    # What the customer is told when the conversation goes to the team (blank: HANDOFF_MESSAGE).
    handoff_message = models.CharField(max_length=300, blank=True, default=HANDOFF_MESSAGE)
    # ... instead, outside the organisation's team hours (bots/hours.py; blank: AWAY_MESSAGE).
    away_message = models.CharField(max_length=300, blank=True, default=AWAY_MESSAGE)
    # The reply to files alone with nothing the model can read: a photo, a voice note, a scanned
    # PDF (bots/files.py; blank: NO_TEXT_MESSAGE).
    no_text_message = models.CharField(max_length=300, blank=True, default=NO_TEXT_MESSAGE)
    # Questions the widget offers as buttons under the greeting of a new conversation (one per line).
    suggestions = models.TextField(blank=True, default="")

    # -- model settings
    temperature = models.FloatField(default=0.0)  # 0 = greedy (deterministic)
    max_reply_tokens = models.PositiveIntegerField(default=160)
    drafter = models.CharField(max_length=120, blank=True, default="")  # engine drafter spec; "" = CHATNEXUS_DRAFTER

    # -- publishing
    published_config = models.JSONField(null=True, blank=True)  # frozen draft + knowledge
    published_version = models.PositiveIntegerField(default=0)
    published_at = models.DateTimeField(null=True, blank=True)

    # Bumped whenever conversations of the bot are deleted: inference workers then rebuild the
    # bot's suffix index from what is still stored (inference/runtime.py).
    erasures = models.PositiveIntegerField(default=0)

    DRAFT_FIELDS = (
        "name", "role", "company", "avatar_color", "tone", "voice_notes", "use_emoji",
        "reply_length", "greeting", "instructions", "topics_to_avoid", "fallback_answer",
        "handoff_triggers", "handoff_message", "away_message", "no_text_message", "suggestions", "temperature", "max_reply_tokens", "drafter",
    )  # fmt: skip

    def __str__(self):
        return self.name

    def draft_config(self):
        """The builder's current (unpublished) state as a plain dict, knowledge included."""
        config = {field: getattr(self, field) for field in self.DRAFT_FIELDS}
        config["knowledge"] = [item.as_dict() for item in self.knowledge.order_by("id")]
        return config

    @property
    def has_unpublished_changes(self):
        return self.published_config != self.draft_config()

    @transaction.atomic
    def publish(self, by=None):
        """Make the draft live as the next version (kept in ``versions``); ``by``: who published."""
        # one publish at a time; FOR NO KEY UPDATE: inbound messages (rows referencing the bot) still go in
        locked = Bot.objects.select_for_update(no_key=True).only("published_version").get(id=self.id)
        self.published_version = locked.published_version + 1
        self.published_config = self.draft_config()
        self.published_at = timezone.now()
        self.save(update_fields=["published_config", "published_version", "published_at", "updated"])
        from ..audit import record
        from ..versions import snapshot

        record(self.organization, by, "bot.published", f"Published {self.name} version {self.published_version}")
        return BotVersion.objects.create(organization_id=self.organization_id, bot=self, number=self.published_version,
                                         config=snapshot(self, self.published_config), published_at=self.published_at,
                                         published_by=by if getattr(by, "pk", None) else None)

    @transaction.atomic
    def restore(self, version, by=None):
        """Bring ``version``'s settings and knowledge back into the draft, exactly: afterwards
        ``draft_config() == versions.published(version)`` (knowledge items keep their ids, and a
        document read from a web page its address: ``versions.snapshot``). Not live until published.
        ``version`` is read again under the bot's lock: a deletion (``delete_knowledge``) that
        committed since the caller loaded it stays deleted."""
        from ..versions import restored_fields

        lock_bots([self.id])  # as publish and delete_knowledge
        version = BotVersion.objects.get(id=version.id, bot=self)
        config = version.config
        for field in self.DRAFT_FIELDS:
            if field in config:
                setattr(self, field, config[field])
        self.save(update_fields=[*self.DRAFT_FIELDS, "updated"])
        wanted = {item["id"]: item for item in config.get("knowledge", [])}
        self.knowledge.exclude(id__in=wanted).delete()
        mine = set(self.knowledge.values_list("id", flat=True))
        taken = set(KnowledgeItem.objects.filter(id__in=set(wanted) - mine).values_list("id", flat=True))
        for item_id, item in wanted.items():
            fields = restored_fields(item)
            if item_id in mine:
                KnowledgeItem.objects.filter(id=item_id).update(**fields)
            else:  # deleted since: back under its old id (ids are never handed out twice) unless that is taken
                KnowledgeItem.objects.create(bot=self, **fields, **({} if item_id in taken else {"id": item_id}))
        from ..audit import record

        record(self.organization, by, "bot.restored", f"Restored version {version.number} of {self.name} into its draft")

    @transaction.atomic
    def delete_knowledge(self, item, by=None):
        """Delete a knowledge item for good: from the draft, from the live config (at once, without
        a publish) and from every published version, which keeps the rest and counts what went
        (``BotVersion.KNOWLEDGE_DELETED``). Nothing of its text stays stored, and restoring a
        version no longer brings it back. (A restore's own deletions are no erasure: what the draft
        drops there stays in the versions that had it.) Every bot of the organisation is cleaned,
        not only this one: an item moved from another bot (the API and the admin allowed it once)
        is in that bot's live config and versions too. Other organisations are never touched."""
        # Every bot of the organisation locked, in id order as every lock or update of several bots
        # (lock_bots: no deadlock with another deletion or an erasure): no publish or restore meanwhile
        # puts the item back. FOR NO KEY UPDATE: inbound messages for these bots still go in.
        bots = list(Bot.objects.select_for_update(no_key=True).filter(organization_id=self.organization_id)
                    .order_by("id").only("id", "published_config"))
        KnowledgeItem.objects.filter(id=item.id, bot=self).delete()
        for bot in bots:
            config = None if bot.published_config is None else _without(bot.published_config, item.id)
            if config is not bot.published_config:
                Bot.objects.filter(id=bot.id).update(published_config=config)
            if bot.id == self.id:
                self.published_config = config
        changed, versions = [], BotVersion.objects.filter(bot__organization_id=self.organization_id)
        if connection.features.supports_json_field_contains:  # PostgreSQL: only the versions that have it
            versions = versions.filter(config__knowledge__contains=[{"id": item.id}])
        for version in versions:
            config = _without(version.config, item.id)
            if config != version.config:
                deleted = config.get(BotVersion.KNOWLEDGE_DELETED, 0) + 1
                version.config = {**config, BotVersion.KNOWLEDGE_DELETED: deleted}
                changed.append(version)
        BotVersion.objects.bulk_update(changed, ["config"])
        from ..audit import record

        what = "an FAQ pair" if item.kind == KnowledgeItem.Kind.FAQ else "a document"  # not its title: that goes too
        record(self.organization, by, "bot.knowledge_deleted",
               f"Deleted {what} of {self.name} for good: from the draft, the live bot and every published version")

    def live_config(self, draft=False):
        """What the pipeline uses: the published config; the draft for the builder preview and for a
        bot never published (its channels answer from what was saved, as the builder says)."""
        if draft or self.published_config is None:
            return self.draft_config()
        return self.published_config


def lock_bots(bot_ids) -> list[int]:
    """Lock these bots' rows (FOR NO KEY UPDATE, until the transaction ends) in id order, the order
    every lock or update of several bots takes them in: an UPDATE alone takes its rows in the order
    it finds them on disk, and two transactions each holding a bot the other waits for deadlock.
    Inbound messages (rows referencing the bots) still go in meanwhile. Returns the ids locked."""
    return list(Bot.objects.select_for_update(no_key=True).filter(id__in=bot_ids).order_by("id")
                .values_list("id", flat=True))


def _without(config: dict, item_id: int) -> dict:
    """``config`` with knowledge item ``item_id`` left out (the same dict when it has none)."""
    knowledge = config.get("knowledge", [])
    kept = [entry for entry in knowledge if entry.get("id") != item_id]
    return config if len(kept) == len(knowledge) else {**config, "knowledge": kept}


class KnowledgeItem(models.Model):
    class Kind(models.TextChoices):
        FAQ = "faq", "FAQ pair"
        DOC = "doc", "Document (text / markdown)"

    bot = models.ForeignKey(Bot, on_delete=models.CASCADE, related_name="knowledge")
    kind = models.CharField(max_length=3, choices=Kind.choices, default=Kind.FAQ)
    title = models.CharField(max_length=200, blank=True)  # FAQ question or document title
    body = models.TextField()  # FAQ answer or document text
    # A document fetched from a web page: its address, to fetch it again (bots/webpages.py). Not part
    # of the published config: what the bot knows is the text; each version keeps it for a restore.
    source_url = models.URLField(max_length=500, blank=True)
    fetched_at = models.DateTimeField(null=True, blank=True)  # when that page was last read
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    def as_dict(self):
        return {"id": self.id, "kind": self.kind, "title": self.title, "body": self.body}


class BotVersion(models.Model):
    """One publish of a bot: what went live, when, and who made it live."""

    # config's count of knowledge items deleted for good since (Bot.delete_knowledge): not a draft field
    KNOWLEDGE_DELETED = "knowledge_deleted"

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    bot = models.ForeignKey(Bot, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    config = models.JSONField()  # the draft as published (Bot.draft_config()), knowledge included
    published_at = models.DateTimeField()
    published_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="+")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["bot", "number"], name="one_version_number_per_bot")]
        ordering = ["-number"]

    def __str__(self):
        return f"{self.bot} v{self.number}"
