"""Serializers of the REST API. Foreign keys a client sends are checked against its organisation."""
from django.conf import settings
from django.urls import reverse
from django.utils import timezone
from rest_framework import serializers

from .. import webpages
from ..documents import MAX_DOC_CHARS, DocumentError
from ..forms import HEX_COLOR, MAX_REPLY_TOKENS, MAX_SUGGESTION_CHARS
from ..models import Attachment, Bot, Conversation, KnowledgeItem, Message, SavedReply, Tag
from ..models.bots import BUILTIN_DRAFTERS, MAX_SUGGESTIONS, drafter_allowed, suggestion_list


class BotSerializer(serializers.ModelSerializer):
    """A bot's draft settings, within the builder form's limits (bots/forms.py BotSettingsForm): what
    the API saves, the builder saves again and the bot's export imports."""

    has_unpublished_changes = serializers.BooleanField(read_only=True)

    class Meta:
        model = Bot
        fields = ["id", "public_key", *Bot.DRAFT_FIELDS, "published_version", "published_at",
                  "has_unpublished_changes", "created", "updated"]  # fmt: skip
        read_only_fields = ["public_key", "published_version", "published_at", "created", "updated"]

    def update(self, instance, validated_data):
        """Only the fields sent are written (a whole-row save would put back the published version and
        erasure count this request loaded, undoing a publish or a purge made meanwhile)."""
        for field, value in validated_data.items():
            setattr(instance, field, value)
        instance.save(update_fields=[*validated_data, "updated"])
        return instance

    def validate_drafter(self, value):
        value = value.strip()
        if not drafter_allowed(value) and (self.instance is None or value != self.instance.drafter):
            allowed = sorted({*BUILTIN_DRAFTERS, *settings.CHATNEXUS_BOT_DRAFTERS} - {""})
            raise serializers.ValidationError(f"Not a drafter this server offers: use one of {allowed}, "
                                              f"or \"\" for the server's default ({settings.CHATNEXUS_DRAFTER}).")
        return value

    def validate_max_reply_tokens(self, value):
        if not 1 <= value <= MAX_REPLY_TOKENS:
            raise serializers.ValidationError(f"Between 1 and {MAX_REPLY_TOKENS}.")
        return value

    def validate_avatar_color(self, value):
        value = value.strip()
        if not HEX_COLOR.match(value):
            raise serializers.ValidationError("Use a hex colour like #4f46e5.")
        return value.lower()

    def validate_suggestions(self, value):
        lines = suggestion_list(value, limit=None)
        if len(lines) > MAX_SUGGESTIONS:
            raise serializers.ValidationError(f"At most {MAX_SUGGESTIONS} suggested questions.")
        if any(len(line) > MAX_SUGGESTION_CHARS for line in lines):
            raise serializers.ValidationError(f"Keep each suggested question under {MAX_SUGGESTION_CHARS} characters.")
        return "\n".join(lines)

    def validate_temperature(self, value):
        if not 0.0 <= value <= 2.0:
            raise serializers.ValidationError("Between 0 and 2.")
        return value


class BotVersionSerializer(serializers.Serializer):
    number = serializers.IntegerField()
    published_at = serializers.DateTimeField()
    published_by = serializers.CharField(allow_null=True, help_text="who published it (null: unknown)")
    changes = serializers.ListField(child=serializers.CharField(), help_text="what it changed from the version before")
    replies = serializers.IntegerField(help_text="bot replies this version gave")
    helpful = serializers.IntegerField(help_text="of them rated 👍")
    not_helpful = serializers.IntegerField(help_text="of them rated 👎")
    config = serializers.JSONField(help_text="the settings and knowledge it published")


class RestoreSerializer(serializers.Serializer):
    version = serializers.IntegerField(min_value=1)


class KnowledgeSerializer(serializers.ModelSerializer):
    """A FAQ pair or a document. A document given a ``source_url`` and no ``body`` is fetched from
    that web page now (its title too, unless given); ``POST .../fetch/`` reads it again. As in the
    builder: a body of at most MAX_DOC_CHARS, and a FAQ pair has its question (``title``). ``bot`` is
    read-only once the item exists (sending the same one again is fine)."""

    bot = serializers.PrimaryKeyRelatedField(queryset=Bot.objects.none())

    class Meta:
        model = KnowledgeItem
        fields = ["id", "bot", "kind", "title", "body", "source_url", "fetched_at", "created", "updated"]
        read_only_fields = ["fetched_at", "created", "updated"]
        extra_kwargs = {"body": {"required": False}}

    def validate(self, data):
        url = data.get("source_url")
        if url and not data.get("body") and (self.instance is None or url != self.instance.source_url):
            if data.get("kind", getattr(self.instance, "kind", KnowledgeItem.Kind.FAQ)) != KnowledgeItem.Kind.DOC:
                raise serializers.ValidationError({"source_url": "Only a document (kind \"doc\") is read from a web page."})
            try:
                title, text = webpages.fetch_document(url)
            except DocumentError as error:
                raise serializers.ValidationError({"source_url": str(error)}) from None
            data.update(body=text, title=data.get("title") or title[:200], fetched_at=timezone.now())
        elif self.instance is None and not data.get("body"):
            raise serializers.ValidationError({"body": "This field is required (or, for a document, a source_url)."})
        kind = data.get("kind", getattr(self.instance, "kind", KnowledgeItem.Kind.FAQ))
        if kind == KnowledgeItem.Kind.FAQ and not data.get("title", getattr(self.instance, "title", "")).strip():
            raise serializers.ValidationError({"title": "A FAQ pair needs its question."})
        return data

    def validate_bot(self, bot):
        """Set when the item is made, never changed: the versions of the bot it was made for hold it
        (an item moved away would stay there, and a restore would bring it back)."""
        if self.instance is not None and bot != self.instance.bot:
            raise serializers.ValidationError("An item stays with the bot it was made for: "
                                              "create it on the other bot instead.")
        return bot

    def validate_body(self, value):
        if len(value) > MAX_DOC_CHARS:
            raise serializers.ValidationError(f"At most {MAX_DOC_CHARS:,} characters (a document's limit in the builder).")
        return value

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        request = self.context.get("request")
        org = getattr(request, "organization", None)
        # Only the organisation's own bots are valid targets: another org's id reads as "does not exist".
        self.fields["bot"].queryset = Bot.objects.filter(organization=org) if org else Bot.objects.none()


class AttachmentSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField(help_text="GET it (same authentication) for the file itself")

    class Meta:
        model = Attachment
        fields = ["id", "index", "filename", "content_type", "size", "sha256", "url"]
        read_only_fields = fields

    def get_url(self, attachment) -> str:
        return reverse("attachment-file", args=[attachment.id])


class MessageSerializer(serializers.ModelSerializer):
    attachments = AttachmentSerializer(many=True, read_only=True, help_text="the customer's files that we keep")
    delivery_note = serializers.CharField(  # Message.delivery_note
        read_only=True, help_text='what "sent" meant, when it was less than sent: "written to the server log only: no SMTP server is '
                  'set up" (an email reply on a server with no mail server); "" otherwise')

    class Meta:
        model = Message
        fields = ["id", "conversation", "channel", "direction", "sender", "text", "reply_to", "reply_state",
                  "delivery_status", "delivery_error", "delivery_note", "stats", "latency_s", "ttft_s", "tokens_per_s",
                  "acceptance_rate", "rating", "attachments", "created"]  # fmt: skip
        read_only_fields = fields


class ConversationSerializer(serializers.ModelSerializer):
    tags = serializers.SlugRelatedField(many=True, read_only=True, slug_field="name",
                                        help_text="the team's tags (set them with control)")

    class Meta:
        model = Conversation
        fields = ["id", "bot", "channel", "external_id", "contact_name", "contact_email", "contact_phone",
                  "subject", "status", "bot_paused", "needs_human", "assignee", "tags", "created",
                  "last_message_at"]  # fmt: skip
        read_only_fields = fields


class SavedReplySerializer(serializers.ModelSerializer):
    title = serializers.CharField(max_length=80)
    text = serializers.CharField(max_length=10_000, help_text="{name} becomes the customer's name when an agent inserts it")

    class Meta:
        model = SavedReply
        fields = ["id", "title", "text", "created_by", "created"]
        read_only_fields = ["created_by", "created"]

    def validate_title(self, title):
        org = getattr(self.context.get("request"), "organization", None)
        if SavedReply.title_taken(org, title, exclude_id=getattr(self.instance, "id", None)):
            raise serializers.ValidationError(SavedReply.TITLE_TAKEN)
        return title


class AgentReplySerializer(serializers.Serializer):
    text = serializers.CharField(max_length=10_000, trim_whitespace=True)
    note = serializers.BooleanField(required=False, default=False,
                                    help_text="an internal note for the team instead of a reply (never sent)")


class ConversationControlSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=Conversation.Status.choices, required=False)
    bot_paused = serializers.BooleanField(required=False)
    assignee = serializers.IntegerField(required=False, allow_null=True,
                                        help_text="a member's user id, or null for nobody")
    tags = serializers.ListField(child=serializers.CharField(max_length=Tag.MAX_LENGTH), required=False,
                                 max_length=50, help_text="the conversation's tags, all of them (names)")


class InboundSerializer(serializers.Serializer):
    """A customer message posted through the API channel."""

    bot = serializers.PrimaryKeyRelatedField(queryset=Bot.objects.none())
    thread = serializers.CharField(max_length=255, help_text="Your id for the conversation (e.g. your user id).")
    text = serializers.CharField(max_length=20_000)
    external_id = serializers.CharField(max_length=255, required=False, default="", help_text="Deduplicates retries.")
    contact_name = serializers.CharField(max_length=200, required=False, default="")
    contact_email = serializers.EmailField(max_length=Conversation._meta.get_field("contact_email").max_length,
                                           required=False, default="")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        org = getattr(self.context.get("request"), "organization", None)
        self.fields["bot"].queryset = Bot.objects.filter(organization=org) if org else Bot.objects.none()
