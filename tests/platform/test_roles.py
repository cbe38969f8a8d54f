"""Roles: owners change roles and remove members; agents work the inbox only (and see the team
page): the top bar and signing in show each role its own pages."""
import re

from django.urls import reverse

from bots.models import Membership
from tests.conftest import make_member


def test_it_keeps_agents_out_of_the_builder_and_dashboards(client, bob, acme_bot):
    client.force_login(bob)
    assert client.get(reverse("inbox:list")).status_code == 200
    assert client.get(reverse("bots:builder", args=[acme_bot.id])).status_code == 404
    assert client.get(reverse("bots:create")).status_code == 404
    assert client.get(reverse("dashboards:org")).status_code == 404
    assert client.get(reverse("dashboards:bot", args=[acme_bot.id])).status_code == 404


def test_it_lets_the_owner_open_the_builder(client, alice, acme_bot):
    client.force_login(alice)
    assert client.get(reverse("bots:builder", args=[acme_bot.id])).status_code == 200
    assert client.get(reverse("dashboards:org")).status_code == 200


def test_it_lets_the_owner_change_a_role_and_remove_a_member(client, alice, bob):
    client.force_login(alice)
    bob_membership = Membership.objects.get(user=bob)
    page = client.get(reverse("org:members")).content.decode()  # app.js asks before a data-confirm form posts
    assert 'data-confirm="Remove bob from Acme? Their conversations become unassigned."' in page
    client.post(reverse("org:member-role", args=[bob_membership.id]), {"role": "admin"})
    bob_membership.refresh_from_db()
    assert bob_membership.role == "admin"
    client.post(reverse("org:member-remove", args=[bob_membership.id]))
    assert not Membership.objects.filter(id=bob_membership.id).exists()


def test_it_does_not_let_admins_or_agents_change_roles(client, alice, bob):
    alice_membership = Membership.objects.get(user=alice)
    client.force_login(bob)
    client.post(reverse("org:member-role", args=[alice_membership.id]), {"role": "agent"})
    client.post(reverse("org:member-remove", args=[alice_membership.id]))
    alice_membership.refresh_from_db()
    assert alice_membership.role == "owner"


def test_it_keeps_the_last_owner(client, alice):
    client.force_login(alice)
    membership = Membership.objects.get(user=alice)
    client.post(reverse("org:member-role", args=[membership.id]), {"role": "agent"})
    client.post(reverse("org:member-remove", args=[membership.id]))
    membership.refresh_from_db()
    assert membership.role == "owner"


def test_it_rejects_an_unknown_role(client, alice, bob):
    client.force_login(alice)
    membership = Membership.objects.get(user=bob)
    client.post(reverse("org:member-role", args=[membership.id]), {"role": "emperor"})
    membership.refresh_from_db()
    assert membership.role == "agent"


def top_bar_links(page: str) -> list[str]:
    """The hrefs of the top bar's section links, in order."""
    nav = page.split('<nav aria-label="Sections">', 1)[1].split("</nav>", 1)[0]
    return re.findall(r'href="([^"]+)"', nav)


def test_the_top_bar_shows_each_role_only_the_sections_it_may_open(client, alice, bob, acme_bot):
    """Agents work the inbox (and see the team page): no link to the bots or the dashboards, which
    answer them 404 or show them nothing to do; every link the bar shows them opens."""
    client.force_login(bob)
    links = top_bar_links(client.get(reverse("inbox:list")).content.decode())
    assert links == [reverse("inbox:list"), reverse("org:members")]
    assert all(client.get(link).status_code == 200 for link in links)
    client.force_login(alice)
    links = top_bar_links(client.get(reverse("inbox:list")).content.decode())
    assert links == [reverse("bots:list"), reverse("inbox:list"), reverse("dashboards:org"), reverse("org:members")]
    assert all(client.get(link).status_code == 200 for link in links)


def test_signing_in_lands_each_role_where_switching_organisation_does(client, alice, bob):
    for user, start in ((alice, "bots:list"), (bob, "inbox:list")):  # an owner, an agent
        client.logout()
        response = client.post(reverse("login"), {"username": user.username, "password": "correct-horse-battery"},
                               follow=True)
        assert response.redirect_chain[-1][0] == reverse(start), user.username
        switched = client.post(reverse("switch-organization"), {"organization": user.memberships.get().organization_id})
        assert switched["Location"] == reverse(start)
        assert client.get("/")["Location"] == reverse(start)  # the brand link in the top bar


def test_signing_in_follows_next_and_lands_by_the_organisation_a_new_session_acts_for(client, acme, globex):
    """``?next=`` still wins; without it, the role in the oldest membership (the organisation a new
    session acts for) decides."""
    dana = make_member(globex, "dana", "agent")  # an agent in Globex first, then an owner in Acme
    Membership.objects.create(user=dana, organization=acme, role="owner")
    response = client.post(reverse("login"), {"username": "dana", "password": "correct-horse-battery"}, follow=True)
    assert response.redirect_chain[-1][0] == reverse("inbox:list")
    client.logout()
    response = client.post(reverse("login") + "?next=/team/", {"username": "dana", "password": "correct-horse-battery"})
    assert response["Location"] == "/team/"
