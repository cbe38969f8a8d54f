"""IMAP polling: a periodic Celery beat task fetches new mail of every email channel
that has an IMAP server, and feeds it to ``inbound.ingest`` like the webhook does.

Remembers the last UID read per mailbox (host, user, folder and UIDVALIDITY) in the channel's
settings (``imap_state``), in the database: a restart or a flushed cache does not walk the
folder again. Mail that was already in the folder when IMAP was connected (its INTERNALDATE
before ``imap_since``, set when the host, user or folder is saved) is left alone: the first
poll does not answer a mailbox's whole history. If the state is lost, mail since then is
fetched again and the Message-ID constraint stores it once. Messages are fetched with
``BODY.PEEK[]`` so the mailbox's read flags stay as the user left them, and at most their first
CHATNEXUS_EMAIL_MAX_BYTES (``<0.N>``: a longer mail is kept cut there, as unparseable at worst).
Of a server that sends the whole mail anyway only as much is kept, the rest read and dropped
(``pinned``): the mail is stored cut all the same and the poll goes on past it. One announcing
more than ``pinned.DRAINED_AT_MOST`` is refused unread (``pinned.TooLarge``), and one sending the
rest slower than the IMAP deadline is cut by it: the poll logs it, the mail before it is
remembered and that one left on the server for the next poll. A lock per mailbox keeps two
overlapping runs from fetching at once.
"""
import imaplib
import logging
import re
import ssl
from datetime import datetime

from celery import shared_task
from django.conf import settings
from django.core.cache import cache
from django.db import transaction

from bots import services
from bots.models import Message

from .. import crypto
from ..models import ChannelConfig
from . import pinned
from .adapter import unusable
from .inbound import digest, ingest, scrub, store_unparseable
from .parse import Unparseable, parse

log = logging.getLogger(__name__)

BATCH = 50  # messages per mailbox per run
_UIDVALIDITY = re.compile(rb"UIDVALIDITY (\d+)")
_UID = re.compile(rb"UID (\d+)")
_INTERNALDATE = re.compile(rb'INTERNALDATE "([^"]+)"')


@shared_task(name="channels_app.email.imap.poll_imap", ignore_result=True)
def poll_imap():
    """Queue one poll per email channel with an IMAP server."""
    configs = ChannelConfig.objects.filter(kind="email", enabled=True).values_list("id", "settings")
    for config_id, channel in configs:
        if channel.get("imap_host"):
            poll_mailbox.delay(config_id)


@shared_task(name="channels_app.email.imap.poll_mailbox", acks_late=True, ignore_result=True)
def poll_mailbox(config_id):
    lock = f"imap-lock:{config_id}"
    if not cache.add(lock, 1, timeout=300):
        return 0  # another run has this mailbox
    try:
        config = ChannelConfig.objects.select_related("bot").get(id=config_id)
        return fetch_new(config)
    except ssl.SSLCertVerificationError as error:  # raised by connect(): config is loaded
        log.warning("imap: mailbox of channel %s: %s", config_id, untrusted(config.settings["imap_host"], error))
        return 0
    except (OSError, imaplib.IMAP4.error) as error:
        log.warning("imap: mailbox of channel %s: %s", config_id, error)
        return 0
    except UnicodeError as error:  # settings saved before the form checked them
        log.warning("imap: mailbox of channel %s: %s", config_id, unusable(error))
        return 0
    except crypto.Unreadable as error:  # the key changed: the Channels page asks for the password again
        log.warning("imap: mailbox of channel %s: not polled: %s", config_id, error)
        return 0
    finally:
        cache.delete(lock)


def connect(config):
    """A logged-in IMAP client for the channel's mailbox (raises imaplib.IMAP4.error or OSError;
    ``egress.HostRefused``, an OSError, for a server of this server's own network: ``pinned``
    checks the address it connects to)."""
    channel = config.settings
    host = channel["imap_host"]
    use_ssl = channel.get("imap_use_ssl", True)
    port = int(channel.get("imap_port") or (993 if use_ssl else 143))
    timeout = settings.CHATNEXUS_SMTP_TIMEOUT_S
    password = config.secrets.get("imap_password", "")  # before connecting: crypto.Unreadable after a key change
    client = pinned.IMAP4_SSL(host, port, timeout=timeout) if use_ssl else pinned.IMAP4(host, port, timeout=timeout)
    client.login(channel.get("imap_user") or channel.get("address", ""), password)
    return client


def untrusted(host, error: ssl.SSLCertVerificationError, withheld="nothing was sent to it, not the password either",
              otherwise=", or plain IMAP on a network you trust") -> str:
    """Why a mail server's certificate was refused, in words (the poll's log, the check page; SMTP's
    check says what it withheld, and has no plain alternative to offer)."""
    return (f"the TLS certificate of {host} is not trusted ({error.verify_message}), so {withheld}. A server with a "
            "self-signed certificate or one from a private CA needs that CA trusted by this server "
            f"(docs/whatsapp-email.md){otherwise}")


def fetch_new(config) -> int:
    """Fetch and store the mailbox's mail newer than the last UID read; returns how many."""
    client = connect(config)
    stored = 0
    try:
        folder = config.settings.get("imap_folder") or "INBOX"
        select_folder(client, folder)
        mailbox = "|".join((config.settings.get("imap_host", ""), config.settings.get("imap_user", ""), folder,
                            str(_uidvalidity(client))))
        state = config.settings.get("imap_state") or {}
        last = state["uid"] if state.get("mailbox") == mailbox else _before_connected(client, connected_since(config))
        typ, data = client.uid("SEARCH", None, f"UID {last + 1}:*")
        uids = sorted(int(uid) for uid in (data[0] or b"").split() if int(uid) > last)[:BATCH]
        for uid in uids:
            typ, parts = client.uid("FETCH", str(uid), f"(BODY.PEEK[]<0.{settings.CHATNEXUS_EMAIL_MAX_BYTES}>)")
            if typ != "OK":
                break  # the server could not give it now: the next poll asks again, nothing skipped
            raw = next((part[1] for part in parts or [] if isinstance(part, tuple)), None)
            if raw is not None:  # None: expunged since the search, nothing to read
                if _ingest(config, raw, uid).created:
                    stored += 1
            _remember(config, mailbox, uid)
        if not uids and state.get("mailbox") != mailbox:
            _remember(config, mailbox, last)  # where this mailbox starts, even with nothing new in it
    finally:
        try:
            client.logout()
        except (OSError, imaplib.IMAP4.error):
            pass
    return stored


def connected_since(config) -> datetime:
    """When IMAP was connected: mail the folder held before is not the bot's to answer."""
    since = config.settings.get("imap_since")
    return datetime.fromisoformat(since) if since else config.created


def _before_connected(client, since: datetime) -> int:
    """The UID to start after on a mailbox first seen: the last one before the first mail that
    arrived at or after ``since`` (by INTERNALDATE), or the newest if none did."""
    typ, data = client.uid("FETCH", "1:*", "(INTERNALDATE)")
    dates = []
    for item in data or []:
        line = item[0] if isinstance(item, tuple) else item
        uid, date = _UID.search(line or b""), _INTERNALDATE.search(line or b"")
        if uid and date:
            dates.append((int(uid.group(1)), datetime.strptime(date.group(1).decode().strip(), "%d-%b-%Y %H:%M:%S %z")))
    since = since.replace(microsecond=0)  # INTERNALDATE has whole seconds: a mail that same second is new
    newer = [uid for uid, date in dates if date >= since]
    if newer:
        return min(newer) - 1
    return max((uid for uid, _ in dates), default=0)


def _remember(config, mailbox: str, uid: int) -> None:
    with transaction.atomic():
        fresh = ChannelConfig.objects.select_for_update().get(id=config.id)
        fresh.settings = {**fresh.settings, "imap_state": {"mailbox": mailbox, "uid": uid}}
        fresh.save(update_fields=["settings"])
    config.settings = fresh.settings


def _ingest(config, raw, uid):
    """One fetched mail stored. A mail that breaks storing (a bug, a database refusal) is kept as
    unparseable, with its raw text, rather than stopping the mailbox: the poll would otherwise
    fail on it again every time and never read the mail after it. What fails after the mail's
    commit (the broker refusing its reply task, say) leaves the stored mail as it is: kept again
    it would be a second conversation (the beat sweep queues a reply the broker lost)."""
    try:
        return ingest(config, raw, source="imap")
    except Exception as error:  # noqa: BLE001 - one mail must not block the mailbox
        # if these fail too (the database is down), the poll stops here and the next one tries the mail again
        stored = _stored_as(config, raw)
        if stored is not None:
            log.exception("imap: channel %s, UID %s was stored; what came after failed", config.id, uid)
            return services.Received(stored.conversation, stored, created=True)
        log.exception("imap: channel %s, UID %s could not be stored; keeping it as unparseable", config.id, uid)
        return store_unparseable(config, raw, "imap", f"could not be stored: {type(error).__name__}")


def _stored_as(config, raw):
    """The message ``raw`` is stored as, if any: by its Message-ID, or the digest of its bytes
    (a mail without one, or kept as unparseable), as ``inbound`` stores them."""
    try:
        message_id = scrub(parse(raw).message_id)
    except Unparseable:
        message_id = ""
    keys = [services.external_key(message_id), digest(raw)] if message_id else [digest(raw)]
    return (Message.objects.filter(bot_id=config.bot_id, channel="email", external_id__in=keys)
            .select_related("conversation").first())


def select_folder(client, folder) -> int:
    """Open ``folder`` read-only (the mailbox's flags stay as the user left them); how many messages it holds."""
    typ, data = client.select(_quoted(folder), readonly=True)
    if typ != "OK":
        raise imaplib.IMAP4.error(f"cannot select folder: {data!r}")
    return int(data[0]) if data and data[0] and data[0].isdigit() else 0


def _uidvalidity(client):
    typ, data = client.response("UIDVALIDITY")
    if data and data[0]:
        return int(data[0])
    typ, data = client.status("INBOX", "(UIDVALIDITY)")
    match = _UIDVALIDITY.search(data[0] or b"") if data else None
    return int(match.group(1)) if match else 0


def _quoted(folder):
    return folder if folder.startswith('"') else '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'
