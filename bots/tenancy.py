"""Tenant scoping: which organisation a request acts for, and querysets limited to it.

Every view and API endpoint gets its objects through ``scoped(request, Model)``
or ``get_scoped_or_404``; an object of another organisation is a 404.
"""
from django.http import Http404
from django.shortcuts import get_object_or_404

from .models import Membership

SESSION_KEY = "organization_id"


class OrganizationMiddleware:
    """Sets ``request.membership`` / ``request.organization`` for signed-in users.

    A user may belong to several organisations; the session remembers the chosen
    one, defaulting to the oldest membership.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.membership = None
        request.organization = None
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            memberships = oldest_first(user)
            wanted = request.session.get(SESSION_KEY)
            membership = next((m for m in memberships if m.organization_id == wanted), None) or memberships.first()
            if membership:
                request.membership = membership
                request.organization = membership.organization
        return self.get_response(request)


def oldest_first(user):
    """``user``'s memberships, oldest first: the first is the one a request acts for when nothing
    picks another (no organisation chosen in the session, no ``X-Organization`` header on an API
    request)."""
    return Membership.objects.select_related("organization").filter(user=user).order_by("id")


def organization_context(request):
    return {"organization": getattr(request, "organization", None), "membership": getattr(request, "membership", None)}


def scoped(request_or_org, model):
    """``model``'s rows that belong to the request's organisation (none without one)."""
    org = getattr(request_or_org, "organization", request_or_org)
    if org is None:
        return model.objects.none()
    if model.__name__ == "KnowledgeItem":
        return model.objects.filter(bot__organization=org)
    return model.objects.filter(organization=org)


def get_scoped_or_404(request_or_org, model, **lookup):
    return get_object_or_404(scoped(request_or_org, model), **lookup)


def require_manager(request):
    """Owners and admins manage bots and channels; agents work the inbox only."""
    if request.membership is None or not request.membership.can_manage:
        raise Http404
