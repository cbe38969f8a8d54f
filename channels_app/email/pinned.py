"""SMTP and IMAP clients for an email channel's own mail servers, connected to the address checked.

smtplib and imaplib resolve the server's name themselves when they open the socket, so a check
made by name just before (``refused_mail_host``) could be answered with a public address and the
connection, a moment later, with 127.0.0.1 (DNS rebinding). These subclasses hand that one step
to ``egress.connect``: the name is resolved once, every address checked against this server's own
network (unless CHATNEXUS_MAIL_ALLOW_PRIVATE), and the socket opened to the checked address. The
name stays the client's host for everything else: EHLO and the TLS handshake (SNI and the
certificate's name, ``server_hostname=self._host`` / ``self.host`` as in CPython's own classes).
A refused host raises ``egress.HostRefused`` (an OSError) before anything is sent. IMAP over TLS
verifies the server's certificate (chain and name) as SMTP does: imaplib's own default context
checks neither, so a man in the middle could have read the mailbox's password.

    EmailBackend(host=..., port=..., use_tls=True)   # what ``adapter.smtp_connection`` makes
    IMAP4_SSL(host, port, timeout=20)                 # what ``imap.connect`` makes
"""
import imaplib
import smtplib
import socket
import ssl
import sys

from django.conf import settings
from django.core.mail.backends import smtp

from bots import egress


def mail_socket(host: str, port: int, timeout, source_address=None) -> socket.socket:
    """A TCP connection to a member-typed mail server, pinned to the address checked."""
    if timeout is not None and not timeout:
        raise ValueError("Non-blocking socket (timeout=0) is not supported")  # as smtplib and imaplib say
    return egress.connect(host, port, settings.CHATNEXUS_MAIL_ALLOW_PRIVATE, "CHATNEXUS_MAIL_ALLOW_PRIVATE", timeout,
                          source_address)


# ---------------------------------------------------------------------------
# SMTP: smtplib opens its socket in ``_get_socket`` (SMTP_SSL wraps it there too; STARTTLS later
# wraps ``self.sock`` with ``server_hostname=self._host``, the name, by itself).


class SMTP(smtplib.SMTP):
    def _get_socket(self, host, port, timeout):
        return mail_socket(host, port, timeout, self.source_address)


class SMTP_SSL(smtplib.SMTP_SSL):
    def _get_socket(self, host, port, timeout):
        return self.context.wrap_socket(mail_socket(host, port, timeout, self.source_address),
                                        server_hostname=self._host)


class EmailBackend(smtp.EmailBackend):
    """Django's SMTP backend (its STARTTLS, login and certificate checks) on the pinned clients."""

    @property
    def connection_class(self):
        return SMTP_SSL if self.use_ssl else SMTP


# ---------------------------------------------------------------------------
# IMAP: imaplib opens its socket in ``_create_socket`` (IMAP4_SSL wraps it there with
# ``server_hostname=self.host``). Its ``timeout=None`` means "none given": the socket default.


def _imap_socket(client, timeout) -> socket.socket:
    sys.audit("imaplib.open", client, client.host, client.port)
    return mail_socket(client.host, client.port, socket._GLOBAL_DEFAULT_TIMEOUT if timeout is None else timeout)


class IMAP4(imaplib.IMAP4):
    def _create_socket(self, timeout):
        return _imap_socket(self, timeout)


class IMAP4_SSL(imaplib.IMAP4_SSL):
    def __init__(self, host, port=imaplib.IMAP4_SSL_PORT, *, ssl_context=None, timeout=None):
        # the system's trusted CAs and the host's name, as Django's SMTP backend checks them
        # (a certificate refused: ssl.SSLCertVerificationError, an OSError, before the login)
        super().__init__(host, port, ssl_context=ssl_context or ssl.create_default_context(), timeout=timeout)

    def _create_socket(self, timeout):
        return self.ssl_context.wrap_socket(_imap_socket(self, timeout), server_hostname=self.host)
