"""Saved replies (``/inbox/replies/``): an organisation's canned answers. Owners and admins
keep the list; every member inserts one into a reply on the thread page (inbox.js)."""
from django import forms
from django.contrib import messages as flash
from django.db import IntegrityError, transaction
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from ..forms import LineEndings
from ..models import SavedReply
from ..tenancy import get_scoped_or_404, scoped
from .decorators import manager_required, member_required
from .inbox import MAX_AGENT_REPLY


class SavedReplyForm(LineEndings, forms.ModelForm):
    class Meta:
        model = SavedReply
        fields = ["title", "text"]
        widgets = {"text": forms.Textarea(attrs={"rows": 4, "maxlength": MAX_AGENT_REPLY})}
        help_texts = {"text": "{name} becomes the customer's name when an agent inserts it."}

    def __init__(self, *args, organization, **kwargs):
        super().__init__(*args, **kwargs)
        self.organization = organization

    def clean_title(self):
        title = self.cleaned_data["title"].strip()
        if SavedReply.title_taken(self.organization, title):
            raise forms.ValidationError(SavedReply.TITLE_TAKEN)
        return title

    def clean_text(self):  # counted with LF line breaks, as stored (LineEndings), not the browser's CRLF
        text = self.cleaned_data["text"].replace("\r\n", "\n").strip()
        if len(text) > MAX_AGENT_REPLY:
            raise forms.ValidationError(f"At most {MAX_AGENT_REPLY} characters.")
        return text


@member_required
def saved_replies(request):
    """The organisation's saved replies; owners and admins add and delete them."""
    form = SavedReplyForm(request.POST or None, organization=request.organization)
    if request.method == "POST":
        if not request.membership.can_manage:
            raise Http404
        if form.is_valid():
            reply = form.save(commit=False)
            reply.organization, reply.created_by = request.organization, request.user
            try:
                with transaction.atomic():
                    reply.save()
            except IntegrityError:  # one_saved_reply_per_title: the same form sent twice at once (a double click)
                form.add_error("title", SavedReply.TITLE_TAKEN)
            else:
                flash.success(request, f"Saved reply \u201c{reply.title}\u201d added.")
                return redirect("inbox:replies")
    return render(request, "inbox/replies.html", {"form": form, "replies": scoped(request, SavedReply)},
                  status=400 if form.errors else 200)


@manager_required
@require_POST
def saved_reply_delete(request, saved_reply_id):
    get_scoped_or_404(request, SavedReply, id=saved_reply_id).delete()
    flash.success(request, "Saved reply deleted.")
    return redirect("inbox:replies")
