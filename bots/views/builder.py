"""The no-code bot builder's pages: bot list, create/delete, the builder itself
(draft settings, knowledge, publish) and the JSON system-prompt preview.

Thin views: every query goes through ``bots.tenancy`` (another organisation's bot
is a 404) and everything but the list needs a manager (owner/admin); agents get a
404 there too. The live test chat is a websocket (``bots.consumers``).
"""
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import NON_FIELD_ERRORS
from django.db import transaction
from django.http import Http404, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import NoReverseMatch, reverse
from django.utils.text import slugify
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from .. import audit, transfer, webpages
from ..documents import DocumentError
from ..forms import (BotCreateForm, BotSettingsForm, DocumentEditForm, DocumentForm, FaqForm, FaqImportForm,
                     PublishForm)
from ..knowledge import retrieve
from ..models import Bot, BotVersion, KnowledgeItem
from ..models.bots import lock_bots, suggestion_list
from ..prompts import system_prompt
from ..tenancy import get_scoped_or_404, require_manager, scoped
from ..versions import changes, version_rows

TABS = ("persona", "voice", "behaviour", "knowledge", "model", "versions")
MAX_SAMPLE_QUESTION = 500


def _managed_bot(request, bot_id):
    require_manager(request)
    return get_scoped_or_404(request, Bot, id=bot_id)


def _builder_url(bot, tab="persona"):
    return reverse("bots:builder", args=[bot.id]) + (f"#{tab}" if tab in TABS else "")


def _channels_url(bot):
    # The channels page belongs to channels_app; link to it only once it exists.
    try:
        return reverse("channels:bot", args=[bot.id])
    except NoReverseMatch:
        return None


# ---------------------------------------------------------------------------
# List, create, delete


@login_required
@require_GET
def bot_list(request):
    bots = scoped(request, Bot).order_by("name", "id")
    can_manage = bool(request.membership and request.membership.can_manage)
    return render(request, "bots/list.html", {"bots": bots, "can_manage": can_manage, "form": _create_form(request)})


@login_required
@require_http_methods(["GET", "POST"])
def bot_create(request):
    require_manager(request)
    form = _create_form(request, request.POST or None)
    if request.method == "POST" and form.is_valid():
        bot = form.save(commit=False)
        bot.organization = request.organization
        bot.save()
        audit.record(request.organization, request.user, "bot.created", f"Created the bot {bot.name}")
        messages.success(request, f"Created {bot.name}. Set it up, then publish it.")
        return redirect(_builder_url(bot))
    status = 400 if request.method == "POST" else 200
    return render(request, "bots/create.html", {"form": form}, status=status)


def _create_form(request, data=None) -> BotCreateForm:
    """The new-bot form; its company starts as the organisation's name (what most bots answer for)."""
    organization = request.organization
    return BotCreateForm(data, initial={"company": organization.name} if organization else None)


@login_required
@require_GET
def bot_export(request, bot_id):
    """The bot's draft settings and knowledge as a JSON file (bots/transfer.py)."""
    bot = _managed_bot(request, bot_id)
    response = JsonResponse(transfer.export(bot), json_dumps_params={"indent": 2, "ensure_ascii": False})
    response["Content-Disposition"] = f'attachment; filename="{slugify(bot.name) or "bot"}.chatnexus.json"'
    return response


@login_required
@require_POST
def bot_import(request):
    """A new, unpublished bot from an exported file; the bot list says what is wrong otherwise."""
    require_manager(request)
    upload = request.FILES.get("file")
    try:
        if upload is None:
            raise transfer.TransferError("Choose a file exported from ChatNexus first.")
        bot = transfer.import_bot(request.organization, transfer.read(upload.read(transfer.MAX_BYTES + 1)))  # no more
    except transfer.TransferError as error:
        messages.error(request, f"Nothing imported: {error}")
        return redirect("bots:list")
    audit.record(request.organization, request.user, "bot.created", f"Imported the bot {bot.name} from a file")
    messages.success(request, f"Imported {bot.name} with {bot.knowledge.count()} knowledge items. Try it, then publish it.")
    return redirect(_builder_url(bot))


@login_required
@require_POST
def bot_delete(request, bot_id):
    bot = _managed_bot(request, bot_id)
    name = bot.name
    bot.delete()
    audit.record(request.organization, request.user, "bot.deleted", f"Deleted the bot {name}")
    messages.success(request, f"Deleted {name}.")
    return redirect("bots:list")


# ---------------------------------------------------------------------------
# The builder page


def _render_builder(request, bot, *, settings_form=None, faq_form=None, doc_form=None, import_form=None, tab="persona",
                    status=200):
    knowledge = list(bot.knowledge.order_by("id"))
    draft = bot.draft_config()
    context = {
        "bot": bot,
        "form": settings_form or BotSettingsForm(instance=bot),
        "faq_form": faq_form or FaqForm(),
        "import_form": import_form or FaqImportForm(),
        "doc_form": doc_form or DocumentForm(),
        "faqs": [item for item in knowledge if item.kind == KnowledgeItem.Kind.FAQ],
        "documents": [item for item in knowledge if item.kind == KnowledgeItem.Kind.DOC],
        "knowledge_count": len(knowledge),
        "channels_url": _channels_url(bot),
        "active_tab": tab if tab in TABS else "persona",
        "prompt": system_prompt(draft),
        "unpublished": bot.published_config != draft,
        "draft": draft,
        "publish_form": PublishForm(draft=draft),
        "draft_changes": changes(bot.published_config, draft) if bot.published_config is not None else [],
        "versions": version_rows(bot),
        "suggestions": suggestion_list(bot.suggestions),  # the draft's, as chips in the test chat
    }
    return render(request, "bots/builder.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def bot_builder(request, bot_id):
    """GET: the builder. POST: save the settings form to the draft (not live until published)."""
    bot = _managed_bot(request, bot_id)
    if request.method == "GET":
        question = request.GET.get("faq", "").strip()[:200]  # "Add as FAQ" from the dashboard's questions to answer
        if question:
            form = FaqForm(initial={"title": question})
            form.fields["body"].widget.attrs["autofocus"] = True  # the answer is what is left to write
            return _render_builder(request, bot, faq_form=form, tab="knowledge")
        return _render_builder(request, bot)
    tab = request.POST.get("tab", "persona")
    form = BotSettingsForm(request.POST, instance=bot)
    if not form.is_valid():
        # Show the first tab with an error so the user sees what to fix.
        tab = _tab_of_errors(form) or tab
        return _render_builder(request, Bot.objects.get(id=bot.id), settings_form=form, tab=tab, status=400)
    form.save()
    messages.success(request, "Draft saved. Publish to make it live.")
    return redirect(_builder_url(bot, tab))


FIELD_TABS = {
    "persona": ("name", "role", "company", "avatar_color"),
    "voice": ("tone", "voice_notes", "use_emoji", "reply_length"),
    "behaviour": ("greeting", "instructions", "topics_to_avoid", "fallback_answer", "handoff_triggers"),
    "model": ("temperature", "max_reply_tokens", "drafter"),
}


def _tab_of_errors(form):
    for tab, fields in FIELD_TABS.items():
        if any(field in form.errors for field in fields):
            return tab
    return None


@login_required
@require_POST
@transaction.atomic
def bot_publish(request, bot_id):
    """Publish the draft the page showed: a draft changed since (``PublishForm``) is not published."""
    bot = _managed_bot(request, bot_id)
    lock_bots([bot.id])  # no restore, knowledge deletion or other publish between the check and the publish
    bot = Bot.objects.get(id=bot.id)  # the draft as it is now, under the lock
    draft = bot.draft_config()
    form = PublishForm(request.POST, draft=draft)
    tab = request.POST.get("tab", "persona")
    if not form.is_valid():
        now = changes(bot.published_config, draft) if bot.published_config is not None else []
        messages.error(request, form.errors["draft_stamp"][0] + (
            f" Against the live version the draft now changes: {', '.join(now)}." if now else ""))
        return redirect(_builder_url(bot, "versions" if now else tab))
    bot.publish(by=request.user)
    messages.success(request, f"Published version {bot.published_version}. It is live on every channel.")
    return redirect(_builder_url(bot, tab))


@login_required
@require_POST
def version_restore(request, bot_id, number):
    """Put a published version's settings and knowledge back into the draft (not live until published)."""
    bot = _managed_bot(request, bot_id)
    version = get_scoped_or_404(request, BotVersion, bot=bot, number=number)
    bot.restore(version, by=request.user)
    messages.success(request, f"Version {number} is back in the draft. Publish to make it live again.")
    return redirect(_builder_url(bot, "versions"))


@login_required
@require_POST
def prompt_preview(request, bot_id):
    """The compiled system prompt for the posted (unsaved) settings, as JSON.

    Knowledge is the bot's draft knowledge; with a ``sample_question`` the pieces
    retrieved for it are put in the prompt exactly as the pipeline would.
    """
    bot = _managed_bot(request, bot_id)
    form = BotSettingsForm(request.POST, instance=Bot(organization=bot.organization, drafter=bot.drafter))
    form.is_valid()  # preview what is valid; report the rest
    config = bot.draft_config()
    config.update({field: value for field, value in form.cleaned_data.items() if field in Bot.DRAFT_FIELDS})
    question = request.POST.get("sample_question", "").strip()[:MAX_SAMPLE_QUESTION]
    pieces = retrieve(config, question) if question else []
    return JsonResponse(
        {
            "prompt": system_prompt(config, pieces),
            "retrieved": [{"title": piece["title"], "text": piece["text"]} for piece in pieces],
            "errors": {field: [str(e) for e in errs] for field, errs in form.errors.items()},
        }
    )


# ---------------------------------------------------------------------------
# Knowledge


@login_required
@require_POST
def faq_add(request, bot_id):
    bot = _managed_bot(request, bot_id)
    form = FaqForm(request.POST)
    if not form.is_valid():
        return _render_builder(request, bot, faq_form=form, tab="knowledge", status=400)
    item, done = form.add(bot)
    if done == "added":
        messages.success(request, "FAQ added to the draft.")
    elif done == "updated":
        messages.success(request, f"The bot already had “{item.title}”: its answer is updated in the draft.")
    else:
        messages.info(request, f"The bot already had “{item.title}” with this answer: nothing changed.")
    return redirect(_builder_url(bot, "knowledge"))


@login_required
@require_POST
def faq_import(request, bot_id):
    bot = _managed_bot(request, bot_id)
    form = FaqImportForm(request.POST, request.FILES)
    if not form.is_valid():
        return _render_builder(request, bot, import_form=form, tab="knowledge", status=400)
    added, updated = form.save(bot)
    unchanged = len(form.cleaned_data["file"]) - added - updated
    words = [f"{added} added", f"{updated} updated"] + ([f"{unchanged} already there"] if unchanged else [])
    messages.success(request, f"FAQ pairs imported into the draft: {', '.join(words)}.")
    return redirect(_builder_url(bot, "knowledge"))


@login_required
@require_POST
def document_add(request, bot_id):
    bot = _managed_bot(request, bot_id)
    form = DocumentForm(request.POST, request.FILES)
    if not form.is_valid():
        return _render_builder(request, bot, doc_form=form, tab="knowledge", status=400)
    item = form.save(bot)
    messages.success(request, f"Document “{item.title}” added to the draft.")
    return redirect(_builder_url(bot, "knowledge"))


@login_required
@require_http_methods(["GET", "POST"])
@transaction.atomic
def knowledge_edit(request, bot_id, item_id):
    """Edit an FAQ pair or a document. The form carries a digest of the item as its page showed it:
    a save from a page opened before another change of the item is refused, the edits kept on the
    page with the text as it is now (``KnowledgeStaleCheck``)."""
    bot = _managed_bot(request, bot_id)
    # the item's row locked: no other save (or Fetch again) between the check and this save
    item = get_object_or_404(scoped(request, KnowledgeItem).select_for_update(of=("self",)), id=item_id, bot=bot)
    form_class = FaqForm if item.kind == KnowledgeItem.Kind.FAQ else DocumentEditForm
    form = form_class(request.POST or None, instance=item)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, "Knowledge updated in the draft.")
        return redirect(_builder_url(bot, "knowledge"))
    stale = form.has_error(NON_FIELD_ERRORS, "stale")
    saved = KnowledgeItem.objects.get(id=item.id) if stale else None  # the form put the posted text in ``item``
    status = 400 if request.method == "POST" else 200
    return render(request, "bots/knowledge_edit.html", {"bot": bot, "item": item, "form": form, "saved": saved},
                  status=status)


@login_required
@require_POST
def knowledge_refetch(request, bot_id, item_id):
    """Read a document fetched from a web page again: its text becomes the page's current text."""
    bot = _managed_bot(request, bot_id)
    item = get_scoped_or_404(request, KnowledgeItem, id=item_id, bot=bot)
    if not item.source_url:
        raise Http404("not fetched from a web page")
    try:
        changed = webpages.read_again(item)
    except DocumentError as error:
        messages.error(request, f"“{item.title}” not fetched again: {error}")
    else:
        messages.success(request, f"“{item.title}” fetched again: {len(item.body):,} characters, in the draft."
                         if changed else f"“{item.title}”: the page has not changed.")
    return redirect(_builder_url(bot, "knowledge"))


@login_required
@require_POST
def knowledge_delete(request, bot_id, item_id):
    bot = _managed_bot(request, bot_id)
    item = get_scoped_or_404(request, KnowledgeItem, id=item_id, bot=bot)
    bot.delete_knowledge(item, by=request.user)
    messages.success(request, "Deleted for good: from the draft, the live bot and every published version.")
    return redirect(_builder_url(bot, "knowledge"))
