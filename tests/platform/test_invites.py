"""Invitations: owners and admins invite by email; the link makes a member (and a user if needed)."""
import re

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from bots.models import Invitation, Membership


def invite(client, email, role="agent"):
    return client.post(reverse("org:members"), {"email": email, "role": role})


def accept_link(mail):
    return re.search(r"https?://[^/\s]+(/accounts/invite/\S+/)", mail["message"].get_content()).group(1)


def test_it_invites_a_new_person_who_signs_up_through_the_link(client, alice, smtp_settings):
    client.force_login(alice)
    assert invite(client, "erin@example.com").status_code == 302
    mail = smtp_settings.messages[0]
    assert mail["to"] == ["erin@example.com"] and "Acme" in mail["message"]["Subject"]
    client.logout()
    link = accept_link(mail)
    response = client.post(link, {"username": "erin", "password1": "erin-passphrase-9", "password2": "erin-passphrase-9"})
    assert response.status_code == 302 and response["Location"] == reverse("inbox:list")
    erin = get_user_model().objects.get(username="erin")
    assert erin.email == "erin@example.com"
    assert Membership.objects.get(user=erin).role == "agent"
    assert client.get(link).status_code == 404  # used once


def test_it_lets_an_existing_user_join_a_second_organisation_and_switch(client, alice, charlie, smtp_settings):
    client.force_login(charlie)
    invite(client, "alice@example.com", role="admin")
    link = accept_link(smtp_settings.messages[0])
    client.force_login(alice)
    assert client.post(link).status_code == 302
    assert Membership.objects.filter(user=alice).count() == 2
    page = client.get(reverse("org:members"))
    assert b"Switch organisation" in page.content and page.context["organization"].name == "Globex"
    acme = Membership.objects.get(user=alice, role="owner").organization
    client.post(reverse("switch-organization"), {"organization": acme.id})
    assert client.get(reverse("org:members")).context["organization"] == acme


def test_it_refuses_switching_to_an_organisation_the_user_is_not_in(client, alice, globex):
    client.force_login(alice)
    assert client.post(reverse("switch-organization"), {"organization": globex.id}).status_code == 404
    assert client.post(reverse("switch-organization"), {"organization": "x"}).status_code == 404


def test_it_does_not_let_agents_invite(client, bob, smtp_settings):
    client.force_login(bob)
    invite(client, "mallory@example.com", role="owner")
    assert not Invitation.objects.exists() and smtp_settings.messages == []


def test_it_does_not_let_admins_invite_owners(client, acme, smtp_settings):
    from tests.conftest import make_member

    admin = make_member(acme, "adam", "admin")
    client.force_login(admin)
    response = invite(client, "mallory@example.com", role="owner")
    assert response.status_code == 400 and not Invitation.objects.exists()
    assert invite(client, "mallory@example.com", role="agent").status_code == 302


def test_it_rejects_an_invalid_email(client, alice, smtp_settings):
    client.force_login(alice)
    assert invite(client, "not an email").status_code == 400
    assert not Invitation.objects.exists()


def test_managers_see_each_pending_invitations_link_and_agents_do_not(client, alice, bob, smtp_settings):
    client.force_login(alice)
    invite(client, "erin@example.com")
    link = accept_link(smtp_settings.messages[0])
    page = client.get(reverse("org:members")).content.decode()
    assert link in page and "Invitation sent to erin@example.com" in page  # mail really left: plain success
    client.force_login(bob)  # an agent
    assert link not in client.get(reverse("org:members")).content.decode()


def test_without_mail_set_up_the_page_says_the_invitation_only_reached_the_log(client, alice, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"  # the embedded default
    client.force_login(alice)
    page = client.get(invite(client, "erin@example.com")["Location"]).content.decode()
    assert "mail is not set up on this server" in page and "Invitation sent" not in page
    token = Invitation.objects.get(email="erin@example.com").token
    assert f"/accounts/invite/{token}/" in page  # the link to pass on


def test_an_admin_sees_an_owner_invitation_but_not_its_link(client, alice, acme, smtp_settings):
    """The link makes whoever opens it an owner: an admin, who cannot invite owners, cannot use one either."""
    from tests.conftest import make_member

    client.force_login(alice)
    invite(client, "olga@example.com", role="owner")
    invite(client, "erin@example.com", role="agent")
    owner_link, agent_link = (accept_link(mail) for mail in smtp_settings.messages)
    client.force_login(make_member(acme, "adam", "admin"))
    page = client.get(reverse("org:members")).content.decode()
    assert "olga@example.com" in page and owner_link not in page and "shown to owners only" in page
    assert agent_link in page
    client.force_login(alice)
    assert owner_link in client.get(reverse("org:members")).content.decode()


def test_accepting_an_invitation_for_a_higher_role_raises_an_existing_members_role(client, alice, acme, smtp_settings):
    from tests.conftest import make_member

    client.force_login(alice)
    invite(client, "dana@elsewhere.example", role="admin")  # another address of someone already an agent
    dana = make_member(acme, "dana", "agent")
    client.force_login(dana)
    assert client.post(accept_link(smtp_settings.messages[0])).status_code == 302
    assert Membership.objects.get(user=dana, organization=acme).role == "admin"


def test_a_role_change_waits_for_a_concurrent_one_on_the_other_owners(transactional_db, acme, alice):
    """Two owners demoting each other at once must not leave the organisation with none: the
    owners are counted under a lock, so the second change waits for the first and sees its result."""
    import threading

    from django.db import OperationalError, connection, transaction

    from bots import membership as members
    from tests.conftest import make_member

    olga = make_member(acme, "olga", "owner")
    alices, olgas = Membership.objects.get(user=alice), Membership.objects.get(user=olga)
    locked, release = threading.Event(), threading.Event()

    def other_owner_mid_change():  # alice's row taken by a change not yet committed
        with transaction.atomic():
            Membership.objects.select_for_update().get(id=alices.id)
            locked.set()
            release.wait(10)
        connection.close()

    holder = threading.Thread(target=other_owner_mid_change)
    holder.start()
    try:
        assert locked.wait(10)
        with transaction.atomic():
            connection.cursor().execute("SET LOCAL lock_timeout = '300ms'")
            try:
                members.change_role(alices, olgas, "agent")
            except OperationalError:
                waited = True
            else:
                waited = False
        assert waited  # it did not count the owners past the other change
    finally:
        release.set()
        holder.join()
    members.change_role(alices, olgas, "agent")  # once the other is done, it goes through
    assert Membership.objects.get(id=olgas.id).role == "agent"


def test_an_owner_demoted_a_moment_ago_can_no_longer_change_roles_or_remove(acme, alice, bob):
    """The acting owner's role is read again under the lock: the page that loaded it as an owner
    may be older than another owner's demotion of them."""
    from bots import membership as members
    from tests.conftest import make_member

    make_member(acme, "olga", "owner")
    alices, bobs = Membership.objects.get(user=alice), Membership.objects.get(user=bob)
    Membership.objects.filter(id=alices.id).update(role="agent")  # olga demoted alice meanwhile
    with pytest.raises(members.MembershipError, match="Only owners"):
        members.change_role(alices, bobs, "admin")
    with pytest.raises(members.MembershipError, match="Only owners"):
        members.remove(alices, bobs)
    assert Membership.objects.get(id=bobs.id).role == "agent"


def links_on_team_page(client):
    return re.findall(r"https?://[^/\s<]+(/accounts/invite/[^\s<]+/)", client.get(reverse("org:members")).content.decode())


def test_a_removed_admin_cannot_get_back_in_through_a_link_they_saw(client, alice, acme, smtp_settings,
                                                                     django_capture_on_commit_callbacks):
    """Adam (admin) saw erin's pending admin invitation on the Team page; once removed, its link is dead."""
    from tests.conftest import make_member

    adam = make_member(acme, "adam", "admin")
    client.force_login(alice)
    invite(client, "erin@example.com", role="admin")
    invite(client, "olga@example.com", role="owner")  # adam never saw this one's link
    client.force_login(adam)
    [seen] = links_on_team_page(client)
    client.force_login(alice)
    owner_link = next(link for link in links_on_team_page(client) if link != seen)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("org:member-remove", args=[Membership.objects.get(user=adam).id]))
    assert not Membership.objects.filter(user=adam).exists()

    client.force_login(adam)
    assert client.post(seen).status_code == 404
    assert not Membership.objects.filter(user=adam).exists()
    client.force_login(alice)  # the invitation itself stands, under a new link the owners pass on
    assert seen not in links_on_team_page(client) and owner_link in links_on_team_page(client)
    assert Invitation.objects.filter(email="erin@example.com", accepted__isnull=True).exists()
    [new_link] = [link for link in links_on_team_page(client) if link != owner_link]
    renewed = [m["message"].get_content() for m in smtp_settings.messages if m["to"] == ["erin@example.com"]][-1]
    assert new_link in renewed and "no longer works" in renewed  # erin is sent the new link


def test_a_demoted_manager_cannot_raise_themselves_back_through_a_link_they_saw(client, alice, acme, smtp_settings):
    from tests.conftest import make_member

    adam, olga = make_member(acme, "adam", "admin"), make_member(acme, "olga", "owner")
    client.force_login(alice)
    invite(client, "erin@example.com", role="admin")
    invite(client, "owen@example.com", role="owner")
    client.force_login(olga)
    olga_saw = set(links_on_team_page(client))
    client.force_login(adam)
    [adam_saw] = links_on_team_page(client)
    owner_link = (olga_saw - {adam_saw}).pop()

    client.force_login(alice)
    client.post(reverse("org:member-role", args=[Membership.objects.get(user=olga).id]), {"role": "admin"})
    still = set(links_on_team_page(client))
    assert adam_saw in still and owner_link not in still  # olga still sees the admin link, not the owner one
    client.post(reverse("org:member-role", args=[Membership.objects.get(user=adam).id]), {"role": "agent"})
    assert adam_saw not in links_on_team_page(client)

    client.force_login(adam)
    assert client.post(adam_saw).status_code == 404
    assert Membership.objects.get(user=adam).role == "agent"
    client.force_login(olga)
    assert client.post(owner_link).status_code == 404
    assert Membership.objects.get(user=olga).role == "admin"


def test_an_invitation_expires(client, alice, acme, settings, smtp_settings):
    from datetime import timedelta

    from django.utils import timezone

    settings.CHATNEXUS_INVITE_DAYS = 14
    client.force_login(alice)
    invite(client, "erin@example.com", role="agent")
    link = accept_link(smtp_settings.messages[0])
    assert "works for 14 days" in smtp_settings.messages[0]["message"].get_content()
    Invitation.objects.update(created=timezone.now() - timedelta(days=15))
    assert links_on_team_page(client) == [] and "Expired on" in client.get(reverse("org:members")).content.decode()
    client.logout()
    assert client.get(link).status_code == 404
    response = client.post(link, {"username": "erin", "password1": "erin-passphrase-9", "password2": "erin-passphrase-9"})
    assert response.status_code == 404 and not get_user_model().objects.filter(username="erin").exists()
    Invitation.objects.update(created=timezone.now() - timedelta(days=13))
    assert client.get(link).status_code == 200


def test_an_admin_cannot_cancel_an_owner_invitation(client, alice, acme, smtp_settings):
    from tests.conftest import make_member

    client.force_login(alice)
    invite(client, "olga@example.com", role="owner")
    invite(client, "erin@example.com", role="agent")
    client.force_login(make_member(acme, "adam", "admin"))
    owner, agent = Invitation.objects.get(role="owner"), Invitation.objects.get(role="agent")
    assert client.post(reverse("org:invitation-cancel", args=[owner.id])).status_code == 404
    assert Invitation.objects.filter(id=owner.id).exists()
    assert client.post(reverse("org:invitation-cancel", args=[agent.id])).status_code == 302
    assert not Invitation.objects.filter(id=agent.id).exists()


def test_a_removed_admin_cannot_rejoin_through_an_invitation_they_made_themselves(client, alice, acme, smtp_settings,
                                                                                   django_capture_on_commit_callbacks):
    """Adam (admin) invites his own second mailbox: once he is removed, that invitation is cancelled
    (in the activity log), not renewed and mailed to him again."""
    from bots.models import AuditEvent
    from tests.conftest import make_member

    adam = make_member(acme, "adam", "admin")
    client.force_login(adam)
    invite(client, "adam.private@example.net", role="admin")
    [kept] = links_on_team_page(client)
    client.force_login(alice)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("org:member-remove", args=[Membership.objects.get(user=adam).id]))

    client.force_login(adam)
    for link in [kept, *(accept_link(m) for m in smtp_settings.messages)]:  # kept, and what his mailbox got
        assert client.post(link).status_code == 404
    assert not Membership.objects.filter(user=adam).exists()
    assert not Invitation.objects.filter(email="adam.private@example.net").exists()
    assert AuditEvent.objects.filter(organization=acme, action="member.invitation_cancelled",
                                     text__contains="adam.private@example.net").exists()


def test_a_demoted_admin_cannot_raise_themselves_back_through_an_invitation_they_made(
        client, alice, acme, smtp_settings, django_capture_on_commit_callbacks):
    from tests.conftest import make_member

    adam = make_member(acme, "adam", "admin")
    client.force_login(adam)
    invite(client, "adam.private@example.net", role="admin")
    [kept] = links_on_team_page(client)
    client.force_login(alice)
    invite(client, "olga@example.com", role="agent")  # made by an owner: stays, under a new link
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("org:member-role", args=[Membership.objects.get(user=adam).id]), {"role": "agent"})

    client.force_login(adam)
    for link in [kept, *(accept_link(m) for m in smtp_settings.messages if m["to"] == ["adam.private@example.net"])]:
        assert client.post(link).status_code == 404
    assert Membership.objects.get(user=adam).role == "agent"
    assert list(Invitation.objects.values_list("email", flat=True)) == ["olga@example.com"]


def test_an_invitation_sent_twice_stops_working_once_one_is_used(client, alice, acme, smtp_settings):
    """Invited twice ("did you get it?", the address typed in another case), erin joins with the first
    link; removed later, the second link does not bring her back."""
    client.force_login(alice)
    invite(client, "erin@example.com")
    invite(client, "Erin@Example.com")
    first, second = Invitation.objects.order_by("id")
    erin = get_user_model().objects.create_user("erin", "erin@example.com", "erin-passphrase-9")
    client.force_login(erin)
    assert client.post(reverse("invite-accept", args=[first.token])).status_code == 302
    assert not Invitation.objects.filter(accepted__isnull=True).exists()  # the other one is void

    client.force_login(alice)
    client.post(reverse("org:member-remove", args=[Membership.objects.get(user=erin).id]))
    client.force_login(erin)
    assert client.post(reverse("invite-accept", args=[second.token])).status_code == 404
    assert not Membership.objects.filter(user=erin).exists()


def test_removing_a_member_voids_the_invitations_pending_for_their_address(client, alice, acme, smtp_settings):
    from tests.conftest import make_member

    dana = make_member(acme, "dana", "agent")
    client.force_login(alice)
    # made before she joined (an address already a member's cannot be invited)
    Invitation.objects.create(organization=acme, email="DANA@example.com", role="admin", invited_by=alice)
    client.post(reverse("org:member-remove", args=[Membership.objects.get(user=dana).id]))
    assert not Invitation.objects.exists()
