"""A manager demoted by an owner while their own request invites or renews a link: the request checks
the role as stored once it holds the team's lock, not as its middleware read it when it began, so no
invitation for a role they lost survives the demotion (one made before it is cancelled by it, one
after it is refused). Everything that changes a team takes its locks in one order (the organisation's
row, memberships, invitations): two such requests wait for each other, and neither is a 500.

Each request goes from a client of its own, in a thread of its own (its own database connection).
So that they meet the same way every run, another session holds what the owner's request writes last
until both wait on a lock: the owner's request has begun (the demotion not yet stored) when the
manager's request reads their role."""
import re
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from django.core import mail
from django.db import connection, connections
from django.test import Client
from django.urls import reverse

from bots import membership as members
from bots.models import Invitation, Membership
from tests.conftest import make_member, wait_for
from tests.platform.test_double_submit import waiting


@contextmanager
def held(sql, *params):
    """Another session runs ``sql`` (a lock) in a transaction it keeps open until the block ends."""
    gate = connections.create_connection("default")
    try:
        with gate.cursor() as cursor:
            cursor.execute("BEGIN")
            cursor.execute(sql, params)
            yield
    finally:
        gate.close()  # (its transaction ends with it, the test failing or not)


def signed_in(user):
    client = Client(raise_request_exception=False)  # a 500 is a response to look at
    client.force_login(user)
    return client


def one_after_the_other(first, then, pool):
    """``first()`` in a thread until it waits on a lock, then ``then()`` in another, until it waits too
    (or is done); returns the two futures, to be read once the caller lets the lock go."""
    def own_connection(send):
        def run():
            try:
                return send()
            finally:
                connection.close()  # this thread's own
        return run

    started = pool.submit(own_connection(first))
    wait_for(lambda: waiting() >= 1 or started.done(), what="the first request waiting on the held lock")
    following = pool.submit(own_connection(then))
    wait_for(lambda: waiting() >= 2 or following.done() or started.done(), what="the second request")
    return started, following


def test_an_admin_demoted_while_sending_an_invitation_gets_none_out(transactional_db, acme):
    """Alice demotes Adam from admin to agent; Adam's admin invitation to his other address, sent as she
    does, reads his role (admin) before her change is stored: it used to be made after her change had
    looked for his invitations to cancel, and its mailed link made him admin again."""
    alice, adam = make_member(acme, "alice", "owner"), make_member(acme, "adam", "admin")
    as_owner, as_adam = signed_in(alice), signed_in(adam)
    adams = Membership.objects.get(user=adam)
    demote = lambda: as_owner.post(reverse("org:member-role", args=[adams.id]), {"role": "agent"})  # noqa: E731
    invite = lambda: as_adam.post(  # noqa: E731
        reverse("org:members"), {"email": "adam.other@else.example", "role": "admin"})
    with ThreadPoolExecutor(2) as pool:
        # the demotion is stored last (its role update waits on the table's SHARE lock): by then it has
        # looked for Adam's pending invitations, and Adam's request has read his role
        with held("LOCK TABLE bots_membership IN SHARE MODE"):
            demoting, inviting = one_after_the_other(demote, invite, pool)
        demoted, invited = demoting.result(), inviting.result()
    assert demoted.status_code == 302 and invited.status_code == 400, invited.status_code
    assert "Only owners and admins can invite." in invited.content.decode()
    adams.refresh_from_db()
    assert adams.role == "agent"
    assert not Invitation.objects.filter(organization=acme, accepted__isnull=True).exists()
    for link in re.findall(r"/accounts/invite/[^\s]+/", "".join(m.body for m in mail.outbox)):
        as_adam.post(link)  # nothing mailed makes him admin again
    adams.refresh_from_db()
    assert adams.role == "agent"


def test_an_admin_demoted_while_asking_for_a_new_link_gets_none(transactional_db, acme):
    """Adam asks for a new link to Alice's admin invitation of Eve as Alice demotes him: her change sends
    Eve a new link (Adam could have seen the old one); his request, which read his role before her
    change was stored, used to renew it again after, making a link that worked in his session."""
    alice, adam = make_member(acme, "alice", "owner"), make_member(acme, "adam", "admin")
    invitation, _ = Invitation.issue(organization=acme, email="eve@else.example", role="admin", invited_by=alice)
    as_owner, as_adam = signed_in(alice), signed_in(adam)
    adams = Membership.objects.get(user=adam)
    demote = lambda: as_owner.post(reverse("org:member-role", args=[adams.id]), {"role": "agent"})  # noqa: E731
    renew = lambda: as_adam.post(reverse("org:invitation-renew", args=[invitation.id]))  # noqa: E731
    with ThreadPoolExecutor(2) as pool:
        # the demotion's renewal of Eve's link waits on this row lock
        with held("SELECT id FROM bots_invitation WHERE id = %s FOR UPDATE", invitation.id):
            demoting, renewing = one_after_the_other(demote, renew, pool)
        demoted, renewed = demoting.result(), renewing.result()
    assert demoted.status_code == 302
    assert renewed.status_code == 302 and renewed["Location"] == reverse("org:members")  # refused: no link to show
    assert [m.to for m in mail.outbox] == [["eve@else.example"]]  # the demotion's new link only
    link = re.search(r"/accounts/invite/([^\s/]+)/", mail.outbox[0].body).group(1)
    assert members.open_invitation(link) == invitation  # Eve's link works


def test_a_member_accepting_an_invitation_while_being_removed_is_answered_one_after_the_other(transactional_db, acme):
    """Adam opens an owner invitation to his address as Alice removes him. The acceptance locked the
    invitation, then his membership; the removal his membership, then the invitations to his address:
    each waited on the other (a deadlock: one of the two was a 500)."""
    alice, adam = make_member(acme, "alice", "owner"), make_member(acme, "adam", "admin")
    _, token = Invitation.issue(organization=acme, email=adam.email, role="owner", invited_by=alice)
    as_owner, as_adam = signed_in(alice), signed_in(adam)
    adams = Membership.objects.get(user=adam)
    accept = lambda: as_adam.post(reverse("invite-accept", args=[token]))  # noqa: E731
    remove = lambda: as_owner.post(reverse("org:member-remove", args=[adams.id]))  # noqa: E731
    with ThreadPoolExecutor(2) as pool:
        # the acceptance's role update waits on the table's SHARE lock, its invitation locked
        with held("LOCK TABLE bots_membership IN SHARE MODE"):
            accepting, removing = one_after_the_other(accept, remove, pool)
        accepted, removed = accepting.result(), removing.result()
    assert (accepted.status_code, removed.status_code) == (302, 302)
    assert not Membership.objects.filter(user=adam).exists()  # removed after he became an owner
    assert not Invitation.objects.filter(accepted__isnull=True).exists()

