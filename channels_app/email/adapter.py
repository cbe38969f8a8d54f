"""Email's send face: a threaded reply by SMTP with the channel's own server settings.

From the bot's address, or, through the platform's mail server while nobody at that address has
confirmed it, from the platform's own address with Reply-To the bot's (``sender.py``).

Headers make the reply land in the customer's thread and stop auto-reply loops:
``In-Reply-To`` (the mail answered), ``References`` (its references + its id), a
``Re:`` subject (never "Re: Re:", nor "Re: RES:" and the like), ``Auto-Submitted: auto-replied``
(RFC 3834) on the bot's replies but not on an agent's, and a ``Message-ID`` from the bot's own
domain, stable across retries so a retried send is recognisably the same mail. Ids beyond ASCII
go in UTF-8 where the server offers SMTPUTF8, else downgraded (``send_threaded``); a customer's
address beyond ASCII (josé@example.com) goes only in UTF-8, never mangled. SMTP 4xx and network
errors are transient; 5xx permanent. A reply that the platform's console backend only wrote to the
log is "sent" with a ``delivery_note``.
"""
import hashlib
import hmac
import re
import smtplib
import socket

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.core.mail.message import sanitize_address
from django.utils.encoding import punycode

from bots import egress
from bots.membership import mail_leaves_the_server
from bots.models import Message

from ..base import Adapter, DeliveryError, one_line
from .html import to_html

# The reply prefixes mail clients write, in their users' languages: an answer to "RES: Pedido 4411"
# (Brazilian Outlook) keeps that subject, never "Re: RES: …". Forward prefixes (Fwd, Enc, TR, VL)
# are not among them: a reply to a forwarded mail is "Re: Fwd: …". Danish and Norwegian Outlook
# write "VS:" for a forward, Finnish for a reply: read as a reply, which only leaves out one "Re:".
_RE = re.compile(
    r"^\s*(re|aw|antw|antwort|sv|vs|r|rif|res|odp|odg|ynt|atb|ats|απ|σχετ|השב|رد|回复|答复|回覆)\s*(\[\d+\])?\s*[:：]",
    re.I,
)


def reply_subject(subject: str) -> str:
    subject = " ".join((subject or "").split())
    if not subject:
        return "Re: your message"
    return subject if _RE.match(subject) else f"Re: {subject}"


def message_id_for(message, domain) -> str:
    token = hmac.new(settings.SECRET_KEY.encode(), f"reply:{message.id}".encode(), hashlib.sha256).hexdigest()[:16]
    return f"<chatnexus.{message.id}.{token}@{domain}>"


# ---------------------------------------------------------------------------
# Threading headers

# Longest id a reply names: an id cannot be folded, and a header line over 998 octets is refused
# (RFC 5322 2.1.1; "500 Line too long" from strict servers), which failed the reply for good.
MAX_THREAD_ID_BYTES = 900


def threading_ids(meta) -> dict:
    """``{"In-Reply-To": [id], "References": [ids]}`` of a reply to the mail whose ``meta`` is
    given: its Message-ID, and its references then its Message-ID (the last 20), each as the mail
    wrote it (``parse._ids``); empty for a mail without a Message-ID."""
    in_reply_to = meta.get("message_id") or ""
    if not in_reply_to:
        return {}
    references = [ref for ref in meta.get("references", []) if ref != in_reply_to] + [in_reply_to]
    fits = [ref for ref in references[-20:] if len(f"<{ref}>".encode()) <= MAX_THREAD_ID_BYTES]
    return {"In-Reply-To": [in_reply_to] if in_reply_to in fits else [], "References": fits}


def _field(ids) -> str:
    return " ".join(f"<{id}>" for id in ids)


NO_SMTPUTF8 = "the mail server does not accept international addresses (SMTPUTF8)"


def international(address: str) -> bool:
    """Is the local part of ``address`` beyond ASCII (``josé@example.com``, RFC 6531)? Such a
    mailbox can be named only in UTF-8: Django writes it as an encoded word
    (``=?utf-8?b?am9zw6k=?=@example.com``), the name of another mailbox or of none."""
    return not address.rpartition("@")[0].isascii()


def smtp_address(address: str) -> str:
    """``address`` as an SMTPUTF8 envelope names it: the local part as written, the domain in IDNA."""
    local, _, domain = address.rpartition("@")
    return f"{local}@{punycode(domain)}"


def send_threaded(mail: EmailMultiAlternatives, threading: dict) -> None:
    """Send ``mail`` with its threading headers (``threading_ids``) in a form the SMTP server
    accepts and the customer's mail client threads by, to the customer's very address.

    A client threads by the very bytes of the ids it remembers. An id beyond ASCII (RFC 6532
    allows UTF-8 in a Message-ID; mailers write a host name like ``büro-pc`` into theirs) cannot
    be put in an encoded word — RFC 2047 section 5 allows none in an id, and Django's
    ``=?utf-8?b?PHBt…?=`` for the whole field matches no id — and smtplib sends non-ASCII header
    bytes only as the server allows. An address whose local part is beyond ASCII (``international``)
    has no ASCII form at all. So:

    - all ids and addresses ASCII: the headers as always;
    - the server offers SMTPUTF8 (RFC 6531: Gmail, Microsoft 365, Postfix 3 and Exim as built by
      most distributions do): the reply goes as an internationalized mail, ``MAIL FROM:<…>
      SMTPUTF8 BODY=8BITMIME`` and ``RCPT TO:<josé@example.com>`` with the threading fields and
      such a ``To`` in UTF-8, the ids byte for byte: it threads, and reaches that mailbox;
    - an SMTP server without SMTPUTF8 cannot be given such an address: ``DeliveryError``
      (``NO_SMTPUTF8``), permanent, before anything is sent;
    - otherwise (or a backend other than SMTP, which writes addresses its own way) 8-bit header
      bytes may be refused, so the reply is downgraded as RFC 6857 does: In-Reply-To and References
      keep their ASCII ids (the reply threads by those and by its subject), and the fields whole go
      as ``Downgraded-In-Reply-To`` / ``Downgraded-References`` in encoded words: ASCII, accepted
      anywhere, nothing lost."""
    fields = {name: ids for name, ids in threading.items() if ids}
    unwritable = [address for address in mail.recipients() if international(address)]
    if not unwritable and all(id.isascii() for ids in fields.values() for id in ids):
        mail.extra_headers.update({name: _field(ids) for name, ids in fields.items()})
        mail.send()
        return
    with mail.get_connection() as connection:  # opened once: asked what it offers, then sent on
        smtp = getattr(connection, "connection", None)
        if isinstance(smtp, smtplib.SMTP):
            smtp.ehlo_or_helo_if_needed()
            if smtp.has_extn("smtputf8"):
                _send_internationalized(smtp, mail, fields, to_utf8=bool(unwritable))
                return
            if unwritable:
                raise DeliveryError(f"{NO_SMTPUTF8}: cannot reply to {', '.join(unwritable)}", transient=False,
                                    code="recipient")
        for name, ids in fields.items():
            if any(not id.isascii() for id in ids):
                mail.extra_headers[f"Downgraded-{name}"] = _field(ids)  # Django writes it as encoded words
            if any(id.isascii() for id in ids):
                mail.extra_headers[name] = _field(id for id in ids if id.isascii())
        mail.send()


def _send_internationalized(smtp: smtplib.SMTP, mail: EmailMultiAlternatives, fields: dict, to_utf8: bool) -> None:
    """``mail`` as an SMTPUTF8 mail: the threading ``fields`` and (``to_utf8``) the ``To`` field
    prepended raw in UTF-8 — Django's headers would encode them — folded between ids, one a line."""
    message = mail.message()
    head = "".join(f"{name}: " + "\r\n ".join(f"<{id}>" for id in ids) + "\r\n" for name, ids in fields.items())
    if to_utf8:
        del message["To"]  # =?utf-8?b?am9zw6k=?=@example.com
        head += "To: " + ", ".join(mail.to) + "\r\n"
    encoding = mail.encoding or settings.DEFAULT_CHARSET
    smtp.sendmail(sanitize_address(mail.from_email, encoding), [smtp_address(address) for address in mail.recipients()],
                  head.encode("utf-8") + message.as_bytes(linesep="\r\n"), mail_options=["SMTPUTF8", "BODY=8BITMIME"])


def ascii_address(address: str) -> str:
    """``address`` with its domain in IDNA (hilfe@müller-shop.de -> hilfe@xn--mller-shop-9db.de),
    as ``formataddr``, SMTP and our Message-IDs need it. Raises UnicodeError for a local part
    beyond ASCII or a domain IDNA cannot write (a label over 63 characters)."""
    address.rpartition("@")[0].encode("ascii")
    return smtp_address(address)


def unusable(error: UnicodeError) -> str:
    """A saved mail setting that Python cannot send to the server (a host name IDNA cannot write;
    a user or password beyond ASCII, as SMTP and IMAP log in), in words that never repeat a
    password's characters."""
    why = "a character beyond ASCII" if isinstance(error, UnicodeEncodeError) else one_line(error)
    return f"the saved host name, user or password cannot be sent to a mail server ({why}); save the email settings again"


def refused_mail_host(host: str, port, deadline: egress.Deadline) -> str:
    """Why a member-typed SMTP or IMAP server may not be connected to ('' when it may): an address
    of this server's own network, unless CHATNEXUS_MAIL_ALLOW_PRIVATE (bots/egress.py). Said when
    the channel is saved; every connection checks again, on the address it connects to
    (``pinned``: ``egress.HostRefused``). A name that does not resolve is left to the connection;
    one still being looked up at the ``deadline`` raises its ``late()``."""
    try:
        return egress.refused_host(host, int(port), settings.CHATNEXUS_MAIL_ALLOW_PRIVATE, "CHATNEXUS_MAIL_ALLOW_PRIVATE",
                                   deadline)
    except (OSError, ValueError):
        return ""


def smtp_connection(config):
    """The channel's SMTP server, connected to the address checked (``pinned``: a host of this
    server's own network raises ``egress.HostRefused`` on send), or the platform's mail settings
    when it has none."""
    channel = config.settings
    if not channel.get("smtp_host"):
        return get_connection(timeout=settings.CHATNEXUS_SMTP_TIMEOUT_S)
    return get_connection(
        "channels_app.email.pinned.EmailBackend",
        host=channel["smtp_host"],
        port=int(channel.get("smtp_port") or 587),
        username=channel.get("smtp_user") or "",
        password=config.secrets.get("smtp_password", ""),
        use_tls=bool(channel.get("smtp_use_tls", False)),
        timeout=settings.CHATNEXUS_SMTP_TIMEOUT_S,
    )


# A reply "sent" through the platform's console backend (the embedded default with no EMAIL_HOST):
# shown beside its delivery status ("sent"), as invitations and the test email say it.
LOG_ONLY = "written to the server log only: no SMTP server is set up"


class EmailAdapter(Adapter):
    name = "email"
    label = "email"

    def send(self, message):
        from .sender import sender  # which imports this module

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
        headers = {"Message-ID": message_id}
        if message.sender != Message.Sender.AGENT:
            # RFC 3834 marks automatic mail, which recipients' filters (ours too, filters.py) file as
            # such: the bot's replies and its handoff message, never a person's answer
            headers.update({"Auto-Submitted": "auto-replied", "X-Auto-Response-Suppress": "All"})
        threading = threading_ids(meta)
        from_email, reply_to = sender(config, address)  # the platform's own address until the bot's is confirmed
        mail = EmailMultiAlternatives(
            subject=reply_subject(meta.get("subject") or message.conversation.subject),
            body=message.text,
            from_email=from_email,
            to=[recipient],
            reply_to=reply_to,
            headers=headers,
            connection=smtp_connection(config),
        )
        mail.attach_alternative(to_html(message.text), "text/html")  # the markdown the bot writes, rendered
        try:
            send_threaded(mail, threading)
        except egress.HostRefused as refused:  # checked on the address connected to
            raise DeliveryError(f"SMTP server not allowed: {refused}", transient=False, code="config") from None
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
        if logged_only(config):
            # "sent" as far as this server can send, which is to its log: the inbox and the API say so
            Message.objects.filter(id=message.id).update(meta={**(message.meta or {}), "delivery_note": LOG_ONLY})
        return message_id.strip("<>")


def logged_only(config) -> bool:
    """Does this channel's mail only reach the server's log? (It names no SMTP server, and the
    platform has none set up: the embedded default's console backend.)"""
    return not config.settings.get("smtp_host") and not mail_leaves_the_server()


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
