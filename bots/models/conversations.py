"""Conversations and messages, across every channel.

Written only through ``bots.services``. Two constraints carry the pipeline's
idempotency: an inbound message is unique per (bot, channel, external_id) —
a redelivered webhook is stored once — and a reply is unique per inbound
message (``reply_to``) — a task that runs twice stores one reply.
"""
from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Lower

from .bots import Bot
from .tenants import Organization


CHANNEL_NAMES = {"widget": "Website widget", "whatsapp": "WhatsApp", "email": "Email", "api": "API",
                 "preview": "Test chat"}  # how pages name a conversation's channel


def channel_name(channel: str) -> str:
    return CHANNEL_NAMES.get(channel, channel)


class Tag(models.Model):
    """A label the team puts on conversations ("billing", "bug"), per organisation; one name once,
    whatever its case."""

    MAX_LENGTH = 40

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="tags")
    name = models.CharField(max_length=MAX_LENGTH)

    class Meta:
        constraints = [models.UniqueConstraint(Lower("name"), "organization", name="one_tag_name_per_organization")]
        ordering = ["name"]

    def __str__(self):
        return self.name


def narrowed(conversations, *, channel: str = "", bot: int | None = None, status: str = "",
             needs_human: bool = False, tag: str = "", q: str = ""):
    """The conversations the inbox's filters and the API's query parameters ask for (each one
    left empty narrows nothing): a channel, a bot, a status, those needing a person, a tag (its
    name in any case), and ``q`` (any case) in a message's words or in who the customer is — name,
    email, phone, or the subject of their mail."""
    if channel:
        conversations = conversations.filter(channel=channel)
    if bot:
        conversations = conversations.filter(bot_id=bot)
    if status:
        conversations = conversations.filter(status=status)
    if needs_human:
        conversations = conversations.filter(needs_human=True)
    if tag:
        conversations = conversations.filter(tags__name__iexact=tag.strip())
    if q.strip():
        q = q.strip()
        conversations = conversations.filter(
            Q(messages__text__icontains=q) | Q(contact_name__icontains=q) | Q(contact_email__icontains=q)
            | Q(contact_phone__icontains=q) | Q(subject__icontains=q)).distinct()
    return conversations


class Conversation(models.Model):
    class Status(models.TextChoices):
        OPEN = "open", "Open"
        CLOSED = "closed", "Closed"

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="conversations")
    bot = models.ForeignKey(Bot, on_delete=models.CASCADE, related_name="conversations")
    channel = models.CharField(max_length=20)  # a key of channels_app.registry.ADAPTERS, or "preview"
    # The channel's own id for the thread: visitor id, phone number, email thread root.
    external_id = models.CharField(max_length=255)
    contact_name = models.CharField(max_length=200, blank=True)
    contact_email = models.EmailField(blank=True)
    contact_phone = models.CharField(max_length=40, blank=True)
    subject = models.CharField(max_length=300, blank=True)  # email threads
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.OPEN)
    # Handoff: the bot stays silent while a human agent has the conversation.
    bot_paused = models.BooleanField(default=False)
    needs_human = models.BooleanField(default=False)
    # When the team was last emailed about this conversation (a handoff, or a customer writing while
    # an agent has it): one email per stretch the customer waits, not one per message (bots/tasks.py).
    team_notified_at = models.DateTimeField(null=True, blank=True)
    # The agent who has it: set when someone takes over or answers an unassigned conversation,
    # or by hand in the inbox; cleared when they leave the organisation.
    tags = models.ManyToManyField(Tag, blank=True, related_name="conversations")
    assignee = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                 related_name="assigned_conversations")
    meta = models.JSONField(default=dict, blank=True)  # channel specifics (e.g. email recipient address)
    created = models.DateTimeField(auto_now_add=True)
    last_message_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["bot", "channel", "external_id"], name="one_conversation_per_thread")
        ]
        ordering = ["-last_message_at"]

    @property
    def display_name(self) -> str:
        """Who the team is talking to: the contact's name, email or phone; an anonymous website
        visitor as "Website visitor" and the end of their id (told apart, not a random token)."""
        known = self.contact_name or self.contact_email or self.contact_phone
        if known:
            return known
        if self.channel == "widget":  # the id's last 4 letters or digits (its "-" / "_" read as typos)
            return f"Website visitor …{''.join(c for c in self.external_id if c.isalnum())[-4:]}"
        return self.external_id

    @property
    def channel_name(self) -> str:
        return channel_name(self.channel)

    @property
    def group_name(self):
        """Channel-layer group that receives this conversation's live events."""
        return f"conversation-{self.id}"


class Message(models.Model):
    class Direction(models.TextChoices):
        INBOUND = "in", "Inbound"
        OUTBOUND = "out", "Outbound"

    class Sender(models.TextChoices):
        CUSTOMER = "customer", "Customer"
        BOT = "bot", "Bot"
        AGENT = "agent", "Agent"
        SYSTEM = "system", "System"
        NOTE = "note", "Internal note"  # an agent's note in the inbox: never sent, never shown to the customer or the model

    class ReplyState(models.TextChoices):
        PENDING = "pending", "Waiting for the bot"
        DONE = "done", "Answered"
        SKIPPED = "skipped", "Not answered (paused, handoff, or filtered)"
        FAILED = "failed", "Failed"
        NONE = "", "—"  # outbound messages

    class Rating(models.IntegerChoices):
        HELPFUL = 1, "Helpful"
        NOT_HELPFUL = -1, "Not helpful"

    class Delivery(models.TextChoices):
        NONE = "", "—"  # inbound messages
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        DELIVERED = "delivered", "Delivered"
        READ = "read", "Read"
        FAILED = "failed", "Failed"

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="messages")
    bot = models.ForeignKey(Bot, on_delete=models.CASCADE, related_name="messages")
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    channel = models.CharField(max_length=20)
    direction = models.CharField(max_length=3, choices=Direction.choices)
    sender = models.CharField(max_length=10, choices=Sender.choices)
    text = models.TextField(blank=True)
    # The channel's id (Twilio MessageSid, email Message-ID, widget client id).
    external_id = models.CharField(max_length=255, blank=True)
    # For a bot reply: the inbound message it answers (one reply per inbound).
    reply_to = models.OneToOneField("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="reply")
    reply_state = models.CharField(max_length=8, choices=ReplyState.choices, blank=True, default="")
    delivery_status = models.CharField(max_length=10, choices=Delivery.choices, blank=True, default="")
    delivery_error = models.TextField(blank=True)
    delivery_attempts = models.PositiveIntegerField(default=0)
    delivery_claimed_at = models.DateTimeField(null=True, blank=True)  # when a deliver task set "sending"
    # Decoding stats of a bot reply (GenerationStats.as_dict() + latency_s).
    stats = models.JSONField(default=dict, blank=True)
    latency_s = models.FloatField(null=True, blank=True)  # the message became the bot's to answer (stored, or given back: meta requeued_at) -> reply stored
    ttft_s = models.FloatField(null=True, blank=True)
    tokens_per_s = models.FloatField(null=True, blank=True)
    acceptance_rate = models.FloatField(null=True, blank=True)
    # A bot reply as the customer rated it in the widget (None: not rated).
    rating = models.SmallIntegerField(choices=Rating.choices, null=True, blank=True)
    meta = models.JSONField(default=dict, blank=True)  # channel specifics (headers, media, errors)
    created = models.DateTimeField(auto_now_add=True, db_index=True)
    # Higher after every insert and update of the row, whoever writes it (a save, a queryset's update):
    # numbered by the database from one counter for all messages (migration 0024's trigger), so it
    # reads 0 on an instance until reloaded. The thread page asks for what changed past its highest.
    version = models.BigIntegerField(default=0, editable=False)

    STOP_NOTES = {"length": "stopped at the reply length limit", "repetition": "cut where it began repeating itself",
                  "time": "stopped at the time limit"}

    @property
    def stop_note(self) -> str:
        """Why a model reply ended, when it was not the model's own choice ("eos", a stop string)."""
        return self.STOP_NOTES.get((self.stats or {}).get("stop_reason", ""), "")

    @property
    def delivery_note(self) -> str:
        """What "sent" meant, where it was less than it says (an email only written to the server's log)."""
        return (self.meta or {}).get("delivery_note", "")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["bot", "channel", "external_id"],
                condition=~Q(external_id=""),
                name="one_message_per_external_id",
            )
        ]
        indexes = [models.Index(fields=["conversation", "version"], name="message_versions")]
        ordering = ["created", "id"]


class ReplyBeat(models.Model):
    """A reply task's start on an inbound message, alive while the model answers it: the task beats it
    every few seconds and removes it once the model is done, whatever the end (``services.answering``).
    Beside the message, not in its row: every write to a message moves its version (migration 0024), and
    a beat there sent the customer's message to the thread page's poll again every few seconds. Times
    are the database's (``Now()``) and compared there: one clock, whatever the worker machines' say."""

    # No foreign key in the database: a start racing an erasure of its message (retention, an agent's
    # delete) must not make the erasure fail at its commit. Deleting a message deletes its beat (Django's
    # cascade); a beat left without its message is one row nobody reads (ids are not used again).
    message = models.OneToOneField(Message, primary_key=True, on_delete=models.CASCADE, db_constraint=False,
                                   related_name="+")
    start = models.CharField(max_length=40)  # the start it beats: the message's meta["started_at"] then
    started_at = models.DateTimeField()  # the database's clock, as alive_at
    alive_at = models.DateTimeField()  # the last beat; the start itself is the first
