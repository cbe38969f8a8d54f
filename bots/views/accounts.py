"""Sign in, sign up, password reset and change, invitations (accept), your account page
(organisations and the switcher, links to password and API token), API token page, and where
each role lands (``home``, ``/``: signing in, joining and switching organisation all end there).

Log out and the rest of the password views are Django's own (see ``bots.urls_accounts``),
templates in ``templates/registration/``. Sign-in, sign-up and password reset are
rate-limited on the cache (chatnexus/ratelimit.py), answering 429 with a page that says
when to try again:

- every POST of each of those forms: ``CHATNEXUS_AUTH_POSTS_PER_IP`` per address per minute;
- failed sign-ins: ``CHATNEXUS_LOGIN_FAILURES_PER_ACCOUNT`` per username per 15 minutes,
  after which that username cannot sign in (not even with the right password) until the
  window slides — guessing a password from many addresses is slow, at the price that a
  stranger can lock a known username out for 15 minutes. The pages that ask a signed-in user
  for their password again (password change, two-factor) count wrong ones against the same
  limit (``password_checked``), so a stolen session guesses no faster;
- reset mails: ``CHATNEXUS_PASSWORD_RESETS_PER_EMAIL`` per address per hour; past it the
  page still says "sent" (it never says whether an account exists) and nothing is sent. Sign-up
  mails (where mail leaves the server) are counted the same way, on a count of their own.

Where mail leaves the server, sign-up does not say whether an address has an account either: every
valid form is answered "check your email", and the address gets a link that makes the account (new)
or a note that it has one, with links to log in and reset the password (``members.request_sign_up``).
There the form asks for no password: the link's page does, so whoever holds the mailbox chooses it.
Where it does not (the embedded default's console backend), a confirmation could reach no one: the
account is made and signed in at once, and the form says when the address is taken — which the
sign-in would show anyway.

An account with two-factor sign-in on is signed in only after its code (views/two_factor.py).
"""
import hashlib
import unicodedata
from urllib.parse import urlencode, urlsplit

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model, login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import SetPasswordMixin, UserCreationForm
from django.db import IntegrityError, transaction
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from chatnexus import ratelimit

from .. import audit
from .. import membership as members
from ..models import ApiToken, Membership, TwoFactor
from ..models.tenants import token_digest
from ..tenancy import SESSION_KEY, oldest_first
from . import once

LOGIN_FAILURE_WINDOW_S = 15 * 60
RESET_WINDOW_S = 60 * 60


def landing(membership):
    """The page a member starts on: owners and admins the bots, agents the inbox (the work they
    may do). Without a membership, the inbox's page saying they are in no organisation."""
    return "bots:list" if membership is not None and membership.can_manage else "inbox:list"


@login_required
def home(request):
    """``/``, where signing in lands (``LOGIN_REDIRECT_URL``) unless ``?next=`` says otherwise:
    the start page of the role held in the organisation the request acts for."""
    return redirect(landing(request.membership))


def _posts_refused(request, form_name):
    """The refusing verdict when this address has posted `form_name` too often, else None."""
    address = request.META.get("REMOTE_ADDR") or "unknown"  # the client, behind a trusted proxy too (uvicorn)
    verdict = ratelimit.hit(f"auth:{form_name}:ip:{ratelimit.address_key(address)}", settings.CHATNEXUS_AUTH_POSTS_PER_IP)
    return None if verdict.allowed else verdict


def _too_many(request, verdict, what):
    minutes = -(-verdict.retry_after // 60)
    response = render(request, "registration/rate_limited.html", {"what": what, "minutes": minutes}, status=429)
    response["Retry-After"] = str(verdict.retry_after)
    return response


def _hashed(kind, value):
    """A cache key for a username or an email address that does not keep it in clear. Compared
    the way Django matches them (NFKC, then case folded: "ａｌｉｃｅ" signs in as alice, "boſ@"
    resets bos@'s password), so no spelling of one account gets a counter of its own."""
    folded = unicodedata.normalize("NFKC", value.strip()).casefold()
    return f"auth:{kind}:" + hashlib.sha256(folded.encode()).hexdigest()[:32]


def failure_counted(username):
    """Count a sign-in attempt for `username` as a failure before its password or code is
    checked, so that guesses sent in parallel (a password hash takes a while) are all counted
    before any of them is checked. Returns ``(attempt, refused)``: the counted attempt to
    ``ratelimit.refund`` once it turns out right, or the refusing verdict when the account is
    paused (nothing counted then)."""
    verdict = ratelimit.hit(_hashed("login-failures", username), settings.CHATNEXUS_LOGIN_FAILURES_PER_ACCOUNT,
                            window_s=LOGIN_FAILURE_WINDOW_S)
    if not verdict.allowed:
        ratelimit.refund(verdict)  # a refused try checks nothing: the pause is as long as the failures make it
        return None, verdict
    return verdict, None


def password_checked(user, password):
    """``user.check_password(password)`` for a signed-in page that asks for the password again,
    counted like a sign-in (``failure_counted``): a session (perhaps a stolen one) guesses the
    password no faster than the sign-in page allows. Returns ``(right, refused)``: ``refused`` is
    the verdict to answer 429 with when the account is paused (nothing checked then)."""
    attempt, refused = failure_counted(user.get_username())
    if refused is not None:
        return False, refused
    right = user.check_password(password)
    if right:
        ratelimit.refund(attempt)
    return right, None


class LoginView(auth_views.LoginView):
    attempt = None

    def post(self, request, *args, **kwargs):
        refused = _posts_refused(request, "login")
        if refused is None:
            self.attempt, refused = failure_counted(request.POST.get("username", ""))
        if refused is not None:
            return _too_many(request, refused, "sign-in attempts")
        return super().post(request, *args, **kwargs)

    def form_valid(self, form):
        """The right password: signed in, unless the account has a second factor to ask for first."""
        ratelimit.refund(self.attempt)  # no failure (a second factor counts its own attempts)
        user = form.get_user()
        if TwoFactor.objects.filter(user=user).exists():
            from .two_factor import start  # two_factor uses this module's limits

            return start(self.request, user, self.get_success_url())
        return super().form_valid(form)


class PasswordChangeView(auth_views.PasswordChangeView):
    """Django's, with the old password counted like a sign-in's (``failure_counted``): a wrong
    one is a failure, past the limit the page answers 429 until the window slides."""

    attempt = None

    def post(self, request, *args, **kwargs):
        self.attempt, refused = failure_counted(request.user.get_username())
        if refused is not None:
            return _too_many(request, refused, "password attempts")
        return super().post(request, *args, **kwargs)

    def form_valid(self, form):
        ratelimit.refund(self.attempt)
        return super().form_valid(form)

    def form_invalid(self, form):
        if "old_password" not in form.errors:  # the old password was right (the new one was refused)
            ratelimit.refund(self.attempt)
        return super().form_invalid(form)


class PasswordResetDoneView(auth_views.PasswordResetDoneView):
    """"Check your email" — and, where this server sends no mail, who can help instead (says
    nothing about whether the address has an account)."""

    def get_context_data(self, **kwargs):
        return {**super().get_context_data(**kwargs), "mail_off": not members.mail_leaves_the_server()}


class PasswordResetView(auth_views.PasswordResetView):
    def post(self, request, *args, **kwargs):
        refused = _posts_refused(request, "password-reset")
        if refused is not None:
            return _too_many(request, refused, "password reset requests")
        return super().post(request, *args, **kwargs)

    def form_valid(self, form):
        verdict = ratelimit.hit(_hashed("reset-mails", form.cleaned_data["email"]),
                                settings.CHATNEXUS_PASSWORD_RESETS_PER_EMAIL, window_s=RESET_WINDOW_S)
        if not verdict.allowed:
            return HttpResponseRedirect(self.get_success_url())  # as if sent: nothing to learn, nothing to flood
        # the link is the platform's public address (as invitations'), not the Host this request came
        # through: behind a TLS proxy request.is_secure() is False, and the token went out as http://
        public = urlsplit(settings.PUBLIC_URL)
        form.save(domain_override=public.netloc, use_https=public.scheme == "https", request=self.request,
                  token_generator=self.token_generator, from_email=self.from_email,
                  email_template_name=self.email_template_name, subject_template_name=self.subject_template_name,
                  html_email_template_name=self.html_email_template_name, extra_email_context=self.extra_email_context)
        return HttpResponseRedirect(self.get_success_url())


class SignUpForm(UserCreationForm):
    """Where mail leaves the server (``asks_password`` False) without the password: the link's page asks
    for it (``signup_confirm``), so that only whoever holds the mailbox chooses it."""
    email = forms.EmailField()
    organization_name = forms.CharField(max_length=120, label="Organisation name")

    class Meta(UserCreationForm.Meta):
        model = get_user_model()
        fields = ("username", "email")

    def __init__(self, *args, asks_password=True, **kwargs):
        super().__init__(*args, **kwargs)
        if not asks_password:
            del self.fields["password1"], self.fields["password2"]


def signup(request):
    if request.method == "POST" and (refused := _posts_refused(request, "signup")) is not None:
        return _too_many(request, refused, "sign-up attempts")
    mailed = members.mail_leaves_the_server()
    form = SignUpForm(request.POST or None, asks_password=not mailed)
    if request.method == "POST" and form.is_valid():
        fields = {name: form.cleaned_data[name] for name in ("username", "email", "organization_name")}
        if mailed:
            if _mailed_sign_up(fields):
                return redirect("signup-sent")
            form.add_error(None, "The email could not be sent just now: please try again in a while.")
        elif get_user_model().objects.filter(email__iexact=fields["email"]).exists():
            form.add_error("email", "An account with this email already exists. Log in instead.")
        else:
            try:
                user, org = members.sign_up(**fields, password=form.cleaned_data["password1"])
            except IntegrityError as error:
                _username_just_taken(form, error)
            else:
                return _signed_up(request, user, org)
    return render(request, "registration/signup.html", {"form": form})


def _mailed_sign_up(fields) -> bool:
    """A valid sign-up where mail leaves the server, answered the same for every address: a mail (its
    link, or a note that the address has an account), then the "check your email" page; False when the
    mail server did not take it. Past ``CHATNEXUS_PASSWORD_RESETS_PER_EMAIL`` mails an hour to the
    address, nothing is sent (as if it were: nothing to learn, nothing to flood)."""
    verdict = ratelimit.hit(_hashed("signup-mails", fields["email"]), settings.CHATNEXUS_PASSWORD_RESETS_PER_EMAIL,
                            window_s=RESET_WINDOW_S)
    return not verdict.allowed or members.request_sign_up(**fields) is None


def signup_sent(request):
    return render(request, "registration/signup_sent.html")


SIGNUP_GONE = "This link does not exist, was already used or is older than a day: sign up again."


class SignUpPasswordForm(SetPasswordMixin, forms.Form):
    """The password of a sign-up confirmed by mail, typed twice and checked by the password validators
    against the account about to be made (``pending``: its username and email)."""
    password1, password2 = SetPasswordMixin.create_password_fields()

    def __init__(self, pending, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = get_user_model()(username=pending["username"], email=pending["email"])  # (not saved)

    def clean(self):
        self.validate_passwords()
        self.validate_password_for_user(self.user)
        return super().clean()


def signup_confirm(request, token):
    """The link a sign-up's mail carries: GET shows what it makes (a mail scanner opening the link
    makes nothing) and asks for the password, POST makes the account and organisation with it and
    signs in. The password is chosen here, by whoever holds the mailbox: chosen on the sign-up form,
    by whoever typed someone else's address there, it would let them into the account its owner made."""
    pending = members.pending_sign_up(token)
    if pending is None:
        raise Http404(SIGNUP_GONE)
    form = SignUpPasswordForm(pending, request.POST if request.method == "POST" else None)  # (sent empty: told so)
    if request.method == "POST" and form.is_valid():
        try:
            user, org = members.confirm_sign_up(token, form.cleaned_data["password1"])
        except members.MembershipError as error:
            return render(request, "registration/signup_confirm.html", {"error": str(error)}, status=409)
        return _signed_up(request, user, org)
    return render(request, "registration/signup_confirm.html", {"pending": pending, "form": form})


def _signed_up(request, user, org):
    """The new owner signed in, acting for the organisation they made, on its (empty) bot list."""
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    request.session[SESSION_KEY] = org.id
    messages.success(request, f"Welcome! {org.name} is ready — create your first bot.")
    return redirect("bots:list")


def _username_just_taken(form, error):
    """A new account's username was free when ``form`` checked it and taken when it was saved
    (``error``): the same form sent twice at once (a double click), whose other copy made the
    account. The form says so instead of a 500; any other IntegrityError is raised again."""
    if not get_user_model().objects.filter(username__iexact=form.cleaned_data["username"]).exists():
        raise error
    form.add_error("username", "An account with this username was made a moment ago (the form sent twice?): "
                               "if it is yours, log in.")


class AcceptForm(UserCreationForm):
    class Meta(UserCreationForm.Meta):
        model = get_user_model()
        fields = ("username",)


GONE = "This invitation does not exist, was already used or has expired."


def invite_accept(request, token):
    """Signed in: join. Signed out: create an account for the invited email (or log in first).
    ``members.accept`` reads the invitation again by ``token`` under a lock: the link may have been
    renewed, used or cancelled since ``open_invitation`` found it."""
    invitation = members.open_invitation(token)
    if invitation is None:
        raise Http404(GONE)
    if request.user.is_authenticated:
        if request.method == "POST":
            try:
                membership = _join(token, invitation, request.user)
            except members.MembershipError as error:
                messages.error(request, str(error))
                return redirect("inbox:list")
            return _joined(request, membership)
        return render(request, "accounts/invite_accept.html", {"invitation": invitation})
    form = AcceptForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            with transaction.atomic():  # a link that no longer works leaves no account behind
                user = form.save(commit=False)
                user.email = invitation.email
                user.save()
                membership = _join(token, invitation, user)
        except members.MembershipError:
            raise Http404(GONE) from None
        except IntegrityError as error:
            _username_just_taken(form, error)
        else:
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            return _joined(request, membership)
    return render(request, "accounts/invite_accept.html", {"invitation": invitation, "form": form})


def _join(token, invitation, user):
    """``user`` joins through the invitation of ``token`` (``invitation``, as opened), in the activity
    log; MembershipError when its link no longer works."""
    membership, before = members.accept(token, user)
    through = f"through the invitation to {invitation.email}"
    if before is None:
        audit.record(membership.organization, user, "member.joined",
                     f"Joined as {membership.get_role_display()} {through}")
    elif membership.role != before:
        audit.record(membership.organization, user, "member.role",
                     f"Became {membership.get_role_display()} (was {Membership.Role(before).label}) {through}")
    return membership


def _joined(request, membership):
    """The new member's session acts for the organisation joined, landing on its start page."""
    request.session[SESSION_KEY] = membership.organization_id
    messages.success(request, f"You joined {membership.organization.name}.")
    return redirect(landing(membership))


@login_required
def account(request):
    """The signed-in user's page (their name in the top bar links here): who they are, their
    organisations and roles (switch between them), email notices per organisation, password and
    API token."""
    return render(request, "accounts/account.html", {"my_organizations": my_organizations(request.user)})


@login_required
@require_POST
def notifications(request):
    """Per organisation, whether the user is emailed when a conversation needs a person
    (``notify_<organisation id>`` ticked: yes)."""
    for membership in Membership.objects.filter(user=request.user):
        wanted = f"notify_{membership.organization_id}" in request.POST
        if membership.notify_by_email != wanted:
            Membership.objects.filter(id=membership.id).update(notify_by_email=wanted)
    messages.success(request, "Email notices saved.")
    return redirect(reverse("account") + "#organizations")


def my_organizations(user):
    return Membership.objects.filter(user=user).select_related("organization").order_by("organization__name")


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
    return redirect(landing(membership))


# The tokens just made, waiting in the session for the GET that shows them (views/once.py):
# {"key": the token, "replaced": whether it replaced one} each.
SHOWN_TOKENS = "accounts.api_tokens_to_show"


@login_required
def api_token(request):
    """The user's API token: POST makes one (replacing the old) and redirects to this page, which
    shows it once (POST/redirect/GET, ``views/once.py``: reloading the page repeats the GET, not the
    POST, which would kill the token just copied); afterwards the page shows how it starts and when
    it was made and used (only its digest is stored).
    The page names the organisation the token acts for without an ``X-Organization`` header (the
    oldest membership, as ``bots.api.views`` resolves it — not the session's choice) and the slugs
    the header takes."""
    if request.method == "POST":
        replaced = ApiToken.objects.filter(user=request.user).exists()
        key = once.stash(request, SHOWN_TOKENS, {"key": ApiToken.issue(request.user), "replaced": replaced})
        return redirect(f"{reverse('api-token')}?{urlencode({once.URL_PARAMETER: key})}")
    memberships = list(oldest_first(request.user))
    context = {"memberships": memberships, "acts_for": memberships[0] if memberships else None}
    token = ApiToken.objects.filter(user=request.user).first()
    shown = once.pop(request, SHOWN_TOKENS)
    if shown is None or token is None or token.digest != token_digest(shown["key"]):  # replaced or revoked since
        return render(request, "accounts/api_token.html", {**context, "token": token})
    response = render(request, "accounts/api_token.html",
                      {**context, "token": token, "new_key": shown["key"], "replaced": shown["replaced"]})
    return once.no_store(response)
