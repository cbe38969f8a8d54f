"""The team page: members, roles, invitations (owners and admins invite; owners change roles)."""
from django import forms
from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from .. import membership as members
from ..models import Invitation, Membership, Organization
from ..tenancy import get_scoped_or_404, scoped
from . import accounts
from .decorators import manager_required, member_required


class InviteForm(forms.Form):
    email = forms.EmailField()
    role = forms.ChoiceField(choices=Membership.Role.choices, initial=Membership.Role.AGENT)


@member_required
def member_list(request):
    form = InviteForm(request.POST or None)
    if request.method == "POST":
        if not request.membership.can_manage:
            return redirect("org:members")
        if form.is_valid():
            try:
                members.invite(
                    organization=request.organization,
                    inviter_membership=request.membership,
                    email=form.cleaned_data["email"],
                    role=form.cleaned_data["role"],
                )
            except members.MembershipError as error:
                form.add_error(None, str(error))
            else:
                if members.mail_leaves_the_server():
                    messages.success(request, f"Invitation sent to {form.cleaned_data['email']}.")
                else:
                    messages.warning(request, f"Invitation made for {form.cleaned_data['email']}, but mail is not set up on "
                                              "this server (EMAIL_HOST): it was only written to the server's log. "
                                              "Send them its link from Pending invitations below.")
                return redirect("org:members")
    context = {
        "members": scoped(request, Membership).select_related("user").order_by("id"),
        "invitations": [(invitation, members.invite_link(invitation))
                        for invitation in scoped(request, Invitation).filter(accepted__isnull=True).order_by("-id")],
        "form": form,
        "roles": Membership.Role.choices,
        "is_owner": request.membership.role == Membership.Role.OWNER,
        "my_organizations": accounts.my_organizations(request.user),
    }
    return render(request, "org/members.html", context, status=400 if form.errors else 200)


@member_required
@require_POST
def member_role(request, membership_id):
    membership = get_scoped_or_404(request, Membership, id=membership_id)
    try:
        members.change_role(request.membership, membership, request.POST.get("role", ""))
    except members.MembershipError as error:
        messages.error(request, str(error))
    else:
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
        messages.success(request, f"{membership.user.get_username()} was removed.")
    return redirect("org:members")


@manager_required
@require_POST
def invitation_cancel(request, invitation_id):
    get_scoped_or_404(request, Invitation, id=invitation_id, accepted__isnull=True).delete()
    messages.success(request, "Invitation cancelled.")
    return redirect("org:members")


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
    messages.success(request, f"Conversations are now deleted {days} days after their last message." if days
                     else "Conversations are now kept until someone deletes them.")
    return redirect("org:members")
