"""Forms of the no-code builder: bot settings (the draft), FAQ pairs, documents.

Validation lives here so the builder page and the prompt preview agree on what a
valid draft is. Documents come pasted or as a small UTF-8 ``.txt`` / ``.md`` upload;
anything else is refused with a form error (never stored, never a 500).
"""
import hashlib
import json
import re
from pathlib import PurePath

from django import forms
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from . import documents, faq_import, webpages
from .knowledge import folded
from .models import Bot, KnowledgeItem
from .models.bots import MAX_SUGGESTIONS, drafter_allowed, suggestion_list

HEX_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")
DRAFTERS = [
    ("", "Platform default (the worker's CHATNEXUS_DRAFTER, suffix unless changed)"),
    ("suffix", "Suffix — drafts from this bot's earlier replies and the conversation"),
    ("lookup", "Prompt lookup — drafts from n-grams of the conversation and knowledge"),
    ("suffix+lookup", "Suffix + prompt lookup — the better guess of both, per step"),
    ("none", "None — plain decoding, one token per model call"),
]
MAX_DOC_BYTES = 512 * 1024  # a text/markdown/HTML upload bigger than this is refused
MAX_PDF_BYTES = 10 * 1024 * 1024  # PDFs carry fonts and images besides their text
MAX_REPLY_TOKENS = 2048  # the server also caps replies at CHATNEXUS_MAX_REPLY_TOKENS
MAX_SUGGESTION_CHARS = 120


class LineEndings:
    """Browsers send a textarea's line breaks as CRLF: keep LF, as the demo, the API and a version
    restore write them — else a form saved unchanged would differ from the published config."""

    def clean(self):
        data = super().clean()
        for name, value in data.items():
            if isinstance(value, str) and "\r" in value:
                data[name] = documents.unix_lines(value)
        return data


def digest(values) -> str:
    """A short fingerprint of what a page showed, to tell on its post whether it changed since."""
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:24]


class StaleCheck:
    """A form over a stored row that carries a digest of the row as its page showed it (the hidden
    ``draft_stamp``, from ``stamp``): a save from a page opened before someone else's change (another
    tab, a colleague, a version restore) is refused with ``STALE`` instead of silently putting the old
    values back. The posted values stay in the form, and the page it returns carries the current
    digest, so checking and saving again goes through. Absent (an import, an API-like post): not
    checked."""

    STALE = ""  # what the refused save is told

    @staticmethod
    def stamp(instance) -> str:
        raise NotImplementedError

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance and self.instance.pk:
            self.fields["draft_stamp"] = forms.CharField(required=False, widget=forms.HiddenInput,
                                                         initial=self.stamp(self.instance))

    def clean(self):
        data = super().clean()
        posted = data.get("draft_stamp")
        if posted and self.instance.pk and posted != (current := self.stamp(self.instance)):
            self.data = self.data.copy()
            self.data["draft_stamp"] = current  # saving the page again, once checked, goes through
            raise forms.ValidationError(self.STALE, code="stale")
        return data


class BotCreateForm(forms.ModelForm):
    class Meta:
        model = Bot
        fields = ["name", "company"]
        labels = {"name": "Bot name", "company": "Company"}


class BotSettingsForm(StaleCheck, LineEndings, forms.ModelForm):
    """Every draft field of a bot: persona, brand voice, behaviour, model settings."""

    drafter = forms.ChoiceField(choices=DRAFTERS, required=False, help_text="How the engine guesses tokens ahead for the model to verify.")
    temperature = forms.FloatField(
        min_value=0.0, max_value=2.0, help_text="0 = always the most likely token (deterministic); higher = more varied."
    )
    max_reply_tokens = forms.IntegerField(min_value=1, max_value=MAX_REPLY_TOKENS)

    class Meta:
        model = Bot
        fields = list(Bot.DRAFT_FIELDS)
        labels = {
            "avatar_color": "Avatar colour",
            "voice_notes": "Voice notes",
            "use_emoji": "Use emoji",
            "topics_to_avoid": "Topics to avoid",
            "fallback_answer": "Fallback answer",
            "handoff_triggers": "Handoff triggers",
            "handoff_message": "Handoff message",
            "away_message": "Away message",
            "no_text_message": "Reply to files without text",
            "suggestions": "Suggested questions",
            "max_reply_tokens": "Max reply tokens",
        }
        help_texts = {
            "voice_notes": "Words to use or avoid, how to address customers…",
            "instructions": "Anything else the bot must know or do.",
            "topics_to_avoid": "One per line.",
            "fallback_answer": "What the bot says when its knowledge does not cover the question.",
            "handoff_triggers": "One phrase per line; a customer message containing one hands the conversation to a human.",
            "handoff_message": "What the customer is told then (and after the widget's \u201cTalk to a human\u201d button), "
                               "in your customers' language.",
            "away_message": "Said instead when a customer asks for a person outside your team hours (Team page).",
            "no_text_message": "Said when a customer sends only a photo, a voice note or a scanned PDF: files with no "
                               "text the bot can read. In your customers' language.",
            "suggestions": f"Up to {MAX_SUGGESTIONS}, one per line: buttons under the widget's greeting that ask them "
                           "for the visitor.",
        }
        widgets = {
            "avatar_color": forms.TextInput(attrs={"type": "color"}),
            "voice_notes": forms.Textarea(attrs={"rows": 3}),
            "instructions": forms.Textarea(attrs={"rows": 5}),
            "topics_to_avoid": forms.Textarea(attrs={"rows": 3}),
            "handoff_triggers": forms.Textarea(attrs={"rows": 3}),
            "suggestions": forms.Textarea(attrs={"rows": 3}),
        }

    def save(self, commit=True):
        """Only the draft settings are written: a whole-row save would put back the published
        version and erasure count this request loaded, undoing a publish or a purge made meanwhile."""
        bot = super().save(commit=False)
        if commit:
            bot.save(update_fields=[*Bot.DRAFT_FIELDS, "updated"] if bot.pk else None)
        return bot

    def clean_suggestions(self):
        lines = suggestion_list(self.cleaned_data["suggestions"], limit=None)
        if len(lines) > MAX_SUGGESTIONS:
            raise forms.ValidationError(f"At most {MAX_SUGGESTIONS} suggested questions.")
        if any(len(line) > MAX_SUGGESTION_CHARS for line in lines):
            raise forms.ValidationError(f"Keep each suggested question under {MAX_SUGGESTION_CHARS} characters.")
        return "\n".join(lines)

    # StaleCheck: the draft settings as the page showed them
    STALE = ("This bot's settings were changed (in another tab, by someone else, or by restoring a version) "
             "since this page was opened. Nothing was saved: your edits are below; check them against the "
             "current settings and save again.")

    @staticmethod
    def stamp(bot) -> str:
        return digest({field: getattr(bot, field) for field in Bot.DRAFT_FIELDS})

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # The worker's default spelled out (e.g. "model:…", which the API accepts) is offered too, and
        # a bot configured elsewhere (API, settings) keeps its spec selectable so saving the other
        # fields does not fail — also on the unsaved Bot that the prompt preview and an import check.
        current = self.instance.drafter if self.instance else None
        servers = dict.fromkeys([settings.CHATNEXUS_DRAFTER, *settings.CHATNEXUS_BOT_DRAFTERS])  # in order, once
        offered = DRAFTERS + [(spec, f"{spec} (offered on this server)") for spec in servers if spec not in dict(DRAFTERS)]
        if current and current not in dict(offered):
            offered.append((current, f"{current} (configured elsewhere{'' if drafter_allowed(current) else '; not offered here: the default is used'})"))
        self.fields["drafter"].choices = offered

    def clean_avatar_color(self):
        value = self.cleaned_data["avatar_color"].strip()
        if not HEX_COLOR.match(value):
            raise forms.ValidationError("Use a hex colour like #4f46e5.")
        return value.lower()

    def clean_name(self):
        value = self.cleaned_data["name"].strip()
        if not value:
            raise forms.ValidationError("The bot needs a name.")
        return value


class PublishForm(forms.Form):
    """The builder's Publish button. It carries the whole draft as the page showed it (settings and
    knowledge, a digest): a publish from a page opened before someone else's save, knowledge edit or
    version restore is refused instead of making live a draft nobody reviewed. Absent (a post from
    a script or a test): not checked, publishing what is saved, as the API does."""

    prefix = "publish"  # not the settings form's draft_stamp on the same page
    draft_stamp = forms.CharField(required=False, widget=forms.HiddenInput)

    STALE = ("Nothing was published: the draft was changed (in another tab, by someone else, or by restoring "
             "a version) since you opened this page. Review the draft as it is now, then publish again.")

    def __init__(self, *args, draft, **kwargs):
        """``draft``: the bot's ``draft_config()`` now (shown on the page, or about to be published)."""
        super().__init__(*args, **kwargs)
        self.stamp = digest(draft)
        self.fields["draft_stamp"].initial = self.stamp

    def clean_draft_stamp(self):
        posted = self.cleaned_data["draft_stamp"]
        if posted and posted != self.stamp:
            raise forms.ValidationError(self.STALE, code="stale")
        return posted


def faqs_by_question(bot) -> dict[str, KnowledgeItem]:
    """The bot's FAQ pairs by their question as matched (``folded``: case and spacing aside); where
    two already share one, the oldest. Adding a question the bot has updates that pair."""
    known = {}
    for item in bot.knowledge.filter(kind=KnowledgeItem.Kind.FAQ).order_by("id"):
        known.setdefault(folded(item.title), item)
    return known


class KnowledgeStaleCheck(StaleCheck):
    """A knowledge item's edit page: its title and text as the page showed them. Two tabs or two admins
    editing one item, the second save would silently undo the first; so would a save from a page
    opened before **Fetch again** or a version restore changed the text."""

    STALE = ("This was changed (in another tab, by someone else, by Fetch again or by restoring a version) "
             "since this page was opened. Nothing was saved: your edits are below, the text as it is now under "
             "them; check yours against it and save again.")

    @staticmethod
    def stamp(item) -> str:
        return digest({"title": item.title, "body": item.body})


class FaqForm(KnowledgeStaleCheck, LineEndings, forms.ModelForm):
    """One FAQ pair: the builder's "Add" (``add``) and the edit page (``save`` on its instance)."""

    class Meta:
        model = KnowledgeItem
        fields = ["title", "body"]
        labels = {"title": "Question", "body": "Answer"}
        widgets = {"body": forms.Textarea(attrs={"rows": 3})}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["title"].required = True

    def save(self, bot=None, commit=True):
        item = super().save(commit=False)
        item.kind = KnowledgeItem.Kind.FAQ
        if bot is not None:
            item.bot = bot
        if commit:
            item.save()
        return item

    @transaction.atomic
    def add(self, bot) -> tuple[KnowledgeItem, str]:
        """(item, what happened: "added", "updated" or "already there"). A question the bot already
        has, whatever its case and spacing, gets the new answer (as an import gives it) instead of a
        second pair."""
        item = faqs_by_question(bot).get(folded(self.cleaned_data["title"]))
        if item is None:
            return self.save(bot=bot), "added"
        if item.body == self.cleaned_data["body"]:
            return item, "already there"
        item.body = self.cleaned_data["body"]
        item.save(update_fields=["body", "updated"])
        return item, "updated"


class FaqImportForm(forms.Form):
    """FAQ pairs from a CSV file (bots/faq_import.py reads it); ``save`` adds new questions and
    updates the answers of questions the bot has already."""

    prefix = "import"  # its file input is not the document form's on the same page
    file = forms.FileField(label="CSV file (question, answer)",
                           help_text="Save the spreadsheet as CSV: one FAQ per row, the question in one column and its "
                                     "answer in the next; a header row naming them is optional.")

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload.size > faq_import.MAX_BYTES:
            raise forms.ValidationError(f"That file is too large: the limit is {faq_import.MAX_BYTES // 1024} KB.")
        try:
            return faq_import.pairs(upload.read())
        except faq_import.FaqImportError as error:
            raise forms.ValidationError(str(error)) from None

    @transaction.atomic
    def save(self, bot) -> tuple[int, int]:
        """(added, updated): a question already there, whatever its case and spacing, gets the new answer."""
        existing = faqs_by_question(bot)
        added = updated = 0
        for question, answer in dict((folded(q), (q, a)) for q, a in self.cleaned_data["file"]).values():
            item = existing.get(folded(question))
            if item is None:
                existing[folded(question)] = KnowledgeItem.objects.create(bot=bot, kind=KnowledgeItem.Kind.FAQ,
                                                                       title=question, body=answer)
                added += 1
            elif item.body != answer:
                item.body = answer
                item.save(update_fields=["body", "updated"])
                updated += 1
        return added, updated


class DocumentForm(LineEndings, forms.Form):
    """A document: pasted text/markdown, a .txt / .md / .html / .pdf file (bots/documents.py reads
    it), or a web page fetched now (bots/webpages.py) — one of the three."""

    def __init__(self, *args, **kwargs):
        # its fields' ids are not the FAQ form's on the same page (both have a title)
        super().__init__(*args, auto_id="id_doc_%s", **kwargs)

    title = forms.CharField(max_length=200, required=False, help_text="Defaults to the file name or the page's title.")
    text = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 6}), label="Paste text or markdown", strip=False
    )
    file = forms.FileField(required=False, label="…or upload a .txt, .md, .html or .pdf file")
    url = forms.URLField(required=False, max_length=500, assume_scheme="https", label="…or fetch a web page",
                         help_text="Its text is read now; “Fetch again” in the list reads it again when the page changes.",
                         widget=forms.URLInput(attrs={"placeholder": "https://www.example.com/delivery"}))

    def clean_url(self):
        url = self.cleaned_data.get("url")
        if not url:
            return None
        if (self.data.get("text") or "").strip() or self.files.get("file"):
            return {"url": url, "title": "", "text": ""}  # not fetched: clean() says to give one source
        try:
            title, text = webpages.fetch(url)
        except documents.DocumentError as error:
            raise forms.ValidationError(str(error)) from None
        return {"url": url, "title": title, "text": text}

    def clean_file(self):
        upload = self.cleaned_data.get("file")
        if not upload:
            return None
        limit = MAX_PDF_BYTES if PurePath(upload.name).suffix.lower() in documents.PDF_EXTENSIONS else MAX_DOC_BYTES
        if upload.size > limit:
            raise forms.ValidationError(f"That file is too large: the limit is {limit // 1024} KB.")
        try:
            text = documents.text_of(upload.name, upload.read())
        except documents.DocumentError as error:
            raise forms.ValidationError(str(error)) from None
        return {"name": PurePath(upload.name).stem, "text": text}

    def clean(self):
        data = super().clean()
        pasted = (data.get("text") or "").strip()
        upload, page = data.get("file"), data.get("url")
        if self.errors:
            return data
        if sum(map(bool, (pasted, upload, page))) > 1:
            raise forms.ValidationError("Paste text, upload a file or give a web page: one of them.")
        # a file's or a page's text as a textarea's: LF, or the Edit page saved unchanged is a change
        body = pasted or (upload["text"].strip() if upload else "") or (page["text"] if page else "")
        body = documents.unix_lines(body)
        if not body:
            raise forms.ValidationError("The page has no text to read." if page else "Paste some text or choose a file.")
        if len(body) > documents.MAX_DOC_CHARS:
            raise forms.ValidationError(f"That document is too long: the limit is {documents.MAX_DOC_CHARS:,} characters.")
        data["body"] = body
        data["title"] = ((data.get("title") or "").strip() or (upload["name"] if upload else "")
                         or (page["title"] if page else "") or "Document")
        return data

    def save(self, bot):
        page = self.cleaned_data.get("url")
        return KnowledgeItem.objects.create(
            bot=bot, kind=KnowledgeItem.Kind.DOC, title=self.cleaned_data["title"][:200], body=self.cleaned_data["body"],
            source_url=page["url"] if page else "", fetched_at=timezone.now() if page else None,
        )


class DocumentEditForm(KnowledgeStaleCheck, LineEndings, forms.ModelForm):
    class Meta:
        model = KnowledgeItem
        fields = ["title", "body"]
        labels = {"body": "Text"}
        widgets = {"body": forms.Textarea(attrs={"rows": 10})}

    def clean_body(self):
        body = self.cleaned_data["body"]
        if len(body) > documents.MAX_DOC_CHARS:
            raise forms.ValidationError(f"That document is too long: the limit is {documents.MAX_DOC_CHARS:,} characters.")
        return body
