"""Django admin for staff: tenants, bots, knowledge, conversations and messages, API tokens, activity
logs (read-only) and second factors (a locked-out user's can be deleted)."""
from django.contrib import admin
from django.forms.models import BaseInlineFormSet
from rest_framework.authtoken.models import TokenProxy

from .models import (ApiToken, AuditEvent, Bot, Conversation, Invitation, KnowledgeItem, Membership, Message,
                     Organization, TwoFactor)

# DRF's plaintext tokens are not how the API authenticates here (bots.api.auth): no admin for them
if admin.site.is_registered(TokenProxy):
    admin.site.unregister(TokenProxy)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Staff see whose token it is and when it was used, and can revoke it; nobody sees a token."""

    list_display = ["user", "start", "created", "last_used"]
    readonly_fields = ["user", "start", "digest", "created", "last_used"]

    def has_add_permission(self, request):
        return False  # tokens are made by their user, at /accounts/api-token/


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    raw_id_fields = ["user"]


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "created"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [MembershipInline]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "organization", "role", "created"]
    list_filter = ["role"]
    search_fields = ["user__username", "user__email", "organization__name"]
    raw_id_fields = ["user", "organization"]


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    """Staff see who is invited, by whom and as what; nobody sees a link (only its token's digest is
    stored: a new link is sent from the Team page)."""

    list_display = ["email", "organization", "role", "accepted", "created"]
    search_fields = ["email", "organization__name"]
    raw_id_fields = ["organization", "invited_by"]
    readonly_fields = ["digest"]


class KnowledgeDeletedForGood(BaseInlineFormSet):
    """An item ticked for deletion goes as the builder deletes it (Bot.delete_knowledge): from the
    live config and every published version too."""

    def delete_existing(self, obj, commit=True):
        if commit:
            obj.bot.delete_knowledge(obj)


class KnowledgeInline(admin.StackedInline):
    model = KnowledgeItem
    formset = KnowledgeDeletedForGood
    extra = 0


@admin.register(Bot)
class BotAdmin(admin.ModelAdmin):
    list_display = ["name", "organization", "published_version", "published_at", "updated"]
    list_filter = ["tone"]
    search_fields = ["name", "company", "organization__name", "public_key"]
    # erasures: the workers' cue to rebuild drafting memory; a form saved from before a purge would set it back
    readonly_fields = ["public_key", "published_config", "published_version", "published_at", "erasures"]
    inlines = [KnowledgeInline]


@admin.register(KnowledgeItem)
class KnowledgeItemAdmin(admin.ModelAdmin):
    list_display = ["title", "kind", "bot", "updated"]
    list_filter = ["kind"]
    search_fields = ["title", "body"]
    raw_id_fields = ["bot"]

    def get_readonly_fields(self, request, obj=None):
        # an item stays with the bot it was made for: that bot's versions hold it (Bot.delete_knowledge)
        return ["bot"] if obj else []

    def delete_model(self, request, obj):  # for good, as the builder deletes (Bot.delete_knowledge)
        obj.bot.delete_knowledge(obj, by=request.user)

    def delete_queryset(self, request, queryset):
        for item in queryset.select_related("bot"):
            item.bot.delete_knowledge(item, by=request.user)


class MessageInline(admin.TabularInline):
    model = Message
    extra = 0
    fields = ["created", "sender", "text", "reply_state", "delivery_status", "delivery_error"]
    readonly_fields = fields
    can_delete = False
    show_change_link = True


class ErasedAsTheInboxErases:
    """Deletions through the services (``eraser``: their function), as the inbox and retention
    make them: the customers' files go too, and the bot's drafting memory is rebuilt without them."""

    eraser = ""

    def delete_model(self, request, obj):
        self.delete_queryset(request, type(obj).objects.filter(id=obj.id))

    def delete_queryset(self, request, queryset):
        from . import services

        getattr(services, self.eraser)(queryset)


@admin.register(Conversation)
class ConversationAdmin(ErasedAsTheInboxErases, admin.ModelAdmin):
    list_display = ["id", "organization", "bot", "channel", "contact_name", "status", "bot_paused", "needs_human", "last_message_at"]  # fmt: skip
    list_filter = ["channel", "status", "bot_paused", "needs_human"]
    search_fields = ["external_id", "contact_name", "contact_email", "contact_phone", "subject"]
    raw_id_fields = ["organization", "bot"]
    inlines = [MessageInline]

    eraser = "delete_conversations"


@admin.register(Message)
class MessageAdmin(ErasedAsTheInboxErases, admin.ModelAdmin):
    list_display = ["id", "conversation", "channel", "sender", "reply_state", "delivery_status", "tokens_per_s", "created"]  # fmt: skip
    list_filter = ["channel", "direction", "sender", "reply_state", "delivery_status"]
    search_fields = ["text", "external_id"]
    raw_id_fields = ["organization", "bot", "conversation", "reply_to"]
    eraser = "delete_messages"


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """The organisations' activity logs, read-only: a log nobody can edit."""

    list_display = ["created", "organization", "actor_name", "action", "text"]
    list_filter = ["action"]
    search_fields = ["text", "actor_name", "organization__name"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(TwoFactor)
class TwoFactorAdmin(admin.ModelAdmin):
    """Staff can turn a locked-out user's two-factor sign-in off (delete); nobody sees its secret."""

    list_display = ["user", "created"]
    fields = ["user", "created"]
    readonly_fields = ["user", "created"]

    def get_queryset(self, request):
        """Without the secret, which no page here shows: a second factor that no listed key decrypts
        (the key changed) can still be listed and deleted, the way its user is let back in."""
        return super().get_queryset(request).defer("secrets")

    def has_add_permission(self, request):
        return False
