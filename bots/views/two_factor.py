"""Two-factor sign-in pages (bots/twofactor.py has the rules).

- ``/accounts/login/code/``: sign-in's second step. The password step (accounts.LoginView)
  signs nobody in when the account has a second factor: it keeps who passed it in the session
  for ``PENDING_S`` seconds and sends them here. Wrong codes count against the same limits as
  wrong passwords (per address per minute, per account per 15 minutes).
- ``/accounts/two-factor/``: turn it on (scan, confirm with a code, get recovery codes once),
  make new recovery codes, or turn it off — each with the password, wrong ones counted against
  the sign-in's per-account limit (429 past it).
"""
import time

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model, login
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods

from chatnexus import ratelimit

from .. import twofactor
from ..models import TwoFactor
from .accounts import _posts_refused, _too_many, failure_counted, password_checked

PENDING_KEY = "two-factor-pending"  # {"user", "backend", "next", "at"}
SETUP_KEY = "two-factor-setup-secret"
PENDING_S = 5 * 60


def start(request, user, next_url: str):
    """The password was right for an account with a second factor: ask for the code."""
    request.session.cycle_key()
    request.session[PENDING_KEY] = {"user": user.pk, "backend": getattr(user, "backend", settings.AUTHENTICATION_BACKENDS[0]),
                                    "next": next_url, "at": time.time()}
    return redirect("login-code")


@require_http_methods(["GET", "POST"])
def login_code(request):
    pending = request.session.get(PENDING_KEY)
    if not pending or time.time() - pending["at"] > PENDING_S:
        request.session.pop(PENDING_KEY, None)
        return redirect("login")
    user = get_user_model().objects.filter(pk=pending["user"], is_active=True).first()
    if user is None:
        request.session.pop(PENDING_KEY, None)
        return redirect("login")
    context = {"username": user.get_username()}
    if request.method == "POST":
        refused = _posts_refused(request, "login-code")
        if refused is None:
            attempt, refused = failure_counted(user.get_username())
        if refused is not None:
            return _too_many(request, refused, "sign-in attempts")
        try:
            kind = twofactor.check(user, request.POST.get("code", ""))
        except ValueError:  # crypto: no listed key decrypts the stored secret (the key changed)
            ratelimit.refund(attempt)  # nothing was checked
            context["error"] = ("Your second factor cannot be checked: this server's encryption key changed. "
                                "Ask its administrator to list the old key, or to run manage.py "
                                "reencrypt_secrets --forget-unreadable.")
            return render(request, "registration/login_code.html", context, status=503)
        if kind is None:
            context["error"] = "That code is not right (or was used already). Try the newest one from your app."
            return render(request, "registration/login_code.html", context, status=400)
        ratelimit.refund(attempt)
        next_url = pending["next"]
        del request.session[PENDING_KEY]
        login(request, user, backend=pending["backend"])
        if kind == "recovery":
            left = len(TwoFactor.objects.get(user=user).recovery_digests)
            messages.warning(request, f"You signed in with a recovery code; {left} left. Make new ones on your "
                                      "account's two-factor page if you are running out.")
        safe = url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()},
                                               require_https=request.is_secure())
        return redirect(next_url if next_url and safe else settings.LOGIN_REDIRECT_URL)
    return render(request, "registration/login_code.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def manage(request):
    # its secret is not read here (``twofactor`` reads it where a code is checked): one that no listed
    # key decrypts (the key changed) still lets this page show, renew recovery codes and turn it off
    two_factor = TwoFactor.objects.defer("secrets").filter(user=request.user).first()
    context = {"enabled": two_factor is not None}
    action = request.POST.get("action") if request.method == "POST" else None
    if action in (("recovery", "disable") if two_factor else ("enable",)):
        # every change takes the password: a session alone (perhaps a stolen one) could otherwise turn it
        # on with the thief's authenticator and lock the owner out; wrong ones count as failed sign-ins
        right, refused = password_checked(request.user, request.POST.get("password", ""))
        if refused is not None:
            return _too_many(request, refused, "password attempts")
        if not right:
            context["error"] = "That is not your password."
        elif action == "enable":
            secret = request.session.get(SETUP_KEY)
            if secret and twofactor.matching_step(secret, request.POST.get("code", "")) is not None:
                codes = twofactor.enable(request.user, secret)
                twofactor.check(request.user, request.POST["code"])  # spend it: it cannot sign anyone in now
                del request.session[SETUP_KEY]
                return render(request, "accounts/two_factor.html", {"codes": codes, "enabled": True})
            context["error"] = "That code does not match. Check the time on your phone, and enter the newest code."
        elif action == "disable":
            two_factor.delete()
            messages.success(request, "Two-factor sign-in is off: your password alone signs you in.")
            return redirect("account")
        else:
            codes = twofactor.renew_recovery_codes(two_factor)
            return render(request, "accounts/two_factor.html", {"codes": codes, "enabled": True})
    if context["enabled"]:
        context["recovery_left"] = len(two_factor.recovery_digests)
    else:
        secret = request.session.get(SETUP_KEY) or twofactor.new_secret()
        request.session[SETUP_KEY] = secret
        context.update(qr=twofactor.qr_svg(twofactor.provisioning_uri(request.user, secret)),
                       secret_spaced=" ".join(secret[i:i + 4] for i in range(0, len(secret), 4)))
    return render(request, "accounts/two_factor.html", context, status=400 if "error" in context else 200)
