"""View decorators shared by the platform pages (inbox, dashboards, team)."""
from functools import wraps

from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import render


def member_required(view):
    """Signed in and a member of some organisation (else a page saying so)."""

    @login_required
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if request.membership is None:
            return render(request, "accounts/no_organization.html", status=403)
        return view(request, *args, **kwargs)

    return wrapper


def manager_required(view):
    """Owners and admins only; for agents the page does not exist (404)."""

    @member_required
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not request.membership.can_manage:
            raise Http404
        return view(request, *args, **kwargs)

    return wrapper
