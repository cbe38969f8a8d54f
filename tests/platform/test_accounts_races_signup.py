"""Two people signing up at the same moment with the same organisation name: both get an account
and an organisation of their own, under slugs of their own (the slower one was a 500).

Each sign-up goes from a client of its own (its own database connection); ``at_once`` holds writes to
the organisations' table until both wait on it, so both have found the name's slug free before
either stores it, every run."""
from django.contrib.auth import get_user_model
from django.urls import reverse

from bots.models import Organization
from tests.platform.test_double_submit import PASSWORD, at_once, codes


def test_two_sign_ups_with_the_same_organisation_name_at_once_both_get_one(transactional_db):
    forms = iter([{"username": username, "email": f"{username}@example.com", "organization_name": "Acme Bikes",
                   "password1": PASSWORD, "password2": PASSWORD} for username in ("erin", "frank")])
    sent = at_once(2, lambda client: client.post(reverse("signup"), next(forms)), Organization)
    assert codes(sent) == [302, 302]
    organizations = Organization.objects.filter(name="Acme Bikes")
    assert sorted(org.memberships.get().user.username for org in organizations) == ["erin", "frank"]
    slugs = sorted(org.slug for org in organizations)
    assert slugs[0] == "acme-bikes" and slugs[1].startswith("acme-bikes-")
    for client, _ in sent:  # each signed in, acting for the organisation they made
        assert client.get(reverse("bots:list")).status_code == 200
    assert get_user_model().objects.filter(username__in=["erin", "frank"]).count() == 2
