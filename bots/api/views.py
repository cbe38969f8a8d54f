"""REST API viewsets.

Every queryset goes through ``bots.tenancy.scoped``: another organisation's object
is a 404. Bots, knowledge and stats are for owners and admins; agents use
conversations and messages (as in the inbox).
"""

from django.db import IntegrityError, OperationalError, transaction
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import generics, mixins, permissions, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import Throttled, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from .. import audit, services, stats, transfer, webpages
from ..documents import DocumentError
from ..files import attachment_response
from ..models import ApiToken, Attachment, Bot, BotVersion, Conversation, KnowledgeItem, Message, SavedReply
from ..models.bots import lock_bots
from ..models.conversations import narrowed
from ..models.tenants import person_name
from ..signals import settled_message_ids
from ..tenancy import oldest_first, scoped
from ..versions import published, version_rows
from . import conditional
from . import serializers as s
from .schema import ETAG_HEADER, IF_MATCH_PARAMETER


ORGANIZATION_HEADER = "HTTP_X_ORGANIZATION"  # X-Organization: <slug>


def _resolve_membership(request):
    """The membership a request acts through. Token-authenticated requests pass the middleware
    anonymous, or as whoever the browser's session cookie signs in: find the token user's here.
    A user in several organisations picks one with the ``X-Organization: <slug>`` header (any API
    request); without it, a token request acts for the oldest membership (what the API-token page
    says), even when the browser's cookie also signs the same user in, and a session request for the
    session's choice (the web app's switcher). Returns None when the user is not a member of the
    organisation named (or of any)."""
    django_request = request._request
    wanted = django_request.META.get(ORGANIZATION_HEADER, "").strip()
    resolved = getattr(django_request, "membership", None)  # the middleware's, from the session
    # the session's choice stands for a request the session signed in, not for one its token did
    by_session = not isinstance(request.auth, ApiToken) and resolved is not None and resolved.user_id == request.user.pk
    if request.user.is_authenticated and (wanted or not by_session):
        memberships = oldest_first(request.user)
        membership = memberships.filter(organization__slug=wanted).first() if wanted else memberships.first()
        django_request.membership = membership
        django_request.organization = membership.organization if membership else None
    return getattr(django_request, "membership", None)


class IsMember(permissions.BasePermission):
    message = "You are not a member of an organisation (or of the one X-Organization names)."

    def has_permission(self, request, view):
        return request.user.is_authenticated and _resolve_membership(request) is not None


class IsManager(IsMember):
    message = "Owners and admins only."

    def has_permission(self, request, view):
        return super().has_permission(request, view) and request.membership.can_manage


def _int_param(request, name, least=1):
    """The whole number ``?<name>=`` gives (None when absent or empty), at least ``least`` (ids start
    at 1; None: no bound); anything else a 400 naming it. ``?bot=0`` used to filter nothing, as if
    absent, and ``?reply_to=0`` answered every message instead of a reply."""
    value = request.query_params.get(name)
    if value in (None, ""):
        return None
    try:
        number = int(value)
    except ValueError:
        raise ValidationError({name: "Must be an integer."}) from None
    if least is not None and number < least:
        raise ValidationError({name: f"Must be {least} or more."})
    return number


def _choice_param(request, name, choices):
    """The value ``?<name>=`` gives ("" when absent or empty), one of ``choices``; anything else a 400
    naming it and them. ``?status=Closed`` or ``?channel=sms`` used to answer an empty list, as if
    there were no such conversations."""
    value = request.query_params.get(name, "")
    if value and value not in choices:
        raise ValidationError({name: f"Must be one of: {', '.join(choices)}."})
    return value


class BotViewSet(viewsets.ModelViewSet):
    queryset = Bot.objects.none()  # for the schema only; get_queryset() scopes by organisation
    serializer_class = s.BotSerializer
    permission_classes = [IsManager]

    def get_queryset(self):
        return scoped(self.request, Bot).order_by("id")

    def perform_create(self, serializer):
        bot = serializer.save(organization=self.request.organization)
        audit.record(self.request.organization, self.request.user, "bot.created", f"Created the bot {bot.name} through the API")

    def perform_destroy(self, instance):
        name = instance.name
        instance.delete()
        audit.record(self.request.organization, self.request.user, "bot.deleted", f"Deleted the bot {name} through the API")

    @extend_schema(request=None, responses=s.BotSerializer)
    @action(detail=True, methods=["post"])
    def publish(self, request, pk=None):
        """Freeze the draft (and knowledge) into the published config the channels answer with."""
        bot = self.get_object()
        bot.publish(by=request.user)
        return Response(self.get_serializer(bot).data)

    @extend_schema(responses=dict)
    @action(detail=True, methods=["get"])
    def export(self, request, pk=None):
        """The bot's draft settings and knowledge as a file to import elsewhere (``bots/import``)."""
        return Response(transfer.export(self.get_object()))

    @extend_schema(request=dict, responses={201: s.BotSerializer})
    @action(detail=False, methods=["post"], url_path="import")
    def import_bot(self, request):
        """A new, unpublished bot from an ``export``'s JSON (the request body)."""
        try:
            bot = transfer.import_bot(request.organization, transfer.read(request.body))
        except transfer.TransferError as error:
            raise ValidationError({"detail": str(error)}) from None
        audit.record(request.organization, request.user, "bot.created",
                     f"Imported the bot {bot.name} from a file through the API")
        return Response(self.get_serializer(bot).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses=s.BotVersionSerializer(many=True))
    @action(detail=True, methods=["get"])
    def versions(self, request, pk=None):
        """Every published version, newest first: what changed, replies given, 👍 and 👎 counts."""
        rows = version_rows(self.get_object())
        return Response(s.BotVersionSerializer([{**row, **_version_fields(row["version"])} for row in rows], many=True).data)

    @extend_schema(request=s.RestoreSerializer, responses=s.BotSerializer)
    @action(detail=True, methods=["post"])
    def restore(self, request, pk=None):
        """Put a published version's settings and knowledge back into the draft (publish to make it live)."""
        bot = self.get_object()
        body = s.RestoreSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        version = get_object_or_404(scoped(request, BotVersion), bot=bot, number=body.validated_data["version"])
        bot.restore(version, by=request.user)
        return Response(self.get_serializer(Bot.objects.get(id=bot.id)).data)

    @extend_schema(parameters=[OpenApiParameter("days", int)], responses=dict)
    @action(detail=True, methods=["get"])
    def stats(self, request, pk=None):
        return Response(stats.summary(request.organization, bot=self.get_object(), days=_days(request)))


def _version_fields(version):
    by = version.published_by
    return {"number": version.number, "published_at": version.published_at, "config": published(version),
            "published_by": person_name(by) if by else None}


_ONE_ITEM = OpenApiResponse(s.KnowledgeSerializer, description="the item; its ETag in the ETag header")
_STALE = OpenApiResponse(description="If-Match names an ETag the item no longer has: nothing was changed")
_CONDITIONAL_WRITE = extend_schema(parameters=[IF_MATCH_PARAMETER, ETAG_HEADER],
                                   responses={200: _ONE_ITEM, 412: _STALE})


@extend_schema_view(
    retrieve=extend_schema(parameters=[ETAG_HEADER]),
    create=extend_schema(parameters=[ETAG_HEADER]),
    update=_CONDITIONAL_WRITE,
    partial_update=_CONDITIONAL_WRITE,
    destroy=extend_schema(parameters=[IF_MATCH_PARAMETER], responses={204: None, 412: _STALE}),
)
class KnowledgeViewSet(viewsets.ModelViewSet):
    """Knowledge items; filter by ``?bot=<id>``. ``DELETE`` is for good: the item goes from the
    draft, the live config and every published version at once. One item comes with its ``ETag``;
    ``PUT``, ``PATCH`` and ``DELETE`` with ``If-Match: <that ETag>`` are refused (412) when the item
    changed since (bots/api/conditional.py)."""

    queryset = KnowledgeItem.objects.none()  # for the schema only; get_queryset() scopes by organisation
    serializer_class = s.KnowledgeSerializer
    permission_classes = [IsManager]

    def get_queryset(self):
        items = scoped(self.request, KnowledgeItem).order_by("id")
        bot = _int_param(self.request, "bot")
        return items.filter(bot_id=bot) if bot else items

    def retrieve(self, request, *args, **kwargs):
        return conditional.tagged(super().retrieve(request, *args, **kwargs))

    def create(self, request, *args, **kwargs):
        return conditional.tagged(super().create(request, *args, **kwargs))

    def update(self, request, *args, **kwargs):  # PUT, and PATCH through partial_update
        if conditional.IF_MATCH not in request.META:
            return conditional.tagged(super().update(request, *args, **kwargs))
        return conditional.tagged(self._update_if_unchanged(partial=kwargs.get("partial", False)))

    def destroy(self, request, *args, **kwargs):
        if conditional.IF_MATCH not in request.META:
            return super().destroy(request, *args, **kwargs)
        with transaction.atomic():
            # the organisation's bots first, as Bot.delete_knowledge does and Bot.restore before it
            # writes the item: bots then the item, the order they take
            lock_bots(Bot.objects.filter(organization=request.organization).values("id"))
            self._etag_if_matched(self._locked_item())
            return super().destroy(request, *args, **kwargs)

    # Attempts of a write with If-Match at an item that changes between its validation and its save
    # (only "*" or a list of ETags goes on after such a change; any other If-Match is refused then).
    _WRITE_ATTEMPTS = 3

    def _update_if_unchanged(self, partial):
        """The write of ``If-Match``, refused (412) when the item's ETag is not the one given. Validation,
        which fetches a new ``source_url``'s page (up to CHATNEXUS_FETCH_TIMEOUT_S), runs before the
        transaction: holding the item's row (PostgreSQL) or the whole database's write lock (SQLite)
        meanwhile made every other write wait for the web page, or fail ("database is locked"). The
        transaction then locks the row and saves only if the item is still the one validated: no other
        save, deletion, restore or Fetch again between the check and the write."""
        for _ in range(self._WRITE_ATTEMPTS):
            read = self.get_object()
            validated_on = self._etag_if_matched(read)  # unlocked first: a stale write fetches no page
            serializer = self.get_serializer(read, data=self.request.data, partial=partial)
            serializer.is_valid(raise_exception=True)
            with transaction.atomic():
                item = self._locked_item()
                if self._etag_if_matched(item) == validated_on:
                    serializer.instance = item
                    self.perform_update(serializer)
                    return Response(serializer.data)
        raise conditional.PreconditionFailed()

    def _locked_item(self):
        """The item, its row locked until the transaction ends (DRF's get_object_or_404: an id that is no
        number is a 404, not a 500)."""
        return generics.get_object_or_404(self.get_queryset().select_for_update(of=("self",)), pk=self.kwargs["pk"])

    def _etag_if_matched(self, item) -> str:
        """``item``'s ETag, when the request's If-Match names it (or is ``*``); else 412."""
        current = conditional.etag(self.get_serializer(item).data)
        conditional.check_if_match(self.request, current)
        return current

    def perform_destroy(self, instance):
        """For good: from the draft, the live config and every published version (Bot.delete_knowledge)."""
        instance.bot.delete_knowledge(instance, by=self.request.user)

    @extend_schema(request=None, responses=s.KnowledgeSerializer, parameters=[ETAG_HEADER])
    @action(detail=True, methods=["post"])
    def fetch(self, request, pk=None):
        """Read a document's web page (``source_url``) again: its text becomes the page's text now
        (in the draft). 400 with the reason when the page cannot be read; nothing changes then."""
        item = self.get_object()
        if not item.source_url:
            raise ValidationError({"source_url": ["This document was not read from a web page."]})
        try:
            webpages.read_again(item)
        except DocumentError as error:
            raise ValidationError({"source_url": [str(error)]}) from None
        return conditional.tagged(Response(self.get_serializer(item).data))


class SavedReplyViewSet(viewsets.ModelViewSet):
    """The organisation's saved replies (canned answers agents insert): every member reads
    them, owners and admins add, edit and delete them."""

    queryset = SavedReply.objects.none()  # for the schema only; get_queryset() scopes by organisation
    serializer_class = s.SavedReplySerializer
    permission_classes = [IsMember]

    def get_permissions(self):
        return [IsMember()] if self.action in ("list", "retrieve") else [IsManager()]

    def get_queryset(self):
        return scoped(self.request, SavedReply).order_by("title")

    def perform_create(self, serializer):
        self._saved(serializer, organization=self.request.organization, created_by=self.request.user)

    def perform_update(self, serializer):
        self._saved(serializer)

    @staticmethod
    def _saved(serializer, **fields):
        """Save; the title taken meanwhile (the same request sent twice at once: one_saved_reply_per_title)
        is the 400 the serializer gives a title already taken, not a 500."""
        try:
            with transaction.atomic():
                serializer.save(**fields)
        except IntegrityError:
            raise ValidationError({"title": [SavedReply.TITLE_TAKEN]}) from None


class ConversationViewSet(mixins.DestroyModelMixin, viewsets.ReadOnlyModelViewSet):
    """Conversations; filter by ``?channel=``, ``?bot=``, ``?status=``, ``?needs_human=1``, ``?tag=``,
    and search with ``?q=`` (a message's words, the customer's name, email or phone, the subject).
    DELETE (owners and admins) erases one: messages, customers' files, the bot's memory of it."""

    queryset = Conversation.objects.none()  # for the schema only; get_queryset() scopes by organisation
    serializer_class = s.ConversationSerializer
    permission_classes = [IsMember]

    def get_permissions(self):
        return [IsManager()] if self.action == "destroy" else super().get_permissions()

    def perform_destroy(self, instance):
        label = services.erasure_label(instance)
        services.delete_conversations(Conversation.objects.filter(id=instance.id))
        audit.record(self.request.organization, self.request.user, "conversation.deleted",
                     f"Deleted {label} through the API")

    def get_queryset(self):
        from channels_app.registry import ADAPTERS

        conversations = scoped(self.request, Conversation).exclude(channel="preview").order_by("-last_message_at")
        params = self.request.query_params
        channels = [channel for channel in ADAPTERS if channel != "preview"]  # test chats are not listed
        conversations = narrowed(conversations, channel=_choice_param(self.request, "channel", channels),
                                 bot=_int_param(self.request, "bot"),
                                 status=_choice_param(self.request, "status", Conversation.Status.values),
                                 needs_human=params.get("needs_human") in ("1", "true"),
                                 tag=params.get("tag", ""), q=params.get("q", "")[:200])
        return conversations.prefetch_related("tags")

    @extend_schema(request=s.InboundSerializer, responses={201: s.MessageSerializer, 200: s.MessageSerializer})
    @action(detail=False, methods=["post"], permission_classes=[IsManager])
    def inbound(self, request):
        """Post a customer message on the ``api`` channel; the bot's reply appears in ``messages``
        (``GET /api/messages/?reply_to=<id>``) and, when the bot's API channel has a reply webhook,
        is POSTed there signed (bots/api/webhook.py).

        201 when stored (the reply is queued), 200 when ``external_id`` was seen before.
        """
        body = s.InboundSerializer(data=request.data, context={"request": request})
        body.is_valid(raise_exception=True)
        data = body.validated_data
        received = services.receive(
            bot=data["bot"],
            channel="api",
            thread_id=data["thread"],
            text=data["text"],
            external_id=data["external_id"],
            contact={"name": data["contact_name"], "email": data["contact_email"]},
        )
        return Response(
            s.MessageSerializer(received.message).data,
            status=status.HTTP_201_CREATED if received.created else status.HTTP_200_OK,
        )

    @extend_schema(responses=s.MessageSerializer(many=True))
    @action(detail=True, methods=["get"])
    def messages(self, request, pk=None):
        conversation = self.get_object()
        messages = conversation.messages.prefetch_related("attachments").order_by("created", "id")
        return Response(s.MessageSerializer(messages, many=True).data)

    @extend_schema(request=s.AgentReplySerializer, responses={201: s.MessageSerializer})
    @action(detail=True, methods=["post"])
    def reply(self, request, pk=None):
        """Answer as the signed-in agent (delivered through the conversation's channel; pauses the
        bot), or with ``note: true`` add an internal note for the team (never sent)."""
        conversation = self.get_object()
        body = s.AgentReplySerializer(data=request.data)
        body.is_valid(raise_exception=True)
        write = services.add_note if body.validated_data.get("note") else services.agent_reply
        message = write(conversation, request.user, body.validated_data["text"])
        return Response(s.MessageSerializer(message).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=s.ConversationControlSerializer, responses=s.ConversationSerializer)
    @action(detail=True, methods=["post"])
    def control(self, request, pk=None):
        """Close/reopen (``status``), take over/give back (``bot_paused``), assign (``assignee``), set the
        tags (``tags``: the whole list of names; new names become the organisation's tags)."""
        conversation = self.get_object()
        body = s.ConversationControlSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        if "assignee" in body.validated_data:
            try:
                services.assign(conversation, body.validated_data["assignee"])
            except ValueError:
                raise ValidationError({"assignee": "Not a member of this organisation."}) from None
        if "bot_paused" in body.validated_data:
            services.set_bot_paused(conversation, body.validated_data["bot_paused"], by=request.user)
        if "status" in body.validated_data:
            services.set_status(conversation, body.validated_data["status"])
        if "tags" in body.validated_data:
            services.set_tags(conversation, body.validated_data["tags"])
        return Response(s.ConversationSerializer(conversation).data)


class MessageViewSet(viewsets.ReadOnlyModelViewSet):
    """Messages, newest first; filter by ``?conversation=<id>``, ``?reply_to=<id>`` (the bot's reply to
    a message posted through ``conversations/inbound``: empty until it is written) and
    ``?after=<id>`` (only messages newer than that one: what a poller has not seen yet, oldest first,
    so that more than a page of them comes page by page, or poll by poll, with none skipped)."""

    queryset = Message.objects.none()  # for the schema only; get_queryset() scopes by organisation
    serializer_class = s.MessageSerializer
    permission_classes = [IsMember]

    def get_queryset(self):
        messages = scoped(self.request, Message).exclude(channel="preview").prefetch_related("attachments").order_by("-id")
        if conversation := _int_param(self.request, "conversation"):
            messages = messages.filter(conversation_id=conversation)
        if reply_to := _int_param(self.request, "reply_to"):
            messages = messages.filter(reply_to_id=reply_to)
        if (after := _int_param(self.request, "after", least=0)) is not None:  # 0 too: everything
            messages = messages.filter(id__gt=after).order_by("id")
            try:  # nothing past the mark: a message with a lower id than those returned cannot commit later
                mark = settled_message_ids(self.request.organization.id)
            except OperationalError:  # messages being stored for longer than the settle timeout
                raise Throttled(wait=1, detail="Messages are being stored; ask again in a moment.") from None
            if mark is not None:
                messages = messages.filter(id__lte=mark)
        return messages


class AttachmentFileView(APIView):
    """A file a customer sent (``messages[].attachments[].url``), for members of its
    organisation; served like the inbox serves it (bots/files.py)."""

    permission_classes = [IsMember]

    @extend_schema(responses={(200, "application/octet-stream"): bytes})
    def get(self, request, attachment_id):
        return attachment_response(get_object_or_404(scoped(request, Attachment), id=attachment_id))


def _days(request):
    days = _int_param(request, "days", least=None)
    if days is None:
        return 14
    if not 1 <= days <= 365:  # 0 too: it used to mean 14
        raise ValidationError({"days": "Between 1 and 365."})
    return days


class StatsView(APIView):
    """The organisation's dashboard numbers (``?days=14``)."""

    permission_classes = [IsManager]

    @extend_schema(parameters=[OpenApiParameter("days", int)], responses=dict)
    def get(self, request):
        return Response(stats.summary(request.organization, days=_days(request)))
