"""What a WhatsApp customer attached, for the inbox: fetched from Twilio when an agent opens it.

Twilio's media URLs (``MediaUrl<n>`` of the incoming webhook, kept in ``Message.meta["media"]``)
need the account's credentials, so the inbox links to ``media_view``, which fetches the
file with the bot's channel credentials and passes it on. Nothing is stored: the file
stays at Twilio (which keeps media until it is deleted there).

Credentials only ever go to Twilio, for this channel's account: the URL must be https on
``api.twilio.com`` (or the host of ``TWILIO_API_BASE_URL``, tests and proxies) under
``/2010-04-01/Accounts/<this account>/``; Twilio answers with a redirect to a short-lived
file URL, and ``requests`` drops the credentials when a redirect leaves the host. Files are
passed on with ``nosniff`` and a sandbox CSP; anything but common image, audio, video and
PDF types is a download, never rendered on our origin.
"""
from urllib.parse import urlsplit

import requests
from django.conf import settings

from ..models import ChannelConfig

MAX_MEDIA_BYTES = 16 * 1024 * 1024  # WhatsApp caps media at 16 MB
INLINE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp", "application/pdf")
INLINE_PREFIXES = ("audio/", "video/")


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


def fetch(message, index: int) -> tuple[bytes, str, str]:
    """(content, content type, disposition) of the message's `index`-th attachment, or MediaError."""
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
            content_type = (r.headers.get("Content-Type") or media[index].get("content_type")
                            or "application/octet-stream").split(";")[0].strip().lower()
    except requests.RequestException as exc:
        raise MediaError(502, f"could not reach Twilio: {exc.__class__.__name__}") from None
    if len(content) > MAX_MEDIA_BYTES:
        raise MediaError(502, f"the attachment is larger than {MAX_MEDIA_BYTES // (1024 * 1024)} MB")
    inline = content_type in INLINE_TYPES or content_type.startswith(INLINE_PREFIXES)
    disposition = "inline" if inline else f'attachment; filename="attachment-{index + 1}"'
    return content, content_type, disposition
