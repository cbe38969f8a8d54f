"""Roles: owners change roles and remove members; agents work the inbox only."""
from django.urls import reverse

from bots.models import Membership


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
