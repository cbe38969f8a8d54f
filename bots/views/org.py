"""The team page: members, roles, invitations (owners and admins invite; owners change roles),
team hours, tags and the activity log (owners and admins), conversation retention (owners)."""
from datetime import date
from urllib.parse import urlencode

from django import forms
from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Count
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from .. import audit, hours, services
from .. import membership as members
from ..models import Invitation, Membership, Organization, Tag, TwoFactor
from ..tenancy import get_scoped_or_404, scoped
from . import accounts, once
from .decorators import manager_required, member_required
from .downloads import csv_download


class InviteForm(forms.Form):
    email = forms.EmailField(max_length=Invitation._meta.get_field("email").max_length)  # (an address may be 320)
    role = forms.ChoiceField(choices=Membership.Role.choices, initial=Membership.Role.AGENT)


@member_required
def member_list(request):
    """The Team page; POST invites (owners and admins), then redirects to the page that shows the
    new invitation's link once (``_show_link_once``)."""
    form = InviteForm(request.POST or None)
    if request.method == "POST":
        if not request.membership.can_manage:
            return redirect("org:members")
        if form.is_valid():
            try:
                invitation, token, mail_error = members.invite(
                    organization=request.organization,
                    inviter_membership=request.membership,
                    email=form.cleaned_data["email"],
                    role=form.cleaned_data["role"],
                )
            except members.MembershipError as error:
                form.add_error(None, str(error))
            else:
                audit.record(request.organization, request.user, "member.invited",
                             f"Invited {form.cleaned_data['email']} as {Membership.Role(form.cleaned_data['role']).label}")
                return _show_link_once(request, invitation, token, "Invitation", mail_error)
        return team_page(request, form)
    shown = _pop_shown_link(request)
    response = team_page(request, form, shown_link=shown)
    return once.no_store(response) if shown else response


# The links just made or renewed, waiting in the session for the GET that shows them (views/once.py):
# {"invitation": id, "token": the link's token} each.
SHOWN_LINKS = "org.invitation_links_to_show"


def _show_link_once(request, invitation, token, what, mail_error):
    """The answer to the POST that made or renewed ``invitation`` (``what``: "Invitation", "New link"):
    a redirect to the Team page, which shows its link once (only its digest is stored). POST/redirect/GET:
    reloading that page, or going back to it, repeats the GET, not the invitation (a second mail) or
    the renewal (which would kill the link just copied). The token waits in the session, not in the
    URL (browser history, proxy logs). ``mail_error``: why the mail server did not take its mail, or None."""
    if mail_error:
        messages.warning(request, f"{what} made for {invitation.email}, but the email could not be sent "
                                  f"({mail_error}). Send them its link below: it is shown only now.")
    elif members.mail_leaves_the_server():
        messages.success(request, f"{what} sent to {invitation.email}.")
    else:
        messages.warning(request, f"{what} made for {invitation.email}, but mail is not set up on this server "
                                  "(EMAIL_HOST): it was only written to the server's log. "
                                  "Send them its link below: it is shown only now.")
    key = once.stash(request, SHOWN_LINKS, {"invitation": invitation.id, "token": token})
    return redirect(f"{reverse('org:members')}?{urlencode({once.URL_PARAMETER: key})}#shown-link")


def _pop_shown_link(request):
    """(invitation, link) that ``_show_link_once`` left under ``?shown=``, taken out of the session (so
    shown once), or None: none there, or its link no longer works (renewed, used or cancelled since),
    or this member may no longer see it."""
    entry = once.pop(request, SHOWN_LINKS)
    if entry is None:
        return None
    invitation = members.open_invitation(entry["token"])
    if (invitation is None or invitation.id != entry["invitation"] or invitation.organization_id != request.organization.id
            or not members.may_invite(request.membership, invitation.role)):
        return None
    return invitation, members.invite_link(entry["token"])


def team_page(request, form, hours_form=None, shown_link=None):
    """The Team page, with the invitation form, (when a save failed) the team hours form as sent and
    (right after making or renewing an invitation) that invitation and its link."""
    context = {
        "members": scoped(request, Membership).select_related("user").order_by("id"),
        # (invitation, whether this member may cancel or renew it: those they may make; an owner
        # invitation's link makes its holder an owner, and admins cannot invite owners)
        "invitations": [(invitation, members.may_invite(request.membership, invitation.role))
                        for invitation in scoped(request, Invitation).filter(accepted__isnull=True).order_by("-id")],
        "shown_link": shown_link,
        "form": form,
        "roles": Membership.Role.choices,
        "is_owner": request.membership.role == Membership.Role.OWNER,
        "my_organizations": accounts.my_organizations(request.user),
        "hours_summary": hours.summary(request.organization.team_hours),
        "closed_upcoming": hours.upcoming(request.organization.closed_dates, request.organization.timezone),
        "hours_form": hours_form or TeamHoursForm(initial=TeamHoursForm.initial_for(request.organization)),
        "activity": audit.latest(request.organization) if request.membership.can_manage else [],
        "tags": scoped(request, Tag).annotate(used=Count("conversations")).order_by("name")
        if request.membership.can_manage else [],
        "two_factor_users": set(TwoFactor.objects.filter(user__memberships__organization=request.organization)
                                .values_list("user_id", flat=True)),
    }
    failed = form.errors or (hours_form is not None and hours_form.errors)
    return render(request, "org/members.html", context, status=400 if failed else 200)


@member_required
@require_POST
def member_role(request, membership_id):
    membership = get_scoped_or_404(request, Membership, id=membership_id)
    try:
        members.change_role(request.membership, membership, request.POST.get("role", ""))
    except members.MembershipError as error:
        messages.error(request, str(error))
    else:
        audit.record(request.organization, request.user, "member.role",
                     f"Made {membership.user.get_username()} {membership.get_role_display()}")
        messages.success(request, f"{membership.user.get_username()} is now {membership.get_role_display()}.")
    return redirect("org:members")


@member_required
@require_POST
def member_remove(request, membership_id):
    membership = get_scoped_or_404(request, Membership, id=membership_id)
    try:
        members.remove(request.membership, membership)
    except members.MembershipError as error:
        messages.error(request, str(error))
    else:
        audit.record(request.organization, request.user, "member.removed", f"Removed {membership.user.get_username()}")
        messages.success(request, f"{membership.user.get_username()} was removed.")
    return redirect("org:members")


@manager_required
@require_POST
def invitation_cancel(request, invitation_id):
    invitation = get_scoped_or_404(request, Invitation, id=invitation_id, accepted__isnull=True)
    if not members.may_invite(request.membership, invitation.role):  # an admin's owner invitation: not theirs
        raise Http404
    invitation.delete()
    audit.record(request.organization, request.user, "member.invitation_cancelled",
                 f"Cancelled the invitation of {invitation.email}")
    messages.success(request, "Invitation cancelled.")
    return redirect("org:members")


@manager_required
@require_POST
def invitation_renew(request, invitation_id):
    """A new link for a pending invitation (the old one stops working): mailed to the invitee and
    shown once to this manager, who may have lost the first one."""
    invitation = get_scoped_or_404(request, Invitation, id=invitation_id, accepted__isnull=True)
    if not members.may_invite(request.membership, invitation.role):  # an admin's owner invitation: not theirs
        raise Http404
    try:
        token, mail_error = members.renew(request.membership, invitation)
    except members.MembershipError as error:
        messages.error(request, str(error))
        return redirect("org:members")
    audit.record(request.organization, request.user, "member.invitation_renewed",
                 f"Sent a new link for the invitation of {invitation.email}")
    return _show_link_once(request, invitation, token, "New link", mail_error)


class RetentionForm(forms.Form):
    retention_days = forms.IntegerField(required=False, min_value=1, max_value=3650)


@member_required
@require_POST
def retention(request):
    """Owners set how long conversations are kept (empty: until deleted); applied hourly by the beat."""
    if request.membership.role != Membership.Role.OWNER:
        raise Http404
    form = RetentionForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Retention is a number of days from 1 to 3650, or empty to keep conversations.")
        return redirect("org:members")
    days = form.cleaned_data["retention_days"]
    Organization.objects.filter(id=request.organization.id).update(retention_days=days)
    audit.record(request.organization, request.user, "organization.retention",
                 f"Set conversations to be deleted {days} days after their last message" if days
                 else "Set conversations to be kept until someone deletes them")
    messages.success(request, f"Conversations are now deleted {days} days after their last message." if days
                     else "Conversations are now kept until someone deletes them.")
    return redirect("org:members")


class TeamHoursForm(forms.Form):
    """Up to two spans a day (a lunch break) in the organisation's time zone, and dates the team
    does not work; a day not ticked is closed; no day ticked and no date clears the setting
    (always staffed)."""

    MAX_CLOSED_DATES = 100
    timezone = forms.ChoiceField(choices=[])
    closed_dates = forms.CharField(
        required=False, label="Closed on", widget=forms.Textarea(attrs={"rows": 3, "placeholder": "2026-12-25"}),
        help_text="Holidays and other days off: dates as YYYY-MM-DD, one a line (or separated by commas). "
                  "Dates gone by are dropped when you save.")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["timezone"].choices = [(name, name) for name in hours.zone_names()]
        for day in hours.DAYS:
            name = hours.DAY_NAMES[day]
            self.fields[f"{day}_open"] = forms.BooleanField(required=False, label=name)
            for key, label in (("from", "from"), ("to", "to"), ("from2", "then from"), ("to2", "then to")):
                self.fields[f"{day}_{key}"] = forms.TimeField(
                    required=False, input_formats=["%H:%M"], label=f"{name} {label}",
                    widget=forms.TimeInput(attrs={"type": "time"}, format="%H:%M"))

    def rows(self):
        """(day ticked, from, to, then from, then to) bound fields per day, Monday first, for the page."""
        return [tuple(self[f"{day}_{key}"] for key in ("open", "from", "to", "from2", "to2")) for day in hours.DAYS]

    @classmethod
    def initial_for(cls, organization):
        initial = {"timezone": organization.timezone,
                   "closed_dates": "\n".join(map(str, hours.upcoming(organization.closed_dates, organization.timezone)))}
        for day in hours.DAYS:
            spans = hours.spans(organization.team_hours.get(day))
            first = spans[0] if spans else ["09:00", "17:00"]
            second = spans[1] if len(spans) > 1 else [None, None]
            initial.update({f"{day}_open": bool(spans), f"{day}_from": first[0], f"{day}_to": first[1],
                            f"{day}_from2": second[0], f"{day}_to2": second[1]})
        return initial

    def clean_closed_dates(self):
        today = hours.local_now(self.data.get("timezone", "")).date()
        dates = set()
        for word in self.cleaned_data["closed_dates"].replace(",", " ").split():
            try:
                dates.add(date.fromisoformat(word))
            except ValueError:
                raise forms.ValidationError(f"Closed on: “{word[:20]}” is not a date written YYYY-MM-DD.") from None
        dates = sorted(d for d in dates if d >= today)
        if len(dates) > self.MAX_CLOSED_DATES:
            raise forms.ValidationError(f"Closed on: at most {self.MAX_CLOSED_DATES} dates to come.")
        return [d.isoformat() for d in dates]

    def clean(self):
        data = super().clean()
        for day in hours.DAYS:
            if not data.get(f"{day}_open"):
                continue
            name = hours.DAY_NAMES[day]
            start, end = data.get(f"{day}_from"), data.get(f"{day}_to")
            start2, end2 = data.get(f"{day}_from2"), data.get(f"{day}_to2")
            if start is None or end is None:
                self.add_error(f"{day}_from", f"{name}: give the time the team starts and stops (HH:MM).")
            elif start == end:
                self.add_error(f"{day}_to", f"{name}: the team cannot stop when it starts.")
            elif (start2 is None) != (end2 is None):
                self.add_error(f"{day}_from2", f"{name}: give both times of the second span, or neither.")
            elif start2 is not None:
                if end < start:
                    self.add_error(f"{day}_from2", f"{name}: only the day's last span can run past midnight.")
                elif start2 < end:
                    self.add_error(f"{day}_from2", f"{name}: the second span starts before the first ends.")
                elif start2 == end2:
                    self.add_error(f"{day}_to2", f"{name}: the team cannot stop when it starts.")
        return data

    def team_hours(self) -> dict:
        data, result = self.cleaned_data, {}
        for day in hours.DAYS:
            if data.get(f"{day}_open"):
                spans = [(data[f"{day}_from"], data[f"{day}_to"])]
                if data.get(f"{day}_from2") is not None:
                    spans.append((data[f"{day}_from2"], data[f"{day}_to2"]))
                result[day] = [[a.strftime("%H:%M"), b.strftime("%H:%M")] for a, b in spans]
        return result


@manager_required
@require_POST
def team_hours(request):
    """Owners and admins set when the team answers: a handoff outside it gets the bot's away message."""
    form = TeamHoursForm(request.POST)
    if not form.is_valid():  # the page again, with what was typed, so nothing has to be typed twice
        problems = [error for errors in form.errors.values() for error in errors]
        messages.error(request, "Team hours not saved: " + " ".join(problems))
        return team_page(request, InviteForm(), hours_form=form)
    team_hours, closed = form.team_hours(), form.cleaned_data["closed_dates"]
    Organization.objects.filter(id=request.organization.id).update(
        team_hours=team_hours, closed_dates=closed, timezone=form.cleaned_data["timezone"])
    spans = "; ".join(f"{day} {span}" for day, span in hours.summary(team_hours) if span != "closed")
    what = [f"team hours ({form.cleaned_data['timezone']}): {spans}" if team_hours else "",
            ("closed on " + ", ".join(closed) if len(closed) <= 8
             else f"closed on {len(closed)} dates from {closed[0]} to {closed[-1]}") if closed else ""]
    audit.record(request.organization, request.user, "organization.team_hours",
                 "Set " + " and ".join(filter(None, what)) if any(what) else "Cleared the team hours")
    messages.success(request, "Team hours saved." if any(what) else
                     "Team hours cleared: a customer who asks for a person always gets the handoff message.")
    return redirect(reverse("org:members") + "#hours")


@manager_required
@require_POST
def tag_edit(request, tag_id):
    """Owners and admins rename a tag (``name``) or delete it (``delete``: off every conversation)."""
    tag = get_scoped_or_404(request, Tag, id=tag_id)
    old = tag.name
    if "delete" in request.POST:
        used = tag.conversations.count()
        tag.delete()
        audit.record(request.organization, request.user, "tag.deleted", f"Deleted the tag {old} (on {used} conversations)")
        messages.success(request, f"Deleted the tag {old}.")
        return redirect(reverse("org:members") + "#tags")
    try:
        name = services.tag_name(request.POST.get("name", ""))
    except ValueError:
        messages.error(request, "A tag needs a name.")
        return redirect(reverse("org:members") + "#tags")
    if scoped(request, Tag).filter(name__iexact=name).exclude(id=tag.id).exists():
        messages.error(request, f"There is already a tag called {name}.")
        return redirect(reverse("org:members") + "#tags")
    Tag.objects.filter(id=tag.id).update(name=name)
    audit.record(request.organization, request.user, "tag.renamed", f"Renamed the tag {old} to {name}")
    messages.success(request, f"Renamed the tag {old} to {name}.")
    return redirect(reverse("org:members") + "#tags")


@manager_required
def activity(request):
    """The whole activity log, 50 a page, newest first; ``?format=csv`` all of it as a file."""
    events = audit.events(request.organization)
    if request.GET.get("format") == "csv":
        return csv_download("activity", ["when", "who", "action", "what"],
                            ([e.created.isoformat(), e.actor_name, e.action, e.text] for e in events.iterator()))
    page = Paginator(events, audit.SHOWN).get_page(request.GET.get("page"))
    return render(request, "org/activity.html", {"page": page})
