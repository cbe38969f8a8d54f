"""IMAP polling: a periodic Celery beat task fetches new mail of every email channel
that has an IMAP server, and feeds it to ``inbound.ingest`` like the webhook does.

Remembers the last UID seen per mailbox (and its UIDVALIDITY) in the cache; if that is
lost, mail is fetched again and the Message-ID constraint stores it once. Messages
are fetched with ``BODY.PEEK[]`` so the mailbox's read flags stay as the user left them.
A lock per mailbox keeps two overlapping runs from fetching at once.
"""
import imaplib
import logging
import re

from celery import shared_task
from django.conf import settings
from django.core.cache import cache

from ..models import ChannelConfig
from .inbound import ingest, store_unparseable

log = logging.getLogger(__name__)

BATCH = 50  # messages per mailbox per run
_UIDVALIDITY = re.compile(rb"UIDVALIDITY (\d+)")


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
    except (OSError, imaplib.IMAP4.error) as error:
        log.warning("imap: mailbox of channel %s: %s", config_id, error)
        return 0
    finally:
        cache.delete(lock)


def connect(config):
    """A logged-in IMAP client for the channel's mailbox (raises imaplib.IMAP4.error or OSError)."""
    channel = config.settings
    host = channel["imap_host"]
    use_ssl = channel.get("imap_use_ssl", True)
    port = int(channel.get("imap_port") or (993 if use_ssl else 143))
    timeout = settings.CHATNEXUS_SMTP_TIMEOUT_S
    client = imaplib.IMAP4_SSL(host, port, timeout=timeout) if use_ssl else imaplib.IMAP4(host, port, timeout=timeout)
    client.login(channel.get("imap_user") or channel.get("address", ""), config.secrets.get("imap_password", ""))
    return client


def fetch_new(config) -> int:
    """Fetch and store the mailbox's mail newer than the last UID seen; returns how many."""
    client = connect(config)
    stored = 0
    try:
        select_folder(client, config.settings.get("imap_folder") or "INBOX")
        validity = _uidvalidity(client)
        state_key = f"imap-uid:{config.id}:{validity}"
        last = int(cache.get(state_key) or 0)
        typ, data = client.uid("SEARCH", None, f"UID {last + 1}:*")
        uids = sorted(int(uid) for uid in (data[0] or b"").split() if int(uid) > last)[:BATCH]
        for uid in uids:
            typ, parts = client.uid("FETCH", str(uid), "(BODY.PEEK[])")
            raw = next((part[1] for part in parts or [] if isinstance(part, tuple)), None)
            if typ == "OK" and raw is not None:
                if len(raw) > settings.CHATNEXUS_EMAIL_MAX_BYTES:
                    raw = raw[: settings.CHATNEXUS_EMAIL_MAX_BYTES]  # kept (as unparseable at worst), never lost
                if _ingest(config, raw, uid).created:
                    stored += 1
            cache.set(state_key, uid, None)
    finally:
        try:
            client.logout()
        except (OSError, imaplib.IMAP4.error):
            pass
    return stored


def _ingest(config, raw, uid):
    """One fetched mail stored. A mail that breaks storing (a bug, a database refusal) is kept as
    unparseable, with its raw text, rather than stopping the mailbox: the poll would otherwise
    fail on it again every time and never read the mail after it."""
    try:
        return ingest(config, raw, source="imap")
    except Exception as error:  # noqa: BLE001 - one mail must not block the mailbox
        log.exception("imap: channel %s, UID %s could not be stored; keeping it as unparseable", config.id, uid)
        # if this fails too (the database is down), the poll stops here and the next one tries the mail again
        return store_unparseable(config, raw, "imap", f"could not be stored: {type(error).__name__}")


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
