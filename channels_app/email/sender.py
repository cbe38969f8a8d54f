"""Whose address the email channel's mail is from, and the confirmation that lets it be the bot's.

Anyone may type any address as the bot's. Through the channel's own SMTP server (``own_server``) the
mail goes From the bot's address: that server, where the organisation logs in, answers for it.
Through this platform's mail server (the channel names none) it would go out with the platform's
reputation and authentication (SPF, DKIM) for an address the organisation may not own: another
organisation's, a bank's. So there it goes From the bot's address only once someone at that address
followed the link mailed to it (``send_confirmation``, then ``confirm``); until then From the
platform's own address (``DEFAULT_FROM_EMAIL``) under the bot's name, with Reply-To the bot's
address (``sender``): the customer's answer still reaches the bot, in the same thread (the threading
headers are those of any reply). A new or changed address starts unconfirmed.

One organisation per address, counting only a claim that proves something (``claimed_elsewhere``):
an address someone confirmed for another organisation's channel is refused when saved, and a link
confirms nothing while such a claim stands. A channel that merely typed an address (unconfirmed, on
or off, with or without an SMTP host of its own: a host name proves nothing) blocks nobody: an open
sign-up cannot reserve support@bigco.com.
Such a channel keeps the address when its owner confirms it: it still sends From the platform's
address with Reply-To the typed one, as any unconfirmed channel does, and inbound mail finds a channel
by its webhook key or IMAP mailbox, never by this address, so sharing it misroutes nothing.
"""
import hashlib
import smtplib
import socket
from email.utils import formataddr, parseaddr

from django.conf import settings
from django.core import signing
from django.core.mail import EmailMessage, get_connection
from django.db import connection, transaction
from django.db.models import Q
from django.urls import reverse

from bots.membership import mail_leaves_the_server
from chatnexus import ratelimit

from ..base import one_line
from ..models import ChannelConfig
from .adapter import ascii_address

CONFIRMED = "confirmed_address"  # in config.settings: the bot address someone at it confirmed, as stored
SALT = "channels.email.confirm-address"
CONFIRM_DAYS = 3  # how long a confirmation link works
CONFIRMATIONS_PER_HOUR = 3  # mails per address: saves and the button must not make the platform spam a stranger
ORGANIZATION_CONFIRMATIONS_PER_HOUR = 10  # mails per organisation, whatever the addresses: nor spam many strangers
ADDRESS_LOCKS = 0x6D_61_69_6C  # PostgreSQL advisory locks (this, a hash of an address) held while one is saved
SENT_AS_ELSEWHERE = "Another organisation's email channel on this platform already sends from this address"  # confirmed
CLAIMED = f"{SENT_AS_ELSEWHERE}. Use an address of your own."


def comparable(address: str) -> str:
    """An address as the email channel stores its own: lower case, the domain in IDNA."""
    address = address.strip().lower()
    try:
        return ascii_address(address)
    except UnicodeError:
        return address


# ---------------------------------------------------------------------------
# One organisation per address


def claimed_elsewhere(address: str, organization) -> bool:
    """Has someone at ``address`` confirmed it for another organisation's email channel (on or off)?
    Only a confirmation counts: an address merely typed, or typed beside an SMTP host (any name, one
    that does not even resolve, no login needed to save it), proves nothing and must not let one
    organisation reserve another's address. Asked in the transaction that saves or confirms it, once
    it holds the address's lock (SQLite runs one writing transaction at a time already): two
    organisations confirming one address at once are answered one after the other, and the second is
    refused."""
    address = comparable(address)
    if connection.vendor == "postgresql":
        key = int.from_bytes(hashlib.sha256(address.encode()).digest()[:4], "big", signed=True)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [ADDRESS_LOCKS, key])
    local, _, domain = address.rpartition("@")
    spellings = Q(settings__address__iexact=address)
    try:  # saved before addresses were stored in IDNA
        spellings |= Q(settings__address__iexact=f"{local}@{domain.encode('ascii').decode('idna')}")
    except UnicodeError:
        pass
    others = ChannelConfig.objects.filter(spellings, kind="email").exclude(organization=organization)
    return any(confirmed(other) for other in others)


# ---------------------------------------------------------------------------
# From whom


def own_server(config) -> bool:
    """Does the channel send through an SMTP server of its own (its host, and the login it was given)?
    That server decides whom the organisation may send as. (One that relays for this machine without
    a login, as a LAN relay of the platform's may where CHATNEXUS_MAIL_ALLOW_PRIVATE is on, decides
    nothing: such a relay must ask for a login.)"""
    return bool((config.settings.get("smtp_host") or "").strip())


def confirmed(config) -> bool:
    """Did someone at the bot's address, as it is now, follow a confirmation link?"""
    done = config.settings.get(CONFIRMED)
    return bool(done) and comparable(done) == comparable(config.settings.get("address") or "")


def needs_confirmation(config) -> bool:
    return not own_server(config) and not confirmed(config)


def platform_address() -> str:
    return parseaddr(settings.DEFAULT_FROM_EMAIL)[1]


def sender(config, address: str) -> tuple[str, list[str]]:
    """(From, Reply-To) of the channel's mail, ``address`` being the bot's in IDNA."""
    name = config.settings.get("from_name") or config.bot.name
    if needs_confirmation(config):
        return formataddr((name, platform_address())), [formataddr((name, address))]
    return formataddr((name, address)), []


# ---------------------------------------------------------------------------
# The confirmation


class Unconfirmable(Exception):
    """A confirmation link that confirms nothing; its text says why, to whoever followed it."""


def send_confirmation(config) -> tuple[bool, str]:
    """Mail the bot's address a link that confirms it (through the platform's mail server, from its
    own address); ``(ok, sentence)`` for the Channels page."""
    try:
        address = ascii_address((config.settings.get("address") or "").strip())
    except UnicodeError:
        return False, "No confirmation email sent: the bot address cannot be written in a mail; save the email settings again."
    digest = hashlib.sha256(comparable(address).encode()).hexdigest()
    verdict = ratelimit.hit(f"email-confirm:{digest}", CONFIRMATIONS_PER_HOUR, window_s=3600)
    if not verdict.allowed:
        return False, (f"No confirmation email sent to {address}: it was sent {CONFIRMATIONS_PER_HOUR} in the last hour. "
                       f"Try again in {max(1, verdict.retry_after // 60)} minutes, or follow the link of one sent before.")
    organization_verdict = ratelimit.hit(f"email-confirm-org:{config.organization_id}",
                                         ORGANIZATION_CONFIRMATIONS_PER_HOUR, window_s=3600)
    if not organization_verdict.allowed:
        ratelimit.refund(verdict)  # nothing went to this address
        return False, (f"No confirmation email sent to {address}: this organisation sent "
                       f"{ORGANIZATION_CONFIRMATIONS_PER_HOUR} in the last hour. "
                       f"Try again in {max(1, organization_verdict.retry_after // 60)} minutes.")
    token = signing.dumps({"channel": config.id, "address": comparable(address)}, salt=SALT)
    link = settings.PUBLIC_URL + reverse("channels:email-confirm", args=[token])
    mail = EmailMessage(
        # the names are the organisation's choosing: in the body, quoted, never the subject a stranger
        # reads first
        subject="Confirm this address for replies sent through ChatNexus",
        body=(f"The organisation \"{config.organization.name}\" asks to send the replies of its bot "
              f"\"{config.bot.name}\" from {address} on ChatNexus ({settings.PUBLIC_URL}).\n\n"
              f"If this is your organisation's address, confirm it within {CONFIRM_DAYS} days:\n\n{link}\n\n"
              f"If not, ignore this mail: nothing will be sent from {address}."),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[address],
        headers={"Auto-Submitted": "auto-generated"},
        connection=get_connection(timeout=settings.CHATNEXUS_SMTP_TIMEOUT_S),
    )
    try:
        mail.send()
    except (smtplib.SMTPException, OSError, socket.timeout) as error:
        ratelimit.refund(verdict)
        ratelimit.refund(organization_verdict)
        return False, f"The confirmation email to {address} could not be sent: {one_line(error) or type(error).__name__}."
    if not mail_leaves_the_server():
        return True, (f"The confirmation email to {address} was only written to this server's log: the platform has "
                      "no mail server set up (EMAIL_HOST).")
    return True, (f"Sent a confirmation email to {address}. Once someone there follows its link, replies go from "
                  f"{address}; until then from {platform_address()}, with Reply-To {address}.")


def pending(token: str, lock: bool = False) -> tuple[ChannelConfig, str]:
    """The channel and address a confirmation link names, if it still may confirm them
    (``Unconfirmable`` otherwise); ``lock``: the channel's row locked, to confirm it."""
    try:
        named = signing.loads(token, salt=SALT, max_age=CONFIRM_DAYS * 24 * 3600)
    except signing.SignatureExpired:
        raise Unconfirmable(f"This link has expired (a link works for {CONFIRM_DAYS} days): "
                            "send a new one from the bot's Channels page.") from None
    except signing.BadSignature:
        raise Unconfirmable("This link is not one we sent: copy it whole from the mail.") from None
    configs = ChannelConfig.objects.select_related("bot", "organization").filter(kind="email")
    config = (configs.select_for_update(of=("self",)) if lock else configs).filter(id=named.get("channel")).first()
    if config is None or comparable(config.settings.get("address") or "") != named.get("address"):
        raise Unconfirmable("The channel this link was sent for no longer has this address: nothing to confirm.")
    return config, named["address"]


@transaction.atomic
def confirm(token: str) -> tuple[ChannelConfig, str, bool]:
    """Mark the address the link names confirmed, if the channel has it still and no other
    organisation sends as it (``Unconfirmable``): the channel, the address, and whether it was not
    confirmed before (a second click changes nothing). Other organisations' unconfirmed channels with
    the address keep it (the module's docstring says why)."""
    config, address = pending(token, lock=True)
    if confirmed(config):
        return config, address, False
    if claimed_elsewhere(address, config.organization):
        raise Unconfirmable(f"{SENT_AS_ELSEWHERE}: nothing confirmed.")
    config.settings = {**config.settings, CONFIRMED: address}
    config.save(update_fields=["settings", "updated"])
    return config, address, True
