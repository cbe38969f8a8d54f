"""The inbox: conversations across channels, a thread page, and what agents do there.

Agents answer (``services.agent_reply`` → delivered through the conversation's own
channel), take over or give back to the bot, close and reopen. The thread page
refreshes by polling ``thread_json`` (small, cheap, works through any proxy): the messages changed since
it last asked and the conversation's state, so two agents with the thread open see what the other did.
A form that stores a message carries a one-time token (``services.store_once``): sent twice,
it stores and delivers one message.
"""
import secrets

from django import forms
from django.contrib import messages as flash
from django.core.paginator import Paginator
from django.db.models import Count, F, Max, OuterRef, Q, Subquery, Sum
from django.http import HttpResponseBadRequest, JsonResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from .. import audit, services
from ..files import attachment_response
from ..models import Attachment, Bot, Conversation, Membership, Message, SavedReply, Tag
from ..models.conversations import channel_name, narrowed
from ..tenancy import get_scoped_or_404, scoped
from .decorators import manager_required, member_required
from .downloads import csv_download

MAX_AGENT_REPLY = 10_000
ACTIONS = ("take-over", "give-back", "close", "reopen")


class Filters(forms.Form):
    channel = forms.CharField(required=False, max_length=20)
    bot = forms.IntegerField(required=False, min_value=1)
    status = forms.ChoiceField(required=False, choices=[("", "Any")] + Conversation.Status.choices)
    needs_human = forms.BooleanField(required=False)
    not_helpful = forms.BooleanField(required=False)  # a customer rated a bot reply 👎
    assignee = forms.ChoiceField(required=False, choices=[("", "Anyone"), ("me", "Me"), ("none", "Nobody")])
    q = forms.CharField(required=False, max_length=200)
    tag = forms.CharField(required=False, max_length=Tag.MAX_LENGTH)


def filtered_conversations(request, data):
    """The organisation's conversations narrowed by the (validated) filter form."""
    form = Filters(data)
    conversations = scoped(request, Conversation).select_related("bot", "assignee")
    if form.is_valid():
        f = form.cleaned_data
        conversations = narrowed(conversations, channel=f["channel"], bot=f["bot"], status=f["status"],
                                 needs_human=f["needs_human"], tag=f["tag"], q=f["q"])
        if f["assignee"] == "me":
            conversations = conversations.filter(assignee=request.user)
        elif f["assignee"] == "none":
            conversations = conversations.filter(assignee__isnull=True)
        if f["not_helpful"]:
            conversations = conversations.filter(messages__rating=Message.Rating.NOT_HELPFUL).distinct()
    return form, conversations.exclude(channel="preview").order_by("-last_message_at")


@manager_required
def export(request):
    """The filtered conversations' messages as CSV (owners and admins), one row per message,
    streamed: any number of conversations, constant memory."""
    form, conversations = filtered_conversations(request, request.GET)
    if not form.is_valid():
        return HttpResponseBadRequest("Bad filters.\n", content_type="text/plain; charset=utf-8")
    rows = (Message.objects.filter(conversation__in=conversations.values("id"))
            .select_related("conversation__assignee", "bot").prefetch_related("conversation__tags", "attachments")
            .order_by("conversation_id", "created", "id"))

    def lines():
        for m in rows.iterator(chunk_size=500):
            c = m.conversation
            yield [
                c.id, m.bot.name, c.channel, c.contact_name, c.contact_email, c.contact_phone, c.subject, c.status,
                c.assignee.get_username() if c.assignee else "",
                m.id, m.created.isoformat(), m.direction, m.sender, m.text, m.delivery_status,
                "" if m.rating is None else m.get_rating_display(), len(attachments(m)),
                ", ".join(sorted(t.name for t in c.tags.all())),
            ]

    return csv_download("conversations", EXPORT_COLUMNS, lines())


EXPORT_COLUMNS = ["conversation", "bot", "channel", "contact_name", "contact_email", "contact_phone", "subject",
                  "status", "assignee", "message", "created", "direction", "sender", "text", "delivery", "rating", "attachments",
                  "tags"]


@member_required
def conversation_list(request):
    form, conversations = filtered_conversations(request, request.GET)
    stamp = _stamp(conversations)
    if request.GET.get("format") == "stamp":  # inbox.js polls this to say when the list is out of date
        return JsonResponse({"stamp": stamp}, status=200 if form.is_valid() else 400)
    latest = Message.objects.filter(conversation=OuterRef("pk")).exclude(sender=Message.Sender.NOTE).order_by("-id")
    conversations = conversations.annotate(last_text=Subquery(latest.values("text")[:1]),
                                           last_sender=Subquery(latest.values("sender")[:1]))
    page = Paginator(conversations.prefetch_related("tags"), 50).get_page(request.GET.get("page"))
    channels = (
        scoped(request, Conversation).exclude(channel="preview").values_list("channel", flat=True).distinct()
    )
    context = {
        "form": form,
        "page": page,
        "bots": scoped(request, Bot).order_by("name"),
        "channels": sorted((channel, channel_name(channel)) for channel in set(channels)),
        "statuses": Conversation.Status.choices,
        "tags": scoped(request, Tag).order_by("name"),
        "query": request.GET.urlencode(),
        "stamp": stamp,
        "members": scoped(request, Membership).select_related("user").order_by("user__username"),
        "bulk_actions": BULK_ACTIONS,
    }
    return render(request, "inbox/list.html", context, status=200 if form.is_valid() else 400)


BULK_ACTIONS = {"close": "Close", "reopen": "Reopen", "assign": "Assign to", "tag": "Add the tag"}
MAX_BULK = 200  # conversations one bulk action takes (the list shows 50 a page)


@member_required
@require_POST
def bulk(request):
    """One action on the conversations ticked in the list: close, reopen, assign (``assignee``:
    a member, or empty for nobody) or add a tag (``tag``). Ids of other organisations' conversations
    are not found, like any other unknown id; back to the list with its filters (``query``)."""
    back = reverse("inbox:list") + (f"?{QueryDict(request.POST.get('query', '')).urlencode()}"
                                    if request.POST.get("query") else "")
    action = request.POST.get("action", "")
    ids = [int(value) for value in request.POST.getlist("ids") if value.isascii() and value.isdigit()
           and len(value) < 19][:MAX_BULK]  # "²" is a digit to isdigit() but no int; ids fit in 64 bits
    conversations = list(scoped(request, Conversation).filter(id__in=ids).exclude(channel="preview"))
    if action not in BULK_ACTIONS or not conversations:
        flash.error(request, "Tick the conversations first." if action in BULK_ACTIONS else "Choose what to do.")
        return redirect(back)
    try:
        if action in ("close", "reopen"):
            status = Conversation.Status.CLOSED if action == "close" else Conversation.Status.OPEN
            for conversation in conversations:
                services.set_status(conversation, status)
            done = "Closed" if action == "close" else "Reopened"
        elif action == "assign":
            user_id = request.POST.get("assignee", "")
            for conversation in conversations:
                services.assign(conversation, int(user_id) if user_id else None)
            assignee = conversations[0].assignee
            done = f"Assigned to {assignee.get_username()}:" if assignee else "Unassigned"
        else:
            name = services.tag_name(request.POST.get("tag", ""))
            for conversation in conversations:
                services.add_tag(conversation, name)
            done = f"Tagged “{name}”:"
    except ValueError:  # not a member (the first conversation raised: nothing assigned), or no tag name
        flash.error(request, "Only a member of this organisation can be assigned." if action == "assign"
                    else "Write the tag's name first.")
        return redirect(back)
    flash.success(request, f"{done} {len(conversations)} conversation{'s' if len(conversations) != 1 else ''}.")
    return redirect(back)


def _conversation(request, conversation_id):
    """One of the organisation's conversations, by id — not the builder's test chats, which the
    inbox leaves out everywhere (they are a manager trying the bot, not a customer)."""
    return get_object_or_404(scoped(request, Conversation).exclude(channel="preview"), id=conversation_id)


def _stamp(conversations) -> str:
    """Changes whenever the filtered list would: a conversation comes, goes or gets a message, or the state
    its row shows changes (needing a human, closed or reopened, taken over or given back, assigned, tagged or
    untagged). Each state is a sum of the ids of the conversations in it (assigned: id × the assignee's id;
    tagged: id × the tag's id, over the conversation–tag rows), which one change always moves; only changes
    that happen to cancel out in the same poll's interval could not. A renamed tag keeps its id: unseen."""
    seen = conversations.order_by().aggregate(
        n=Count("id"), latest=Max("last_message_at"), needs_human=Sum("id", filter=Q(needs_human=True)),
        closed=Sum("id", filter=Q(status=Conversation.Status.CLOSED)), paused=Sum("id", filter=Q(bot_paused=True)),
        assigned=Sum(F("id") * F("assignee_id")))
    seen |= Conversation.tags.through.objects.filter(conversation__in=conversations.order_by().values("id")).aggregate(
        tagged=Sum(F("conversation_id") * F("tag_id")))
    latest = seen.pop("latest")
    return ":".join([latest.isoformat() if latest else ""] + [str(seen[key] or 0) for key in sorted(seen)])


def form_token() -> str:
    """A new one-time token for a form of the thread page that stores a message (``services.store_once``)."""
    return secrets.token_urlsafe(16)


@member_required
@never_cache  # its forms' one-time tokens: going back to a page from the browser's cache would send a used one
def thread(request, conversation_id):
    conversation = _conversation(request, conversation_id)
    thread_messages = list(conversation.messages.select_related("reply_to").prefetch_related("attachments")
                           .order_by("created", "id"))
    for message in thread_messages:
        message.attachment_list = attachments(message)
    from channels_app.registry import adapter_for

    notice = adapter_for(conversation.channel).inbox_notice(conversation)
    members = scoped(request, Membership).select_related("user").order_by("user__username")
    return render(request, "inbox/thread.html", {"conversation": conversation, "thread_messages": thread_messages,
                                                 "channel_notice": notice, "members": members,
                                                 "saved_replies": scoped(request, SavedReply),
                                                 "all_tags": scoped(request, Tag).order_by("name"),
                                                 "same_customer": same_customer(request, conversation),
                                                 "reply_token": form_token(), "notice_token": form_token()})


SAME_CUSTOMER_SHOWN = 10


def same_customer(request, conversation):
    """The organisation's other conversations with the same email address or phone number (any
    channel, any bot), newest first: what the customer said before, where."""
    known = Q()
    if conversation.contact_email:
        known |= Q(contact_email__iexact=conversation.contact_email)
    if conversation.contact_phone:
        known |= Q(contact_phone=conversation.contact_phone)
    if not known:
        return []
    return list(scoped(request, Conversation).filter(known).exclude(id=conversation.id).exclude(channel="preview")
                .select_related("bot").order_by("-last_message_at")[:SAME_CUSTOMER_SHOWN])


@member_required
@require_POST
def tags(request, conversation_id):
    """Add a tag (``add``: a name, made for the organisation if new) or take one off (``remove``: its id)."""
    conversation = _conversation(request, conversation_id)
    if "remove" in request.POST:
        services.set_tags(conversation, [tag.name for tag in conversation.tags.all()
                                         if str(tag.id) != request.POST["remove"]])
    else:
        try:
            services.add_tag(conversation, request.POST.get("add", ""))
        except ValueError:
            flash.error(request, "Write the tag's name first.")
    return redirect(reverse("inbox:thread", args=[conversation.id]) + "#tags")


def attachments(message):
    """What the customer attached: [{"label", "url"}]. WhatsApp media link to the channel's
    view (the stored copy, fetched from Twilio first if the background task has not kept it
    yet); email attachments to `attachment`, or by name only for mail stored before files
    were kept; files sent from the widget (stored, listed nowhere else) to `attachment`."""
    meta = message.meta or {}
    found = [{"label": item.get("content_type") or "file",
              "url": reverse("channels:whatsapp-media", args=[message.id, index])}
             for index, item in enumerate(meta.get("media") or []) if isinstance(item, dict)]
    stored = {file.index: file for file in message.attachments.all()}
    if meta.get("attachments"):
        found += [{"label": f"{item.get('filename') or 'attachment'} ({item.get('content_type') or 'file'})",
                   "url": reverse("inbox:attachment", args=[stored[index].id]) if index in stored else None}
                  for index, item in enumerate(meta.get("attachments") or []) if isinstance(item, dict)]
    elif not meta.get("media"):
        found += [{"label": file.label, "url": reverse("inbox:attachment", args=[file.id])}
                  for _, file in sorted(stored.items())]
    return found


@member_required
@require_GET
def attachment(request, attachment_id):
    """A file a customer sent, for members of its organisation (bots.files: safe to open)."""
    return attachment_response(get_scoped_or_404(request, Attachment, id=attachment_id))


def message_json(message):
    data = services.serialize_message(message)
    data.update(
        {
            "delivery_error": message.delivery_error,
            "delivery_note": message.delivery_note,
            "reply_state": message.reply_state,
            # the words the server's template shows (inbox.js draws new messages the same way)
            "sender_label": message.get_sender_display(),
            "reply_state_label": message.get_reply_state_display() if message.reply_state else "",
            "skip_reason": (message.meta or {}).get("skip_reason", ""),
            "latency_s": message.latency_s,
            "ttft_s": message.ttft_s,
            "tokens_per_s": message.tokens_per_s,
            "acceptance_rate": message.acceptance_rate,
            "stop_note": message.stop_note,
            "outside_team_hours": bool((message.meta or {}).get("outside_team_hours")),
            "agent_name": (message.meta or {}).get("agent_name", ""),
            "form_token": (message.meta or {}).get("form_token", ""),  # inbox.js: the reply it sent is stored
            "attachments": attachments(message),
            "version": message.version,  # inbox.js asks for what changed past the highest it holds
        }
    )
    return data


@member_required
def thread_json(request, conversation_id):
    """The conversation's state and messages, for polling. The state is what the thread page shows of it,
    with the words it shows ("Open"), so the page follows another agent's take over, close or assignment.

    ``?since=<version>``: only the messages changed past it (Message.version: new, or updated since — a
    delivery status, a reply's state, a rating), so a months-long thread costs a poll what
    changed, not all of it. Deletions and a change committed after a later one the page already saw are
    in no such answer: ``count`` and ``version_sum`` (of all the conversation's messages) let the page
    check what it holds, and ask for all of them again where it differs. Without ``since`` (a page from
    before versions, or one asking for all again): all of them."""
    conversation = _conversation(request, conversation_id)
    since = request.GET.get("since")
    if since is not None and not (since.isascii() and since.isdigit() and len(since) < 19):  # fits 64 bits
        return HttpResponseBadRequest("since: a message version (a whole number).\n",
                                      content_type="text/plain; charset=utf-8")
    messages = conversation.messages.prefetch_related("attachments").order_by("created", "id")
    if since is not None:
        messages = messages.filter(version__gt=int(since))
    held = conversation.messages.aggregate(count=Count("id"), version_sum=Sum("version"))
    assignee = conversation.assignee
    return JsonResponse(
        {
            "conversation": {
                "id": conversation.id,
                "status": conversation.status,
                "status_label": conversation.get_status_display(),
                "bot_paused": conversation.bot_paused,
                "needs_human": conversation.needs_human,
                "assignee": {"id": assignee.id, "name": assignee.get_username()} if assignee else None,
            },
            "messages": [message_json(m) for m in messages],
            "count": held["count"],
            "version_sum": int(held["version_sum"] or 0),  # PostgreSQL sums bigints as numeric (a Decimal)
        }
    )


@member_required
@require_POST
def reply(request, conversation_id):
    conversation = _conversation(request, conversation_id)
    # LF line breaks, as every other form stores them (the browser posts CRLF, which would count twice
    # against the limit the textarea counted once); a NUL as U+FFFD, as PostgreSQL can keep it
    text = services.storable(request.POST.get("text", "")).replace("\r\n", "\n").strip()
    if not text or len(text) > MAX_AGENT_REPLY:
        flash.error(request, f"Write a reply of 1 to {MAX_AGENT_REPLY} characters.")
        return redirect("inbox:thread", conversation.id)
    token = request.POST.get("form_token", "")
    if request.POST.get("note"):
        services.store_once(conversation, token, lambda: services.add_note(conversation, request.user, text))
    else:
        services.store_once(conversation, token, lambda: services.agent_reply(conversation, request.user, text))
    return redirect("inbox:thread", conversation.id)


@manager_required
@require_POST
def delete(request, conversation_id):
    """Owners and admins erase a conversation: messages, attachments, and the bot's memory of it."""
    conversation = _conversation(request, conversation_id)
    name, label = conversation.display_name, services.erasure_label(conversation)
    services.delete_conversations(Conversation.objects.filter(id=conversation.id))
    audit.record(request.organization, request.user, "conversation.deleted", f"Deleted {label}")
    flash.success(request, f"Deleted the conversation with {name}.")
    return redirect("inbox:list")


@member_required
@require_POST
def assign(request, conversation_id):
    """Give the conversation to a member of the organisation, or to nobody (empty)."""
    conversation = _conversation(request, conversation_id)
    user_id = request.POST.get("assignee", "")
    try:
        services.assign(conversation, int(user_id) if user_id else None)
    except ValueError:  # not a number, or not a member
        flash.error(request, "Only a member of this organisation can be assigned.")
    else:
        assignee = conversation.assignee
        flash.success(request, f"Assigned to {assignee.get_username()}." if assignee else "Unassigned.")
    return redirect("inbox:thread", conversation.id)


@member_required
@require_POST
def control(request, conversation_id, action):
    """take-over / give-back / close / reopen."""
    conversation = _conversation(request, conversation_id)
    if action == "take-over":
        services.set_bot_paused(conversation, True, by=request.user)
    elif action == "give-back":
        services.set_bot_paused(conversation, False)
    elif action == "close":
        services.set_status(conversation, Conversation.Status.CLOSED)
    elif action == "reopen":
        services.set_status(conversation, Conversation.Status.OPEN)
    return redirect("inbox:thread", conversation.id)
