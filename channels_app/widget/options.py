"""A bot's widget settings (``ChannelConfig`` kind ``widget``) with defaults, and origin checks."""
import ipaddress
import re
from urllib.parse import urlsplit

from django.conf import settings
from django.http.request import split_domain_port, validate_host
from django.utils.encoding import punycode

from bots import hours
from bots.models import Bot
from bots.models.bots import suggestion_list

from ..models import ChannelConfig

DEFAULTS = {
    "allowed_origins": [],  # "https://shop.example.com"-style origins allowed to embed the widget
    "position": "right",  # launcher corner: "right" or "left"
    "prechat_email": False,  # ask for an (optional) email before the first message
    "connections_per_minute": 20,  # websocket connections per visitor (or address without a token)
    "messages_per_minute": 10,  # messages per visitor
    # connections and messages from one address (an IPv4 address, an IPv6 /64), all its visitors
    # together: tokens are free to mint, so without them one client could spend the whole bot's budget
    # below and lock every real visitor out (an office or a phone carrier's NAT shares an address: a
    # few visitors' worth)
    "ip_connections_per_minute": 60,
    "ip_messages_per_minute": 30,
    "bot_connections_per_minute": 600,  # websocket connections to this bot, all visitors together
    "bot_messages_per_minute": 120,  # messages to this bot, all visitors together
    "max_message_chars": 2000,  # longest message a visitor may send
    "language": "auto",  # the widget's own words: "auto" (the host page's, else the browser's) or a code
    "file_uploads": True,  # visitors may attach images, PDFs and text files (uploads.py)
    "max_upload_mb": 5,  # largest file a visitor may attach
}
# A label of a host name: letters, digits and hyphens (not first or last), and the underscore some
# sites' names have (browsers take it).
HOST_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
# The languages widget.js carries its words in (its WORDS table).
LANGUAGES = [("auto", "The website's language (else the visitor's browser's)"), ("en", "English"), ("es", "Español"),
             ("fr", "Français"), ("de", "Deutsch"), ("pt", "Português"), ("it", "Italiano"), ("nl", "Nederlands")]


def normalize_origin(value: str) -> str:
    """``"HTTPS://Shop.example.com:443/"`` -> ``"https://shop.example.com"``; '' when not an origin.
    A host in letters beyond ASCII is written as browsers send it in ``Origin``, in punycode:
    ``https://müller-shop.de`` -> ``https://xn--mller-shop-9db.de``. The host must be one a browser
    can name: ``https://*.shop.example.com`` (a wildcard) or ``https://shop.example.com,`` is no
    origin, and would never match one."""
    try:
        parts = urlsplit((value or "").strip())
        port = parts.port
    except ValueError:
        return ""
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return ""
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        return ""
    host = parts.hostname.lower()
    if not host.isascii():
        try:
            host = punycode(host)
        except UnicodeError:  # an empty or over-long label: no browser sends it
            return ""
    if not _real_host(host):
        return ""
    if ":" in host:
        host = f"[{host}]"
    default_port = 443 if parts.scheme == "https" else 80
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default_port else "")


def _real_host(host: str) -> bool:
    """An IP address (without an IPv6 zone, which no ``Origin`` carries), or a host name of
    ``HOST_LABEL``s whose last is not all digits (a browser reads that as an IPv4 address)."""
    try:
        ipaddress.ip_address(host)
        return "%" not in host
    except ValueError:
        labels = host.split(".")
        return len(host) <= 253 and all(HOST_LABEL.match(label) for label in labels) and not labels[-1].isdigit()


def widget_settings(config: ChannelConfig | None) -> dict:
    merged = dict(DEFAULTS)
    if config is not None:
        merged.update({k: v for k, v in (config.settings or {}).items() if k in DEFAULTS})
    return merged


def load(public_key: str):
    """``(bot, config, settings)`` for an enabled widget, or ``None``; ``None`` for a key with a NUL too
    (from ``%00`` in a socket's URL: never a key, and PostgreSQL cannot compare text holding one)."""
    if "\x00" in public_key:
        return None
    bot = Bot.objects.select_related("organization").filter(public_key=public_key).first()
    if bot is None:
        return None
    config = ChannelConfig.objects.filter(bot=bot, kind=ChannelConfig.Kind.WIDGET, enabled=True).first()
    if config is None:
        return None
    return bot, config, widget_settings(config)


def origin_allowed(options: dict, origin: str, own: str = "") -> bool:
    """The page's origin is on the bot's allow-list, or is the platform itself (its Try page):
    PUBLIC_URL's origin, or ``own``, the one the checked request reached it at (``own_origin``)."""
    origin = normalize_origin(origin)
    if not origin:
        return False
    allowed = {normalize_origin(o) for o in options.get("allowed_origins") or []}
    allowed.update((normalize_origin(settings.PUBLIC_URL), own))
    return origin in allowed


def own_origin(scheme: str, host: str) -> str:
    """The platform's origin as a request reached it: its scheme (a socket's ``ws``/``wss`` read as
    ``http``/``https``) and ``Host`` header, so a manager at ``http://localhost:8000`` can try the
    widget there, not only at PUBLIC_URL. '' unless the host is one the site answers on
    (``ALLOWED_HOSTS``, as Django checks every page's): Django checks no socket's, and a page on a
    name its owner points at this machine (DNS rebinding) sends that name as Origin and Host alike."""
    domain, _port = split_domain_port(host or "")
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return ""
    scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
    return normalize_origin(f"{scheme}://{host}")


def accepted_files() -> str:
    """The file chooser's ``accept``: the types the upload endpoint takes (uploads.py checks the bytes)."""
    from .uploads import ACCEPT  # uploads.py reads these options: imported here, not at the top

    return ACCEPT


def public_look(bot: Bot, options: dict) -> dict:
    """What the embed script may know about the bot: its published look, nothing else."""
    live = bot.live_config()
    return {
        "name": live.get("name") or bot.name,
        "avatar_color": live.get("avatar_color") or "#4f46e5",
        "greeting": live.get("greeting") or "",
        "suggestions": suggestion_list(live.get("suggestions")),
        "position": "left" if options.get("position") == "left" else "right",
        "prechat_email": bool(options.get("prechat_email")),
        "max_message_chars": int(options.get("max_message_chars") or DEFAULTS["max_message_chars"]),
        "language": options.get("language") if options.get("language") in dict(LANGUAGES) else "auto",
        "handoff": True,
        # outside the organisation's team hours (bots/hours.py): the widget says a person replies later
        "team_away": hours.team_away(bot.organization),
        "uploads": bool(options.get("file_uploads")),
        "accept": accepted_files(),
        "max_upload_mb": int(options.get("max_upload_mb") or DEFAULTS["max_upload_mb"]),
    }
