"""Mail we store but never answer, and why (RFC 3834 and common practice).

``skip_reason(mail, config)`` returns "" when the bot may answer, else a short reason
shown in the inbox: automatic mail (``Auto-Submitted``, ``Precedence``, vendor
auto-reply headers), mailing lists (but not the list of the channel's own address:
``own_list_id``), bounces, no-reply senders, our own address (but not a customer's mail that
the Google Group at it rewrote to come from it: ``as_sent``), and senders who already got
today's quota of auto-replies.
"""
import dataclasses
import re
import unicodedata
from datetime import timedelta
from email.utils import parseaddr

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from bots.models import Message

from .parse import ParsedMail, mailbox

_NO_REPLY = re.compile(r"^(no[-_.]?reply|do[-_.]?not[-_.]?reply|dont[-_.]?reply|bounces?|mailer[-_.]?daemon|postmaster)([-+_.].*)?$", re.I)


def skip_reason(mail: ParsedMail, config) -> str:
    headers = mail.headers
    auto = headers.get("auto-submitted", "").split(";")[0].strip().lower()
    if auto and auto != "no":
        return f"automatic mail (Auto-Submitted: {auto})"
    own_list = own_list_id(headers.get("list-id", ""), config)
    precedence = headers.get("precedence", "").strip().lower()
    if precedence in ("bulk", "junk") or (precedence == "list" and not own_list):
        return f"bulk mail (Precedence: {precedence})"
    if not own_list and ("list-id" in headers or "list-unsubscribe" in headers):
        return "mailing list mail (List-Id / List-Unsubscribe)"
    if "x-autoreply" in headers or "x-autorespond" in headers:
        return "automatic reply (X-Autoreply)"
    suppress = headers.get("x-auto-response-suppress", "").lower()
    if any(word in suppress for word in ("all", "autoreply", "oof")):
        return f"sender asks for no auto-replies (X-Auto-Response-Suppress: {suppress})"
    bounce = _bounce(mail)
    if bounce:
        return bounce
    # the reply goes to Reply-To when there is one (adapter.py): the checks hold for that address
    # too, or a sender could aim the bot's replies at anyone, a fresh From each time
    recipient = mail.reply_to_address or mail.from_address
    for address in dict.fromkeys((mail.from_address, recipient)):
        if _NO_REPLY.match(address.split("@")[0]):
            return f"no-reply sender ({address})"
    ours = config.settings.get("address", "").strip().lower()
    if ours and ours in (mail.from_address, recipient):
        return "sent from our own address" if mail.from_address == ours else "replies would go to our own address"
    limit = daily_limit(config)
    sent = replies_today(config, recipient)
    if sent >= limit:
        return f"{QUOTA} ({limit} auto-replies to {recipient} in 24 hours)"
    return ""


def own_list_id(list_id: str, config) -> bool:
    """Does the List-Id field ``list_id`` name the list of the channel's own address?
    A Google Group or collaborative inbox at the business's support address (List-Id
    ``<support.acme.example>`` for support@acme.example, with List-Unsubscribe and
    ``Precedence: list``) hands on each customer's mail as list mail: that is mail to the bot, not
    a list's. Mailman names the same list ``<support.lists.acme.example>`` (its lists live at
    lists.<domain>). Any other list is somebody else's, the business's own company-wide
    ``<all.acme.example>`` too (answering it wrote to the whole company); bulk mail
    (``Precedence: bulk``) stays unanswered even from our own list."""
    local, at, domain = config.settings.get("address", "").strip().lower().rpartition("@")
    brackets = re.findall(r"<([^<>]*)>", list_id)  # "Acme Support" <support.acme.example>
    name = (brackets[-1] if brackets else list_id).strip().lower().rstrip(".")
    if not (local and at and domain):
        return False
    mailman = rf"{re.escape(local)}\.[a-z0-9-]+\.{re.escape(domain)}"  # help.lists.acme.example
    return name == f"{local}.{domain}" or bool(re.fullmatch(mailman, name))


def as_sent(mail: ParsedMail, config) -> ParsedMail:
    """``mail`` from its author, when a Google Group at the channel's own address handed it on
    with From rewritten to the group's (DMARC): ``"'Carla Ruiz' via Acme Help" <help@acme.example>``,
    the customer named in Reply-To and X-Original-From. Taken as from our own address it was never
    answered. Only such a mail: From our address, " via " in its name, and another address in
    X-Original-From (the author) or Reply-To (where the answer goes, the author's unless it is ours).
    Our own mail handed on by the group names us in X-Original-From: it stays our own, never answered."""
    ours = config.settings.get("address", "").strip().lower()
    if not ours or mail.from_address != ours or " via " not in mail.from_name:
        return mail
    name, author = parseaddr(mail.headers.get("x-original-from", ""))
    author = mailbox(author) if "@" in author else ""
    reply_to = "" if mail.reply_to_address == ours else mail.reply_to_address
    if author == ours or not (author or reply_to):
        return mail
    named = re.sub(r"^'(.*)'$", r"\1", mail.from_name.rpartition(" via ")[0].strip())  # 'Carla Ruiz' via Acme Help
    return dataclasses.replace(mail, from_address=author or reply_to, from_name=name or named,
                               reply_to_address=reply_to if author else "")


QUOTA = "reply limit reached"  # the one reason above that a person's own mail gets


def automated(reason: str) -> bool:
    """Did a machine send the mail ``skip_reason`` gave this reason for (not a person over the quota)?"""
    return bool(reason) and not reason.startswith(QUOTA)


def _bounce(mail):
    if "return-path" in mail.headers and mail.headers["return-path"].strip() in ("", "<>"):
        return "bounce (empty Return-Path)"
    if mail.from_address.split("@")[0].upper() in ("MAILER-DAEMON", "POSTMASTER"):
        return f"bounce ({mail.from_address})"
    if mail.content_type == "multipart/report" and mail.report_type in ("delivery-status", "disposition-notification"):
        return f"bounce or receipt (multipart/report; report-type={mail.report_type})"
    if "x-failed-recipients" in mail.headers:
        return "bounce (X-Failed-Recipients)"
    return ""


def daily_limit(config) -> int:
    try:
        return int(config.settings.get("max_replies_per_sender_per_day", settings.CHATNEXUS_EMAIL_MAX_REPLIES_PER_DAY))
    except (TypeError, ValueError):
        return settings.CHATNEXUS_EMAIL_MAX_REPLIES_PER_DAY


def replies_today(config, address) -> int:
    """Mails of the last 24 hours that the bot answered or will answer to ``address`` (their
    Reply-To, else their From), whatever the case of its local part.

    ``parse.mailbox`` keeps a local part beyond ASCII as written (``José@``, ``JOSÉ@``, ``jOsé@``):
    one quota for all of them, or a sender gets a fresh quota per spelling to aim at one victim. They
    are compared casefolded (and NFKC-normalised) in Python: neither SQLite's LIKE (the embedded
    mode's ``iexact``) nor PostgreSQL's UPPER under a "C" locale folds ``É``. The database narrows
    to the domain first, which ``mailbox`` stores lower-cased."""
    recent = Message.objects.filter(
        bot_id=config.bot_id,
        channel="email",
        direction=Message.Direction.INBOUND,
        created__gte=timezone.now() - timedelta(days=1),
        reply_state__in=[Message.ReplyState.PENDING, Message.ReplyState.DONE],
    )
    if "@" not in address:  # no domain to narrow by (skip_reason answers no such sender anyway)
        no_reply_to = Q(meta__reply_to_address="") | ~Q(meta__has_key="reply_to_address")
        return recent.filter(Q(meta__reply_to_address=address) | (Q(meta__from_address=address) & no_reply_to)).count()
    domain = "@" + address.rpartition("@")[2]
    same_domain = Q(meta__reply_to_address__endswith=domain) | Q(meta__from_address__endswith=domain)
    rows = recent.filter(same_domain).values_list("meta__reply_to_address", "meta__from_address")
    folded = _folded(address)
    return sum(1 for reply_to, sender in rows if _folded(reply_to or sender or "") == folded)


def _folded(address: str) -> str:
    """``address`` as the daily cap tells senders apart: case and Unicode spelling folded."""
    return unicodedata.normalize("NFKC", address).casefold()
