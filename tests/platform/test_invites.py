"""Invitations: owners and admins invite by email; the link makes a member (and a user if needed).
Only a digest of a link's token is stored: the link is in the mail and shown once to the manager
who made or renewed the invitation, on the page the POST redirects to."""
import hashlib
import re

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from bots.models import Invitation, Membership


def invite(client, email, role="agent"):
    """The Team page after inviting: the one the POST redirects to, or the form with its errors."""
    return client.post(reverse("org:members"), {"email": email, "role": role}, follow=True)


def accept_link(mail):
    return re.search(r"https?://[^/\s]+(/accounts/invite/\S+/)", mail["message"].get_content()).group(1)


def shown_link(response):
    """The link a page shows once, right after the invitation was made or renewed."""
    return re.search(r"https?://[^/\s<]+(/accounts/invite/[^\s<]+/)", response.content.decode()).group(1)


def renew(client, invitation):
    """The Team page after asking for a new link (the POST redirects to it)."""
    return client.post(reverse("org:invitation-renew", args=[invitation.id]), follow=True)


def test_it_invites_a_new_person_who_signs_up_through_the_link(client, alice, smtp_settings):
    client.force_login(alice)
    assert invite(client, "erin@example.com").status_code == 200
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
    assert invite(client, "mallory@example.com", role="agent").status_code == 200


def test_it_rejects_an_invalid_email(client, alice, smtp_settings):
    client.force_login(alice)
    assert invite(client, "not an email").status_code == 400
    assert not Invitation.objects.exists()


def test_the_inviter_sees_the_link_once_and_the_team_page_never_again(client, alice, bob, smtp_settings):
    client.force_login(alice)
    response = invite(client, "erin@example.com")
    link = accept_link(smtp_settings.messages[0])
    page = response.content.decode()
    assert response.redirect_chain and response.request["PATH_INFO"] == reverse("org:members")
    assert shown_link(response) == link and "Invitation sent to erin@example.com" in page  # mail really left
    assert response["Cache-Control"] == "no-store"  # not kept by the browser either
    later = client.get(reverse("org:members")).content.decode()
    assert "erin@example.com" in later and "/accounts/invite/" not in later
    client.force_login(bob)  # an agent
    assert "/accounts/invite/" not in client.get(reverse("org:members")).content.decode()


def test_only_a_digest_of_the_links_token_is_stored(client, alice, smtp_settings):
    """What a backup, dumpdata or the admin shows of an invitation lets no one join."""
    import io

    from django.core.management import call_command

    client.force_login(alice)
    invite(client, "erin@example.com")
    link = accept_link(smtp_settings.messages[0])
    stored = Invitation.objects.values().get()
    client.logout()
    for value in stored.values():  # no column read from the database works as a link
        if isinstance(value, str):
            assert client.get(reverse("invite-accept", args=[value])).status_code == 404
    assert client.get(link).status_code == 200  # the link itself does
    token = link.rstrip("/").rsplit("/", 1)[1]
    dump = io.StringIO()
    call_command("dumpdata", "bots.invitation", stdout=dump)
    assert token not in str(stored) and token not in dump.getvalue()
    assert stored["digest"] == hashlib.sha256(token.encode()).hexdigest()


def test_without_mail_set_up_the_page_says_the_invitation_only_reached_the_log(client, alice, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"  # the embedded default
    client.force_login(alice)
    response = invite(client, "erin@example.com")
    page = response.content.decode()
    assert "mail is not set up on this server" in page and "Invitation sent" not in page
    link = shown_link(response)  # the link to pass on
    client.logout()
    assert client.get(link).status_code == 200


def test_a_new_link_replaces_the_old_one(client, alice, smtp_settings):
    """Lost the link, or the mail? A manager renews it: the invitee is mailed the new link, the
    manager is shown it once, the old one stops working."""
    from bots.models import AuditEvent

    client.force_login(alice)
    invite(client, "erin@example.com")
    old = accept_link(smtp_settings.messages[0])
    response = renew(client, Invitation.objects.get())
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    new = shown_link(response)
    mail = smtp_settings.messages[-1]
    assert mail["to"] == ["erin@example.com"] and accept_link(mail) == new != old
    assert "no longer works" in mail["message"].get_content()
    assert AuditEvent.objects.filter(action="member.invitation_renewed", actor=alice,
                                     text__contains="erin@example.com").exists()
    client.logout()
    assert client.get(old).status_code == 404
    response = client.post(new, {"username": "erin", "password1": "erin-passphrase-9", "password2": "erin-passphrase-9"})
    assert response.status_code == 302 and Membership.objects.filter(user__username="erin").exists()


def test_an_admin_sees_an_owner_invitation_but_cannot_renew_it(client, alice, acme, smtp_settings):
    """The link makes whoever opens it an owner: an admin, who cannot invite owners, cannot get one either."""
    from tests.conftest import make_member

    client.force_login(alice)
    invite(client, "olga@example.com", role="owner")
    invite(client, "erin@example.com", role="agent")
    owner_link = accept_link(smtp_settings.messages[0])
    owner, agent = Invitation.objects.get(role="owner"), Invitation.objects.get(role="agent")
    client.force_login(make_member(acme, "adam", "admin"))
    page = client.get(reverse("org:members")).content.decode()
    assert "olga@example.com" in page and "Only owners can cancel it or send it a new link" in page
    assert reverse("org:invitation-renew", args=[owner.id]) not in page
    assert reverse("org:invitation-renew", args=[agent.id]) in page
    assert renew(client, owner).status_code == 404
    assert client.get(owner_link).status_code == 200 and len(smtp_settings.messages) == 2  # untouched
    assert renew(client, agent).status_code == 200
    client.force_login(alice)  # an owner may
    assert renew(client, owner).status_code == 200 and client.get(owner_link).status_code == 404


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


def test_a_removed_admin_cannot_get_back_in_through_a_link_they_saw(client, alice, acme, smtp_settings,
                                                                     django_capture_on_commit_callbacks):
    """Adam (admin) saw erin's pending admin invitation's link, renewing it; once removed, it is dead."""
    from tests.conftest import make_member

    adam = make_member(acme, "adam", "admin")
    client.force_login(alice)
    invite(client, "erin@example.com", role="admin")
    invite(client, "olga@example.com", role="owner")  # adam never saw this one's link
    owner_link = accept_link(smtp_settings.messages[1])
    client.force_login(adam)
    seen = shown_link(renew(client, Invitation.objects.get(email="erin@example.com")))
    client.force_login(alice)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("org:member-remove", args=[Membership.objects.get(user=adam).id]))
    assert not Membership.objects.filter(user=adam).exists()

    client.force_login(adam)
    assert client.post(seen).status_code == 404
    assert not Membership.objects.filter(user=adam).exists()
    client.logout()  # the invitation itself stands, under a new link mailed to erin; olga's is untouched
    assert Invitation.objects.filter(email="erin@example.com", accepted__isnull=True).exists()
    renewed = [m for m in smtp_settings.messages if m["to"] == ["erin@example.com"]][-1]
    assert "no longer works" in renewed["message"].get_content()
    assert client.get(accept_link(renewed)).status_code == 200 and client.get(owner_link).status_code == 200


def test_a_demoted_manager_cannot_raise_themselves_back_through_a_link_they_saw(client, alice, acme, smtp_settings):
    from tests.conftest import make_member

    adam, olga = make_member(acme, "adam", "admin"), make_member(acme, "olga", "owner")
    client.force_login(alice)
    invite(client, "erin@example.com", role="admin")
    invite(client, "owen@example.com", role="owner")
    client.force_login(olga)
    owner_link = shown_link(renew(client, Invitation.objects.get(role="owner")))
    client.force_login(adam)
    adam_saw = shown_link(renew(client, Invitation.objects.get(role="admin")))

    client.force_login(alice)
    client.post(reverse("org:member-role", args=[Membership.objects.get(user=olga).id]), {"role": "admin"})
    # olga may still invite admins: the admin link stands; not owners: the owner link is renewed
    assert client.get(adam_saw).status_code == 200 and client.get(owner_link).status_code == 404
    client.post(reverse("org:member-role", args=[Membership.objects.get(user=adam).id]), {"role": "agent"})
    assert client.get(adam_saw).status_code == 404

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
    page, invitation = client.get(reverse("org:members")).content.decode(), Invitation.objects.get()
    assert "Expired on" in page and reverse("org:invitation-renew", args=[invitation.id]) not in page
    assert "cancel it and invite them again" in renew(client, invitation).content.decode()  # refused
    assert len(smtp_settings.messages) == 1
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
    kept = shown_link(invite(client, "adam.private@example.net", role="admin"))
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
    kept = shown_link(invite(client, "adam.private@example.net", role="admin"))
    client.force_login(alice)
    invite(client, "olga@example.com", role="agent")  # made by an owner: stays, under a new link
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("org:member-role", args=[Membership.objects.get(user=adam).id]), {"role": "agent"})

    client.force_login(adam)
    for link in [kept, *(accept_link(m) for m in smtp_settings.messages if m["to"] == ["adam.private@example.net"])]:
        assert client.post(link).status_code == 404
    assert Membership.objects.get(user=adam).role == "agent"
    assert list(Invitation.objects.values_list("email", flat=True)) == ["olga@example.com"]


def test_an_invitation_made_twice_stops_working_once_one_is_used(client, alice, acme, smtp_settings):
    """Two invitations pending for one address (made before inviting an address already invited was
    refused, the address typed in another case): erin joins with the first link; removed later, the
    second does not bring her back."""
    from bots import membership as members

    client.force_login(alice)
    first = shown_link(invite(client, "erin@example.com"))
    _, token = Invitation.issue(organization=acme, email="Erin@Example.com", role="agent", invited_by=alice)
    second = reverse("invite-accept", args=[token])
    assert client.get(second).status_code == 200 and members.invite_link(token).endswith(second)
    erin = get_user_model().objects.create_user("erin", "erin@example.com", "erin-passphrase-9")
    client.force_login(erin)
    assert client.post(first).status_code == 302
    assert not Invitation.objects.filter(accepted__isnull=True).exists()  # the other one is void

    client.force_login(alice)
    client.post(reverse("org:member-remove", args=[Membership.objects.get(user=erin).id]))
    client.force_login(erin)
    assert client.post(second).status_code == 404
    assert not Membership.objects.filter(user=erin).exists()


def test_removing_a_member_voids_the_invitations_pending_for_their_address(client, alice, acme, smtp_settings):
    from tests.conftest import make_member

    dana = make_member(acme, "dana", "agent")
    client.force_login(alice)
    # made before she joined (an address already a member's cannot be invited)
    Invitation.objects.create(organization=acme, email="DANA@example.com", role="admin", invited_by=alice)
    client.post(reverse("org:member-remove", args=[Membership.objects.get(user=dana).id]))
    assert not Invitation.objects.exists()


def test_removing_a_manager_mails_no_new_link_for_an_invitation_to_their_own_address(
        client, alice, acme, smtp_settings, django_capture_on_commit_callbacks):
    """Removing an admin renews the links they could have seen, but the invitation to their own address
    goes with them: it used to be renewed first, mailing them a link already dead."""
    from tests.conftest import make_member

    adam = make_member(acme, "adam", "admin")  # adam@example.com
    Invitation.objects.create(organization=acme, email="Adam@example.com", role="agent", invited_by=alice)
    Invitation.objects.create(organization=acme, email="erin@example.com", role="agent", invited_by=alice)
    client.force_login(alice)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("org:member-remove", args=[Membership.objects.get(user=adam).id]))
    assert [m["to"] for m in smtp_settings.messages] == [["erin@example.com"]]  # erin's link renewed, not adam's
    assert list(Invitation.objects.values_list("email", flat=True)) == ["erin@example.com"]


def test_the_migration_turns_clear_tokens_into_digests_and_the_links_sent_keep_working(transactional_db, client, acme):
    """An invitation made before 0022 kept its token in clear: after it, only the token's digest is
    left, and the link already mailed still works."""
    import secrets

    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    before, after = [("bots", "0021_membership_notify_by_email")], [("bots", "0022_invitation_digest")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    try:
        OldInvitation = executor.loader.project_state(before).apps.get_model("bots", "Invitation")
        tokens = {email: secrets.token_urlsafe(32) for email in ("erin@example.com", "olga@example.com")}
        for email, token in tokens.items():
            OldInvitation.objects.create(organization_id=acme.id, email=email, role="agent", token=token)
        executor.loader.build_graph()
        executor.migrate(after)
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes("bots"))
    with connection.cursor() as cursor:
        columns = {c.name for c in connection.introspection.get_table_description(cursor, "bots_invitation")}
    assert "token" not in columns
    for email, token in tokens.items():
        invitation = Invitation.objects.get(email=email)
        assert invitation.digest == hashlib.sha256(token.encode()).hexdigest()
        assert client.get(reverse("invite-accept", args=[token])).status_code == 200
        assert client.get(reverse("invite-accept", args=[invitation.digest])).status_code == 404


def test_an_invitation_whose_mail_cannot_be_sent_stands_and_its_link_is_shown(client, alice, settings):
    """A mail server that is down is not a 500 after the invitation was stored: the manager is told
    why, and shown the link to pass on (the one time it can be)."""
    import socket

    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", port, 5
    client.force_login(alice)
    response = invite(client, "erin@example.com")
    assert response.status_code == 200 and response.redirect_chain  # shown after the redirect
    page = response.content.decode()
    assert "the email could not be sent (ConnectionRefusedError" in page
    invitation = Invitation.objects.get(email="erin@example.com")
    link = shown_link(response)
    assert client.get(link).status_code == 200  # the shown link is the invitation's
    renewed = renew(client, invitation)
    assert renewed.status_code == 200 and "the email could not be sent" in renewed.content.decode()
    assert shown_link(renewed) != link and client.get(link).status_code == 404


def test_reloading_the_page_that_shows_a_new_invitations_link_invites_no_one_again(client, alice, smtp_settings):
    """The POST that makes an invitation redirects (POST/redirect/GET): reloading the page its link is
    shown on, or going back to it, repeats a GET, which shows the link no more, not the POST."""
    client.force_login(alice)
    response = client.post(reverse("org:members"), {"email": "erin@example.com", "role": "agent"})
    assert response.status_code == 302 and "/accounts/invite/" not in response["Location"]
    page = client.get(response["Location"])
    link = shown_link(page)
    assert page["Cache-Control"] == "no-store" and link == accept_link(smtp_settings.messages[0])
    assert link.rstrip("/").rsplit("/", 1)[1] not in response["Location"]  # the token waits in the session
    reloaded = client.get(response["Location"])
    assert reloaded.status_code == 200 and "/accounts/invite/" not in reloaded.content.decode()
    assert Invitation.objects.count() == 1 and len(smtp_settings.messages) == 1
    client.logout()
    assert client.get(link).status_code == 200


def stored_sessions():
    """Every row of ``django_session``: its raw ``session_data`` and that decoded, as JSON."""
    import json

    from django.contrib.sessions.models import Session

    return [(row.session_data, json.dumps(row.get_decoded(), ensure_ascii=False)) for row in Session.objects.all()]


@pytest.mark.parametrize("make", ["invite", "renew"])
def test_a_link_waiting_for_its_page_is_not_in_the_session_table_in_clear(client, alice, smtp_settings, make):
    """A redirect never followed leaves the session row for its 14 days: a copy of ``django_session``
    must not open the invitation, where only a digest of the link is stored. The page still shows it."""
    client.force_login(alice)
    if make == "renew":
        invite(client, "erin@example.com")
        response = client.post(reverse("org:invitation-renew", args=[Invitation.objects.get().id]))
    else:
        response = client.post(reverse("org:members"), {"email": "erin@example.com", "role": "agent"})
    token = accept_link(smtp_settings.messages[-1]).rstrip("/").rsplit("/", 1)[1]
    rows = stored_sessions()
    assert rows and not any(token in raw or token in decoded for raw, decoded in rows)
    link = shown_link(client.get(response["Location"]))  # the redirect, followed: shown once
    assert link == accept_link(smtp_settings.messages[-1])
    assert "/accounts/invite/" not in client.get(response["Location"]).content.decode()


def test_reloading_the_page_that_shows_a_renewed_link_does_not_renew_it_again(client, alice, smtp_settings):
    """A second renewal would kill the link the manager just copied."""
    client.force_login(alice)
    invite(client, "erin@example.com")
    response = client.post(reverse("org:invitation-renew", args=[Invitation.objects.get().id]))
    assert response.status_code == 302 and "/accounts/invite/" not in response["Location"]
    link = shown_link(client.get(response["Location"]))
    assert "/accounts/invite/" not in client.get(response["Location"]).content.decode()
    assert len(smtp_settings.messages) == 2 and accept_link(smtp_settings.messages[1]) == link
    client.logout()
    assert client.get(link).status_code == 200  # the link just copied still works


def test_a_second_invitation_to_an_address_already_invited_is_refused(client, alice, acme, smtp_settings):
    """One pending invitation, and so one working link, per address: a manager who invites it again
    (the form sent twice, "did you get it?", a second manager) is told to send it a new link instead."""
    from tests.conftest import make_member

    client.force_login(alice)
    invite(client, "erin@example.com")
    response = invite(client, "Erin@Example.com", role="admin")
    page = response.content.decode()
    assert response.status_code == 400 and "erin@example.com is already invited" in page and "new link" in page
    assert Invitation.objects.count() == 1 and len(smtp_settings.messages) == 1
    invite(client, "olga@example.com", role="owner")
    client.force_login(make_member(acme, "adam", "admin"))  # may not renew or cancel an owner's invitation
    response = invite(client, "olga@example.com", role="agent")
    assert response.status_code == 400 and "only an owner can" in response.content.decode()
    assert Invitation.objects.filter(email="olga@example.com").count() == 1 and len(smtp_settings.messages) == 2


def test_an_expired_invitation_gives_way_to_a_new_one_to_the_same_address(client, alice, smtp_settings):
    from datetime import timedelta

    from django.utils import timezone

    client.force_login(alice)
    invite(client, "erin@example.com")
    Invitation.objects.update(created=timezone.now() - timedelta(days=30))
    response = invite(client, "erin@example.com")
    assert response.status_code == 200 and not Invitation.objects.get().expired
    client.logout()
    assert client.get(shown_link(response)).status_code == 200


@pytest.mark.parametrize("signed_in", [True, False])
def test_a_link_renewed_while_it_is_being_opened_lets_no_one_in(client, alice, smtp_settings, monkeypatch, signed_in):
    """The invitation is read again by the link's token under the lock that accepts it: a new link made
    between opening the old one and accepting it (a manager renewing a link that leaked) wins."""
    from bots import membership as members

    client.force_login(alice)
    invite(client, "erin@example.com")
    old = accept_link(smtp_settings.messages[0])
    opened = members.open_invitation

    def renewed_meanwhile(token):
        invitation = opened(token)
        if invitation is not None:
            Invitation.objects.get(id=invitation.id).renew()
        return invitation

    monkeypatch.setattr(members, "open_invitation", renewed_meanwhile)
    if signed_in:
        client.force_login(get_user_model().objects.create_user("erin", "erin@example.com", "erin-passphrase-9"))
        assert client.post(old).status_code == 302
    else:
        client.logout()
        response = client.post(old, {"username": "erin", "password1": "erin-passphrase-9",
                                     "password2": "erin-passphrase-9"})
        assert response.status_code == 404  # as the dead link it is; and no account is left behind
        assert not get_user_model().objects.filter(username="erin").exists()
    assert not Membership.objects.filter(user__username="erin").exists()
    assert Invitation.objects.get().accepted is None
