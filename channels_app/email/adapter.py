"""Email's send face: a threaded reply by SMTP with the channel's own server settings.

Headers make the reply land in the customer's thread and stop auto-reply loops:
``In-Reply-To`` (the mail answered), ``References`` (its references + its id), a
``Re:`` subject (never "Re: Re:"), ``Auto-Submitted: auto-replied`` (RFC 3834) and a
``Message-ID`` from the bot's own domain, stable across retries so a retried send is
recognisably the same mail. SMTP 4xx and network errors are transient; 5xx permanent.
"""
import hashlib
import hmac
import re
import smtplib
import socket
from email.utils import formataddr

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.utils.encoding import punycode

from bots import egress
from bots.models import Message

from ..base import Adapter, DeliveryError, one_line
from .html import to_html

_RE = re.compile(r"^\s*(re|aw|sv|antw|r)\s*(\[\d+\])?\s*:", re.I)


def reply_subject(subject: str) -> str:
    subject = " ".join((subject or "").split())
    if not subject:
        return "Re: your message"
    return subject if _RE.match(subject) else f"Re: {subject}"


def message_id_for(message, domain) -> str:
    token = hmac.new(settings.SECRET_KEY.encode(), f"reply:{message.id}".encode(), hashlib.sha256).hexdigest()[:16]
    return f"<chatnexus.{message.id}.{token}@{domain}>"


def ascii_address(address: str) -> str:
    """``address`` with its domain in IDNA (hilfe@müller-shop.de -> hilfe@xn--mller-shop-9db.de),
    as ``formataddr``, SMTP and our Message-IDs need it. Raises UnicodeError for a local part
    beyond ASCII or a domain IDNA cannot write (a label over 63 characters)."""
    local, _, domain = address.rpartition("@")
    local.encode("ascii")
    return f"{local}@{punycode(domain)}"


def unusable(error: UnicodeError) -> str:
    """A saved mail setting that Python cannot send to the server (a host name IDNA cannot write;
    a user or password beyond ASCII, as SMTP and IMAP log in), in words that never repeat a
    password's characters."""
    why = "a character beyond ASCII" if isinstance(error, UnicodeEncodeError) else one_line(error)
    return f"the saved host name, user or password cannot be sent to a mail server ({why}); save the email settings again"


def refused_mail_host(host: str, port) -> str:
    """Why a member-typed SMTP or IMAP server may not be connected to ('' when it may): an address
    of this server's own network, unless CHATNEXUS_MAIL_ALLOW_PRIVATE (bots/egress.py). Checked
    when the channel is saved and again right before every connection (the name may point
    elsewhere by then). A name that does not resolve is left to the connection to report."""
    try:
        return egress.refused_host(host, int(port), settings.CHATNEXUS_MAIL_ALLOW_PRIVATE, "CHATNEXUS_MAIL_ALLOW_PRIVATE")
    except (OSError, ValueError):
        return ""


def refused_smtp_host(config) -> str:
    """``refused_mail_host`` for the channel's own SMTP server ('' without one: the platform's)."""
    channel = config.settings
    return refused_mail_host(channel["smtp_host"], channel.get("smtp_port") or 587) if channel.get("smtp_host") else ""


def smtp_connection(config):
    """The channel's SMTP server, or the platform's mail settings when it has none."""
    channel = config.settings
    if not channel.get("smtp_host"):
        return get_connection(timeout=settings.CHATNEXUS_SMTP_TIMEOUT_S)
    return get_connection(
        "django.core.mail.backends.smtp.EmailBackend",
        host=channel["smtp_host"],
        port=int(channel.get("smtp_port") or 587),
        username=channel.get("smtp_user") or "",
        password=config.secrets.get("smtp_password", ""),
        use_tls=bool(channel.get("smtp_use_tls", False)),
        timeout=settings.CHATNEXUS_SMTP_TIMEOUT_S,
    )


class EmailAdapter(Adapter):
    name = "email"
    label = "email"

    def send(self, message):
        config = self.connected_config(message)
        address = config.settings.get("address", "").strip()
        if "@" not in address:
            raise DeliveryError("the email channel has no bot address", transient=False, code="config")
        answered = message.reply_to or _last_inbound(message)
        if answered is None:
            raise DeliveryError("no inbound mail to reply to in this conversation", transient=False, code="thread")
        meta = answered.meta or {}
        recipient = meta.get("reply_to_address") or meta.get("from_address") or message.conversation.contact_email
        if not recipient:
            raise DeliveryError("no address to reply to", transient=False, code="recipient")
        try:
            address = ascii_address(address)  # saved before addresses were stored in IDNA
        except UnicodeError:
            raise DeliveryError(f"the bot address {address} cannot be written in a mail", transient=False, code="config") from None
        message_id = message_id_for(message, address.rsplit("@", 1)[1])
        headers = {"Message-ID": message_id, "Auto-Submitted": "auto-replied", "X-Auto-Response-Suppress": "All"}
        in_reply_to = meta.get("message_id") or ""
        if in_reply_to:
            references = [ref for ref in meta.get("references", []) if ref != in_reply_to] + [in_reply_to]
            headers["In-Reply-To"] = f"<{in_reply_to}>"
            headers["References"] = " ".join(f"<{ref}>" for ref in references[-20:])
        mail = EmailMultiAlternatives(
            subject=reply_subject(meta.get("subject") or message.conversation.subject),
            body=message.text,
            from_email=formataddr((config.settings.get("from_name") or config.bot.name, address)),
            to=[recipient],
            headers=headers,
            connection=smtp_connection(config),
        )
        mail.attach_alternative(to_html(message.text), "text/html")  # the markdown the bot writes, rendered
        refused = refused_smtp_host(config)
        if refused:
            raise DeliveryError(f"SMTP server not allowed: {refused}", transient=False, code="config")
        try:
            mail.send()
        except smtplib.SMTPResponseException as error:
            transient = 400 <= error.smtp_code < 500
            raise DeliveryError(f"SMTP {error.smtp_code}: {_text(error.smtp_error)}", transient=transient, code=str(error.smtp_code)) from error
        except smtplib.SMTPRecipientsRefused as error:
            codes = [code for code, _ in error.recipients.values()]
            transient = all(400 <= code < 500 for code in codes)
            raise DeliveryError(f"SMTP refused the recipient: {error.recipients}", transient=transient, code=str(codes[0] if codes else "")) from error
        except (smtplib.SMTPException, OSError, socket.timeout) as error:
            raise DeliveryError(f"SMTP server unreachable: {error}", transient=True, code="network") from error
        except UnicodeError as error:  # settings saved before the form checked them
            raise DeliveryError(f"SMTP settings unusable: {unusable(error)}", transient=False, code="config") from None
        return message_id.strip("<>")


def _text(value):
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _last_inbound(message):
    """The mail an agent's reply answers: the latest one a person sent. An auto-acknowledgement,
    out-of-office or bounce threaded in after it (``meta["automated"]``) would take the reply to a
    no-reply address; the latest mail of any kind only when a machine sent every one."""
    mails, from_people = _earlier_mails(message)
    return from_people.first() or mails.first()


def _earlier_mails(message):
    """(the conversation's inbound mails before ``message``, newest first; those a person sent).
    ``has_key``, not ``contains``: SQLite, the embedded default, has no JSON containment."""
    mails = (
        Message.objects.filter(conversation_id=message.conversation_id, direction=Message.Direction.INBOUND, id__lt=message.id)
        .filter(meta__has_key="from_address")
        .order_by("-id")
    )
    return mails, mails.exclude(meta__has_key="automated")
