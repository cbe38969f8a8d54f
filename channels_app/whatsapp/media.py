"""What a WhatsApp customer attached, fetched from Twilio into our own storage.

Twilio's media URLs (``MediaUrl<n>`` of the incoming webhook, kept in ``Message.meta["media"]``)
need the account's credentials. ``store_all`` (the task ``channels_app.tasks.store_whatsapp_media``,
queued when the message is stored) fetches each file with the bot's channel credentials and
keeps it as an ``Attachment``, so it outlives its deletion at Twilio or a change of
credentials; the inbox's ``media_view`` serves the stored copy, fetching first if the task
has not run yet.

Credentials only ever go to Twilio, for this channel's account: the URL must be https on
``api.twilio.com`` (or the host of ``TWILIO_API_BASE_URL``, tests and proxies) under
``/2010-04-01/Accounts/<this account>/``; Twilio answers with a redirect to a short-lived
file URL, and ``requests`` drops the credentials when a redirect leaves the host. Files are
passed on with ``nosniff`` and a sandbox CSP; anything but common image, audio, video and
PDF types is a download, never rendered on our origin (``bots.files``).
"""
from urllib.parse import urlsplit

import requests
import urllib3
from django.conf import settings

from bots import services
from bots.files import media_type

from ..models import ChannelConfig

MAX_MEDIA_BYTES = 16 * 1024 * 1024  # WhatsApp caps media at 16 MB


class MediaError(Exception):
    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _allowed(url: str, account_sid: str) -> bool:
    parts = urlsplit(url)
    hosts = {("https", "api.twilio.com")}
    if settings.TWILIO_API_BASE_URL:
        base = urlsplit(settings.TWILIO_API_BASE_URL)
        hosts.add((base.scheme, base.netloc))
    return (parts.scheme, parts.netloc) in hosts and parts.path.startswith(f"/2010-04-01/Accounts/{account_sid}/")


def stored(message, index: int):
    """The message's `index`-th attachment, from storage, else fetched from Twilio and stored; or MediaError."""
    if message.channel != "whatsapp":  # other channels' files open through the inbox's own view
        raise MediaError(404, "no such attachment")
    found = message.attachments.filter(index=index).first()
    if found is not None:
        return found
    content, content_type = fetch(message, index)
    return services.store_attachment(message, index, "", content_type, content)


def store_all(message) -> list[MediaError]:
    """Store every attachment of the message that is not stored yet; the errors of those that failed."""
    errors = []
    for index in range(len((message.meta or {}).get("media") or [])):
        try:
            stored(message, index)
        except MediaError as error:
            errors.append(error)
    return errors


def fetch(message, index: int) -> tuple[bytes, str]:
    """(content, content type) of the message's `index`-th attachment at Twilio, or MediaError."""
    media = (message.meta or {}).get("media") or []
    if not 0 <= index < len(media) or not isinstance(media[index], dict):
        raise MediaError(404, "no such attachment")
    url = media[index].get("url") or ""
    config = ChannelConfig.objects.filter(organization_id=message.organization_id, bot_id=message.bot_id,
                                          kind="whatsapp").first()
    if config is None:
        raise MediaError(409, "the bot has no WhatsApp channel any more, so its Twilio credentials are gone")
    account_sid, auth_token = config.settings.get("account_sid", ""), config.secrets.get("auth_token", "")
    if not account_sid or not auth_token:
        raise MediaError(409, "the WhatsApp channel has no Account SID or Auth Token")
    if not _allowed(url, account_sid):
        raise MediaError(404, "the attachment's address is not one of this Twilio account's media")
    try:
        with requests.get(url, auth=(account_sid, auth_token), timeout=settings.TWILIO_TIMEOUT_S, stream=True) as r:
            if r.status_code != 200:
                raise MediaError(502, f"Twilio answered {r.status_code} for this attachment "
                                      "(deleted, or the credentials changed)")
            content = r.raw.read(MAX_MEDIA_BYTES + 1, decode_content=True)
            content_type = media_type(r.headers.get("Content-Type") or media[index].get("content_type")
                                      or "application/octet-stream")
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        # reading r.raw directly, urllib3's own errors (a read timeout, a reset mid-file, a bad
        # gzip stream) are not wrapped by requests: each is Twilio or the network failing
        raise MediaError(502, f"could not reach Twilio: {exc.__class__.__name__}") from None
    if len(content) > MAX_MEDIA_BYTES:  # will not change by asking again
        raise MediaError(413, f"the attachment is larger than {MAX_MEDIA_BYTES // (1024 * 1024)} MB")
    return content, content_type
