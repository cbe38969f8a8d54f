"""Sign up, invitations (accept), organisation switcher, API token page.

Log in / log out / password reset are Django's own views (see ``bots.urls_accounts``)
with templates in ``templates/registration/``.
"""
from django import forms
from django.contrib import messages
from django.contrib.auth import get_user_model, login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import UserCreationForm
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST
from rest_framework.authtoken.models import Token

from .. import membership as members
from ..models import Membership
from ..tenancy import SESSION_KEY


class SignUpForm(UserCreationForm):
    email = forms.EmailField()
    organization_name = forms.CharField(max_length=120, label="Organisation name")

    class Meta(UserCreationForm.Meta):
        model = get_user_model()
        fields = ("username", "email")

    def clean_email(self):
        email = self.cleaned_data["email"]
        if get_user_model().objects.filter(email__iexact=email).exists():
            raise forms.ValidationError("An account with this email already exists. Log in instead.")
        return email


def signup(request):
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user, org = members.sign_up(
            username=form.cleaned_data["username"],
            email=form.cleaned_data["email"],
            password=form.cleaned_data["password1"],
            organization_name=form.cleaned_data["organization_name"],
        )
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        request.session[SESSION_KEY] = org.id
        messages.success(request, f"Welcome! {org.name} is ready — create your first bot.")
        return redirect("bots:list")
    return render(request, "registration/signup.html", {"form": form})


class AcceptForm(UserCreationForm):
    class Meta(UserCreationForm.Meta):
        model = get_user_model()
        fields = ("username",)


def invite_accept(request, token):
    """Signed in: join. Signed out: create an account for the invited email (or log in first)."""
    invitation = members.open_invitation(token)
    if invitation is None:
        raise Http404("This invitation does not exist or was already used.")
    if request.user.is_authenticated:
        if request.method == "POST":
            return _join(request, invitation, request.user)
        return render(request, "accounts/invite_accept.html", {"invitation": invitation})
    form = AcceptForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save(commit=False)
        user.email = invitation.email
        user.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return _join(request, invitation, user)
    return render(request, "accounts/invite_accept.html", {"invitation": invitation, "form": form})


def _join(request, invitation, user):
    try:
        membership = members.accept(invitation, user)
    except members.MembershipError as error:
        messages.error(request, str(error))
        return redirect("inbox:list")
    request.session[SESSION_KEY] = membership.organization_id
    messages.success(request, f"You joined {membership.organization.name}.")
    return redirect("bots:list" if membership.can_manage else "inbox:list")


@login_required
@require_POST
def switch_organization(request):
    try:
        org_id = int(request.POST.get("organization", ""))
    except ValueError:
        raise Http404 from None
    membership = Membership.objects.filter(user=request.user, organization_id=org_id).first()
    if membership is None:
        raise Http404
    request.session[SESSION_KEY] = org_id
    return redirect("bots:list" if membership.can_manage else "inbox:list")


@login_required
def api_token(request):
    """Show the user's API token; POST creates it or replaces it with a new one."""
    if request.method == "POST":
        Token.objects.filter(user=request.user).delete()
        Token.objects.create(user=request.user)
        messages.success(request, "A new API token was created; the old one no longer works.")
        return redirect("api-token")
    token = Token.objects.filter(user=request.user).first()
    return render(request, "accounts/api_token.html", {"token": token})
