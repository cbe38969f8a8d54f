""""Send a test email" on the Channels page: try the email channel's saved settings the way
the channel will use them, and say what happened in words.

- SMTP: a short mail from the bot's address (from the platform's own address, Reply-To the bot's,
  while that needs confirming: ``sender.py``), through the channel's SMTP server (the
  platform's own mail settings when it names none), to the address typed beside the button, sent
  as the bot's replies are (``adapter.send_threaded``): to an address beyond ASCII
  (josé@example.com) in UTF-8 where the server offers SMTPUTF8, else not at all, said in words;
- IMAP, when set: log in and open the folder the poller reads (read-only), and count its mail.

Each check answers ``(ok, sentence)``; nothing raises, nothing is stored.
"""
import imaplib
import re
import smtplib
import socket
import ssl
from email.utils import parseaddr

from django.core.mail import EmailMessage
from django.core.validators import validate_email

from bots.egress import HostRefused

from ..base import DeliveryError, one_line
from .adapter import NO_SMTPUTF8, ascii_address, logged_only, send_threaded, smtp_connection, unusable
from .imap import connect, select_folder, untrusted
from .sender import sender


def validate_recipient(address: str) -> None:
    """Django's ``validate_email`` (ValidationError), taking a local part beyond ASCII too
    (RFC 6531: josé@example.com, which ``smtp`` sends where the server offers SMTPUTF8): its
    letters beyond ASCII are checked as letters, which Django's pattern, ASCII only, refuses."""
    local, at, domain = address.rpartition("@")
    validate_email(re.sub(r"[^\x00-\x7f]", lambda m: "a" if m[0].isalnum() else m[0], local) + at + domain)


def smtp(config, recipient: str) -> tuple[bool, str]:
    channel = config.settings
    address = (channel.get("address") or "").strip()
    if "@" not in address:
        return False, "SMTP not tried: the channel has no bot address yet."
    where = f"{channel['smtp_host']}:{channel.get('smtp_port') or 587}" if channel.get("smtp_host") else \
        "the platform's own mail settings"
    try:
        from_email, reply_to = sender(config, ascii_address(address))  # saved before addresses were stored in IDNA
    except UnicodeError:
        return False, f"SMTP not tried: the bot address {address} cannot be written in a mail; save the email settings again."
    # until someone at the bot's address confirms it, mail through the platform's server is the platform's
    mailed_from = f"{parseaddr(from_email)[1]} with Reply-To {address}" if reply_to else address
    mail = EmailMessage(
        subject=f"Test email from {config.bot.name} (ChatNexus)",
        body=f"This is a test from the email channel of {config.bot.name}: its replies are sent like this one, "
             f"from {mailed_from}, through {where}.",
        from_email=from_email,
        to=[recipient],
        reply_to=reply_to,
        headers={"Auto-Submitted": "auto-generated"},
        connection=smtp_connection(config),
    )
    try:
        send_threaded(mail, {})
    except DeliveryError:  # an address beyond ASCII, and a server without SMTPUTF8: nothing was sent
        return False, (f"SMTP: not sent to {recipient}: {NO_SMTPUTF8} ({where}), so the bot's replies cannot "
                       "reach such an address either.")
    except HostRefused as refused:  # checked on the address it would connect to
        return False, f"SMTP not tried: {refused}."
    except ssl.SSLCertVerificationError as error:  # before the password: nothing was sent to it
        return False, f"SMTP: {untrusted(where, error, 'neither the password nor the mail was sent to it', '')}."
    except smtplib.SMTPAuthenticationError as error:
        return False, f"SMTP: {where} refused the user name or password ({error.smtp_code} {one_line(error.smtp_error)})."
    except smtplib.SMTPRecipientsRefused as error:
        return False, f"SMTP: {where} refused the recipient {recipient}: {_refusals(error.recipients)}."
    except smtplib.SMTPSenderRefused as error:
        return False, f"SMTP: {where} refused to send from {parseaddr(from_email)[1]} ({error.smtp_code} {one_line(error.smtp_error)})."
    except smtplib.SMTPResponseException as error:
        return False, f"SMTP: {where} answered {error.smtp_code} {one_line(error.smtp_error)}."
    except (smtplib.SMTPException, OSError, socket.timeout) as error:
        return False, f"SMTP: could not talk to {where}: {error or type(error).__name__}."
    except UnicodeError as error:
        return False, f"SMTP not tried: {unusable(error)}."
    if logged_only(config):
        return True, (f"SMTP: the test email to {recipient} was only written to this server's log: the channel names "
                      "no SMTP server and the platform has no mail server set up (EMAIL_HOST).")
    unconfirmed = f" (from {address} once someone there follows the link of the confirmation email)" if reply_to else ""
    return True, f"SMTP: sent a test email from {mailed_from}{unconfirmed} to {recipient} through {where}."


def imap(config) -> tuple[bool, str]:
    channel = config.settings
    host = f"{channel['imap_host']}:{channel.get('imap_port') or ''}".rstrip(":")
    folder = channel.get("imap_folder") or "INBOX"
    try:
        client = connect(config)
    except HostRefused as refused:
        return False, f"IMAP not tried: {refused}."
    except imaplib.IMAP4.error as error:
        return False, f"IMAP: {host} refused the login: {one_line(error)}."
    except ssl.SSLCertVerificationError as error:
        return False, f"IMAP: {untrusted(host, error)}."
    except (OSError, socket.timeout) as error:
        return False, f"IMAP: could not talk to {host}: {error or type(error).__name__}."
    except UnicodeError as error:
        return False, f"IMAP not tried: {unusable(error)}."
    try:
        count = select_folder(client, folder)
    except imaplib.IMAP4.error as error:
        return False, f"IMAP: logged in to {host}, but the folder {folder!r} cannot be opened: {one_line(error)}."
    except (OSError, socket.timeout) as error:
        return False, f"IMAP: {host} stopped answering: {error or type(error).__name__}."
    except UnicodeError:  # the folder's name: IMAP writes it in ASCII (modified UTF-7)
        return False, (f"IMAP: logged in to {host}, but the folder {folder!r} cannot be asked for: IMAP names folders "
                       "in ASCII (one with accents is written in modified UTF-7, like Entw&APw-rfe).")
    finally:
        try:
            client.logout()
        except (OSError, imaplib.IMAP4.error):
            pass
    return True, f"IMAP: logged in to {host}; the folder {folder!r} holds {count} messages. New ones are fetched periodically."


def check(config, recipient: str) -> list[tuple[bool, str]]:
    results = [smtp(config, recipient)]
    if config.settings.get("imap_host"):
        results.append(imap(config))
    return results


def _refusals(recipients) -> str:
    return "; ".join(f"{code} {one_line(text)}" for code, text in recipients.values())
