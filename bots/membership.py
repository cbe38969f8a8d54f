"""Organisations and their members: sign up, invite, accept, change role, remove.

The side-effecting functions views and the API call; views stay thin. Rules:
owners and admins invite (admins cannot invite owners); only owners change roles
or remove members; an organisation always keeps at least one owner. Only a digest of an
invitation's token is stored: its link is mailed to the invitee and shown once to the manager who
made or renewed it. A link works for ``CHATNEXUS_INVITE_DAYS`` days, and is replaced when someone
who could have seen it loses manager rights; the invitations they made themselves, for a role they
may no longer invite, are cancelled instead (the invitee may be themselves, at another address).
An address has one pending invitation at a time (inviting it again is refused: renew that one);
accepting one voids any other pending for the same address; removing a member voids those for theirs.

What changes a team (invite, renew, accept, change role, remove) locks the organisation's row first
(``_lock_team``), then memberships, then invitations: they wait for one another, always in that order
(none deadlocks), and each checks the roles as stored once it holds the lock, not as its request
read them (a manager demoted meanwhile invites nothing).
"""
import logging
import secrets
import smtplib

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.text import slugify

from . import audit
from .models import Conversation, Invitation, Membership, Organization
from .models.tenants import person_name, token_digest

logger = logging.getLogger(__name__)

Role = Membership.Role


class MembershipError(Exception):
    """A rule was broken (last owner, not allowed); the message is shown to the user."""


def unique_slug(name):
    base = slugify(name)[:60] or "org"
    slug = base
    while Organization.objects.filter(slug=slug).exists():
        slug = f"{base}-{secrets.token_hex(3)}"
    return slug


@transaction.atomic
def create_organization(owner, name):
    org = None
    while org is None:
        slug = unique_slug(name)
        try:
            with transaction.atomic():  # a savepoint: the insert refused is undone, the sign-up goes on
                org = Organization.objects.create(name=name, slug=slug)
        except IntegrityError:
            # free when looked at, taken when stored: the same name signed up at the same moment, whose
            # transaction committed meanwhile (so the next look sees its slug, and picks another)
            if not Organization.objects.filter(slug=slug).exists():
                raise
    Membership.objects.create(user=owner, organization=org, role=Role.OWNER)
    return org


@transaction.atomic
def sign_up(*, username, email, organization_name, password):
    """A new user owning a new organisation."""
    user = get_user_model().objects.create_user(username=username, email=email, password=password)
    org = create_organization(user, organization_name)
    return user, org


# ---------------------------------------------------------------------------
# Sign-up confirmed by mail (where mail leaves the server): the form's answer is "check your email"
# for every address, and every address gets a mail, so neither says whether it has an account.

SIGNUP_LINK_S = 24 * 60 * 60  # how long a sign-up's confirmation link works


def _pending_key(token):
    return "signup:pending:" + token_digest(token)  # the cache holds the link's digest, not the link


def request_sign_up(*, username, email, organization_name) -> str | None:
    """Mail ``email`` the next step of a sign-up; return why the mail could not be sent, or None. A new
    address gets a link whose page asks for the password and makes the account and organisation
    (``confirm_sign_up``): until then the sign-up waits in the cache for ``SIGNUP_LINK_S``, with no
    password — whoever filled in the form need not hold the mailbox, and an account they chose the
    password of would be theirs once its owner clicked the link. An address that has an account gets
    a note that someone tried to sign up with it, with links to log in and to reset the password;
    nothing is made and nothing of that account changes."""
    pending = {"username": username, "email": email, "organization_name": organization_name}
    holders = list(get_user_model().objects.filter(email__iexact=email).order_by("id").values_list("username", "email"))
    if holders:  # told at the address as the account has it (as a reset link is), not as typed
        return _mail(holders[0][1], "Someone tried to sign up to ChatNexus with your address", (
            f"Someone, perhaps you, tried to sign up to ChatNexus with this address. It already has an "
            f"account: {', '.join(username for username, _ in holders)}.\n\n"
            f"Log in: {settings.PUBLIC_URL}{reverse('login')}\n"
            f"Forgot the password? Choose a new one: {settings.PUBLIC_URL}{reverse('password_reset')}\n\n"
            "If it wasn't you, ignore this email: nothing was made, and nothing of your account changed.\n"
        ), "sign-up of a taken address")
    token = secrets.token_urlsafe(32)
    cache.set(_pending_key(token), pending, SIGNUP_LINK_S)
    # (what was typed, the username and organisation name, is on the link's page, not in a mail that
    # anyone may have sent to any address)
    return _mail(email, "Confirm your address to finish signing up to ChatNexus", (
        f"To finish signing up to ChatNexus, confirm your address: "
        f"{settings.PUBLIC_URL}{reverse('signup-confirm', args=[token])}\n"
        f"The link works for {SIGNUP_LINK_S // 3600} hours.\n\n"
        "If it wasn't you, ignore this email: no account is made without that link.\n"
    ), "sign-up")


def pending_sign_up(token):
    """The sign-up waiting for the link of ``token`` (username, email, organization_name), or None:
    unknown, used, or older than ``SIGNUP_LINK_S``."""
    return cache.get(_pending_key(token))


def confirm_sign_up(token, password):
    """Make the account and organisation of the sign-up waiting for ``token``'s link, with ``password``
    (chosen on the link's page): (user, org). The link works once: it is taken out of the cache before
    anything is made (a double click makes one account). MembershipError when it no longer works, or its
    address got an account or its username was taken meanwhile."""
    key = _pending_key(token)
    pending = cache.get(key)
    if pending is None or not cache.delete(key):  # (delete says whether this request took it)
        raise MembershipError("This link no longer works (used, or older than a day): sign up again.")
    users = get_user_model().objects
    if users.filter(email__iexact=pending["email"]).exists():
        raise MembershipError("This address has an account now: log in, or reset its password.")
    taken = MembershipError(f"The username {pending['username']} was taken meanwhile: sign up again with another.")
    if users.filter(username__iexact=pending["username"]).exists():
        raise taken
    try:
        return sign_up(username=pending["username"], email=pending["email"],
                       organization_name=pending["organization_name"], password=password)
    except IntegrityError:  # taken a moment ago
        if not users.filter(username__iexact=pending["username"]).exists():
            raise
        raise taken from None


RANK = {Role.AGENT: 0, Role.ADMIN: 1, Role.OWNER: 2}


def may_invite(membership, role) -> bool:
    """Whether ``membership`` may invite someone as ``role`` (and so cancel, or renew and see the
    accept link of, such an invitation)."""
    return membership.can_manage and (role != Role.OWNER or membership.role == Role.OWNER)


def _lock_team(organization_id):
    """Lock the organisation's row to the end of the transaction, the first lock of whatever changes
    its team: the same invitation form sent twice at once (a double click) is checked one after the
    other, so the second finds the first invitation, and a manager inviting while an owner demotes
    them is checked before or after the demotion, never in between. FOR NO KEY UPDATE: rows that
    refer to the organisation (conversations, the activity log) are still inserted meanwhile."""
    Organization.objects.select_for_update(no_key=True).filter(id=organization_id).first()


def _manager_as_stored(membership, role, refusal):
    """``membership`` as stored now, locked to the end of the transaction (after ``_lock_team``), if it
    may still invite as ``role``: the request read its role when it began, and an owner may have
    demoted or removed it since. MembershipError(``refusal``) otherwise."""
    current = Membership.objects.select_for_update().filter(id=membership.id).first()
    if current is None or not may_invite(current, role):
        raise MembershipError(refusal if current is not None and current.can_manage
                              else "Only owners and admins can invite.")
    return current


def invite(*, organization, inviter_membership, email, role):
    """Create an invitation and email its accept link; return the invitation, its link's token (shown
    once to the inviter: only its digest is kept) and why the mail could not be sent, or None. An address
    has one pending invitation at a time (one link that works): inviting it again is refused, the
    manager is told to send that invitation a new link instead; an expired one gives way."""
    with transaction.atomic():
        _lock_team(organization.id)
        inviter_membership = _manager_as_stored(inviter_membership, role, "Only owners can invite owners.")
        if Membership.objects.filter(organization=organization, user__email__iexact=email).exists():
            raise MembershipError(f"{email} is already a member.")
        pending = _pending_to(organization, email).order_by("-id")
        for invitation in pending:
            if invitation.expired:  # its link no longer works: nothing to renew, the new one replaces it
                invitation.delete()
            elif may_invite(inviter_membership, invitation.role):
                raise MembershipError(
                    f"{invitation.email} is already invited (as {invitation.get_role_display()}): to send them "
                    "the invitation again, use “new link” under Pending invitations; to invite them as "
                    "something else, cancel it first.")
            else:
                raise MembershipError(
                    f"{invitation.email} is already invited (as {invitation.get_role_display()}): only an owner "
                    "can send it a new link or cancel it.")
        invitation, token = Invitation.issue(
            organization=organization, email=email, role=role, invited_by=inviter_membership.user
        )
    return invitation, token, _mail_invitation(invitation, token)


def renew(membership, invitation):
    """A new link for a pending invitation, mailed to its invitee (the one sent before stops working);
    return its token, to show once to ``membership``, who asked for it, and why the mail could not be sent, or None."""
    with transaction.atomic():
        _lock_team(invitation.organization_id)
        _manager_as_stored(membership, invitation.role, "Only owners can renew an owner's invitation.")
        invitation = Invitation.objects.select_related("organization", "invited_by").filter(
            id=invitation.id, accepted__isnull=True).first()
        if invitation is None:
            raise MembershipError("This invitation was used or cancelled meanwhile.")
        if invitation.expired:
            raise MembershipError("This invitation has expired: cancel it and invite them again.")
        token = invitation.renew()
    return token, _mail_invitation(invitation, token, renewed=True)


def _mail_invitation(invitation, token, renewed=False) -> str | None:
    """Mail the invitee its link; None when the mail server took it, else why not (the invitation
    stands: the manager is shown the link to pass on)."""
    organization = invitation.organization
    inviter = person_name(invitation.invited_by) if invitation.invited_by else f"The {organization.name} team"
    days = (invitation.expires - invitation.created).days
    lead = ("The link of your invitation changed; the one sent before no longer works.\n\n" if renewed else "")
    return _mail(invitation.email, f"You're invited to {organization.name} on ChatNexus", (
        f"{lead}{inviter} invited you to join {organization.name} on ChatNexus as "
        f"{invitation.get_role_display()}.\n\n"
        f"Accept the invitation: {invite_link(token)}\n"
        f"The link works for {days} days from the invitation.\n"
    ), f"invitation {invitation.id}")


def _mail(recipient, subject, message, what) -> str | None:
    """Send one plain-text mail (``what``: which, for the log); None when the mail server took it,
    else why not."""
    try:
        send_mail(subject=subject, message=message, from_email=None, recipient_list=[recipient])
    except (smtplib.SMTPException, OSError) as error:  # refused, unreachable, timed out
        logger.warning("%s: the mail to %s could not be sent: %s", what, recipient, error)
        return f"{type(error).__name__}: {error}"
    return None


def invite_link(token) -> str:
    """The accept link of an invitation's token (mailed, and shown once to the manager who made or
    renewed it, to pass on)."""
    return settings.PUBLIC_URL + reverse("invite-accept", args=[token])


def mail_leaves_the_server() -> bool:
    """False on the embedded default's console backend: "sent" mail is only printed in the log."""
    return not settings.EMAIL_BACKEND.endswith((".console.EmailBackend", ".locmem.EmailBackend", ".dummy.EmailBackend"))


def open_invitation(token):
    """The pending invitation of ``token``, or None (unknown, used, or expired)."""
    invitation = Invitation.of_token(token).select_related("organization").filter(accepted__isnull=True).first()
    return None if invitation is None or invitation.expired else invitation


@transaction.atomic
def accept(token, user):
    """Make ``user`` a member with the role of the invitation of ``token`` (an existing membership keeps
    the higher role): the membership, and the role it had before (None: new). The invitation is read
    again by the token's digest under a lock: a link renewed, used or cancelled since
    ``open_invitation`` found it no longer works."""
    organization_id = Invitation.of_token(token).values_list("organization_id", flat=True).first()
    if organization_id is not None:  # the team's lock first, as everything that changes a team
        _lock_team(organization_id)
    invitation = Invitation.of_token(token).select_for_update().first()
    if invitation is None or invitation.accepted is not None:
        raise MembershipError("This invitation no longer works: it was used, cancelled or sent a new link.")
    if invitation.expired:
        raise MembershipError("This invitation has expired: ask the team for a new one.")
    membership, created = Membership.objects.get_or_create(
        user=user, organization=invitation.organization, defaults={"role": invitation.role}
    )
    before = None if created else membership.role
    if not created and RANK[Role(invitation.role)] > RANK[Role(membership.role)]:
        membership.role = invitation.role
        membership.save(update_fields=["role"])
    invitation.accepted = timezone.now()
    invitation.save(update_fields=["accepted"])
    # another invitation to this address (made before one address could have only one pending): its
    # link must not work once this one is used, or it would bring the member back in after a removal
    _pending_to(invitation.organization, invitation.email).exclude(id=invitation.id).delete()
    return membership, before


def _pending_to(organization, email):
    return Invitation.objects.filter(organization=organization, email__iexact=email, accepted__isnull=True)


def _retire_links_seen(actor, membership, new_role=None):
    """``membership`` loses manager rights (``new_role``: demoted; None: removed). Pending invitations
    it made itself for a role it may no longer invite are cancelled (in the activity log, by
    ``actor``): their invitee may be that member at another address. Every other pending invitation
    whose link it could have seen (renewing it on the Team page) and no longer could gets a new token,
    so a link it kept cannot bring it back in, or back up; its invitee is mailed the new link."""
    organization = membership.organization
    before, after = Membership(role=membership.role), Membership(role=new_role) if new_role else None
    lost = [r for r in Role.values if may_invite(before, r) and not (after and may_invite(after, r))]
    pending = Invitation.objects.select_related("organization", "invited_by").filter(
        organization=organization, accepted__isnull=True, role__in=lost)
    for invitation in pending.filter(invited_by=membership.user):
        invitation.delete()
        role = invitation.get_role_display()
        audit.record(organization, actor.user, "member.invitation_cancelled",
                     f"Cancelled the invitation of {invitation.email} as {role}: "
                     f"{membership.user.get_username()}, who made it, may no longer invite as {role}")
    for invitation in pending.exclude(invited_by=membership.user):
        if invitation.expired:
            continue
        token = invitation.renew()
        transaction.on_commit(lambda invitation=invitation, token=token:
                              _mail_invitation(invitation, token, renewed=True))


def _as_stored(actor, membership, action):
    """The acting member, the member acted on and the organisation's owner count as stored now, the
    organisation's row (``_lock_team``) and memberships locked (in id order, so two owners acting on
    each other wait instead of deadlocking) to the end of the transaction: the roles the request read
    may be stale (an owner demoted by another owner a moment ago must not still change roles), and two
    owners demoting or removing each other at once are counted one after the other, so one of them is
    refused."""
    _lock_team(membership.organization_id)
    rows = {m.id: m for m in Membership.objects.select_for_update().filter(
        organization_id=membership.organization_id).order_by("id")}
    actor, current = rows.get(actor.id), rows.get(membership.id)
    if actor is None or actor.role != Role.OWNER:
        raise MembershipError(f"Only owners can {action}.")
    if current is None:
        raise MembershipError("That person is no longer a member.")
    return actor, current, sum(m.role == Role.OWNER for m in rows.values())


@transaction.atomic
def change_role(actor, membership, role):
    actor, current, owners = _as_stored(actor, membership, "change roles")
    if role not in Role.values:
        raise MembershipError("Unknown role.")
    if current.role == Role.OWNER and role != Role.OWNER and owners <= 1:
        raise MembershipError("An organisation needs at least one owner.")
    _retire_links_seen(actor, current, role)
    current.role = membership.role = role
    current.save(update_fields=["role"])


@transaction.atomic
def remove(actor, membership):
    actor, membership, owners = _as_stored(actor, membership, "remove members")
    if membership.role == Role.OWNER and owners <= 1:
        raise MembershipError("An organisation needs at least one owner.")
    with transaction.atomic():
        if membership.user.email:  # a second invitation to their address, made before they joined: gone
            _pending_to(membership.organization, membership.user.email).delete()  # first, not renewed and mailed
        _retire_links_seen(actor, membership)
        Conversation.objects.filter(organization=membership.organization, assignee=membership.user).update(assignee=None)
        membership.delete()
