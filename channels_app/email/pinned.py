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

Each connection also lasts at most so long in all (CHATNEXUS_SMTP_DEADLINE_S,
CHATNEXUS_IMAP_DEADLINE_S), from looking up the server's name on: their timeouts hold for each
read, so a server answering a byte now and then (its greeting, a reply line, the TLS handshake)
held the worker, and with it every organisation's deliveries and mailbox polls, for as long as it
liked, and a name server that never answers, for the resolver's timeouts times its retries. At the
deadline ``egress.Deadline`` shuts the connection, and the read it stopped (or the look-up it
stopped waiting for) fails saying "<host> took longer than N s in all": an OSError, as callers
expect of a server that stops answering.

IMAP reads a literal (``{N}`` then N bytes: a fetched mail) by N, which the server says: imaplib
read, and allocated, whatever it was told, gigabytes from a hostile or broken server. Only as much
as a mail may have (CHATNEXUS_EMAIL_MAX_BYTES, which ``imap`` fetches at most of) is kept: of a
longer literal (a server ignoring ``<0.N>``) the rest is read in pieces and dropped, so the mail
comes back cut there and what follows it can be read (the deadline bounds how long that takes). A
literal announced longer than ``DRAINED_AT_MOST`` is not read at all: ``TooLarge``, an OSError,
and the connection is closed (what follows the unread literal cannot be read in order).

    EmailBackend(host=..., port=..., use_tls=True)   # what ``adapter.smtp_connection`` makes
    IMAP4_SSL(host, port, timeout=20)                 # what ``imap.connect`` makes
"""
import imaplib
import smtplib
import socket
import ssl
import sys
from contextlib import ExitStack, nullcontext

from django.conf import settings
from django.core.mail.backends import smtp

from bots import egress


def mail_socket(host: str, port: int, timeout, source_address=None, deadline=None) -> socket.socket:
    """A TCP connection to a member-typed mail server, pinned to the address checked (its name
    looked up until ``deadline`` at most)."""
    if timeout is not None and not timeout:
        raise ValueError("Non-blocking socket (timeout=0) is not supported")  # as smtplib and imaplib say
    return egress.connect(host, port, settings.CHATNEXUS_MAIL_ALLOW_PRIVATE, "CHATNEXUS_MAIL_ALLOW_PRIVATE", timeout,
                          source_address, deadline)


# ---------------------------------------------------------------------------
# A deadline for each connection (module docstring)


class _Deadlined:
    """A mail client whose connection is shut ``deadline_setting``'s seconds after it was opened."""

    deadline_setting = ""  # CHATNEXUS_SMTP_DEADLINE_S, CHATNEXUS_IMAP_DEADLINE_S
    late = OSError  # what a read stopped by the deadline raises
    deadline, _ends = None, None  # once connected

    def _connected(self, host: str, port: int, timeout, source_address=None, tls=None) -> socket.socket:
        """A connection to ``host`` (``mail_socket``, wrapped by ``tls`` if given), shut at the
        deadline, which runs from before the name is looked up. A copy of the socket is watched: TLS
        takes the socket over (STARTTLS later too), and shutting a copy shuts the connection,
        whatever object reads it (closed with the client: ``_end``)."""
        seconds, late = getattr(settings, self.deadline_setting), self.late
        self._ends = ExitStack()
        self.deadline = self._ends.enter_context(
            egress.Deadline(seconds, lambda: late(f"{host} took longer than {seconds} s in all")))
        try:
            sock = mail_socket(host, port, timeout, source_address, self.deadline)
            self.deadline.watch(self._ends.enter_context(sock.dup()))
            if tls is None:
                return sock
            with self.deadline.kept():
                return tls(sock)
        except BaseException:
            self._end()
            raise

    def _kept(self):
        """What a read raises once the deadline has passed is ``late``: the connection was shut."""
        return self.deadline.kept() if self.deadline else nullcontext()

    def _read(self, read, *args):
        """``read(*args)``; ``late`` once the deadline has passed, for what it raised or for the end it
        met (the deadline's shutdown reads as one)."""
        with self._kept():
            data = read(*args)
        if self.deadline:
            self.deadline.check()
        return data

    def _end(self):
        if self._ends is not None:
            self._ends.close()


# ---------------------------------------------------------------------------
# SMTP: smtplib opens its socket in ``_get_socket`` (SMTP_SSL wraps it there too; STARTTLS later
# wraps ``self.sock`` with ``server_hostname=self._host``, the name, by itself). Every reply is
# read by ``getreply``; what fails there closes the client first. Late is SMTPServerDisconnected,
# which Django's backend expects of a QUIT the server did not answer.


class _DeadlinedSMTP(_Deadlined):
    deadline_setting, late = "CHATNEXUS_SMTP_DEADLINE_S", smtplib.SMTPServerDisconnected

    def getreply(self):
        with self._kept():
            return super().getreply()

    def send(self, s):
        with self._kept():
            return super().send(s)

    def starttls(self, *args, **kwargs):
        with self._kept():
            return super().starttls(*args, **kwargs)

    def close(self):
        try:
            super().close()
        finally:
            self._end()


class SMTP(_DeadlinedSMTP, smtplib.SMTP):
    def _get_socket(self, host, port, timeout):
        return self._connected(host, port, timeout, self.source_address)


class SMTP_SSL(_DeadlinedSMTP, smtplib.SMTP_SSL):
    def _get_socket(self, host, port, timeout):
        return self._connected(host, port, timeout, self.source_address,
                               tls=lambda sock: self.context.wrap_socket(sock, server_hostname=self._host))


class EmailBackend(smtp.EmailBackend):
    """Django's SMTP backend (its STARTTLS, login and certificate checks) on the pinned clients."""

    @property
    def connection_class(self):
        return SMTP_SSL if self.use_ssl else SMTP


# ---------------------------------------------------------------------------
# IMAP: imaplib opens its socket in ``_create_socket`` (IMAP4_SSL wraps it there with
# ``server_hostname=self.host``). Its ``timeout=None`` means "none given": the socket default.
# It reads with ``readline`` (at most imaplib._MAXLINE) and ``read`` (a literal's N bytes; an end
# read as EOF), and closes in ``shutdown``.


DRAINED_AT_MOST = 1 << 30  # bytes of one IMAP literal read (and dropped past a mail's limit) before giving up on it
_DRAINED_BY = 64 * 1024


class TooLarge(OSError):
    """The IMAP server announced a literal longer than ``DRAINED_AT_MOST`` (module docstring)."""


def _imap_timeout(client, timeout):
    """imaplib's ``timeout`` as a socket takes it (``None``: the default), audited as imaplib opens."""
    sys.audit("imaplib.open", client, client.host, client.port)
    return socket._GLOBAL_DEFAULT_TIMEOUT if timeout is None else timeout


class _DeadlinedIMAP(_Deadlined):
    deadline_setting, late = "CHATNEXUS_IMAP_DEADLINE_S", TimeoutError

    def readline(self):
        return self._read(super().readline)

    def read(self, size):
        most = settings.CHATNEXUS_EMAIL_MAX_BYTES
        if size <= most:
            return self._read(super().read, size)
        if size > DRAINED_AT_MOST:
            try:  # its bytes left unread, nothing after them can be read: no LOGOUT waits on them
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            raise TooLarge(f"{self.host} announced {size:,} bytes in one piece, more than this server reads of one "
                           f"({DRAINED_AT_MOST:,}): not read, the mail left on the server")
        kept = self._read(super().read, most)
        left = size - len(kept) if len(kept) == most else 0  # short: the connection ended, imaplib says so next
        while left:  # the rest dropped as it comes: the reply after it is read in order
            piece = self._read(super().read, min(left, _DRAINED_BY))
            left = left - len(piece) if piece else 0
        return kept

    def shutdown(self):
        try:
            super().shutdown()
        finally:
            self._end()


class IMAP4(_DeadlinedIMAP, imaplib.IMAP4):
    def _create_socket(self, timeout):
        return self._connected(self.host, self.port, _imap_timeout(self, timeout))


class IMAP4_SSL(_DeadlinedIMAP, imaplib.IMAP4_SSL):
    def __init__(self, host, port=imaplib.IMAP4_SSL_PORT, *, ssl_context=None, timeout=None):
        # the system's trusted CAs and the host's name, as Django's SMTP backend checks them
        # (a certificate refused: ssl.SSLCertVerificationError, an OSError, before the login)
        super().__init__(host, port, ssl_context=ssl_context or ssl.create_default_context(), timeout=timeout)

    def _create_socket(self, timeout):
        return self._connected(self.host, self.port, _imap_timeout(self, timeout),
                               tls=lambda sock: self.ssl_context.wrap_socket(sock, server_hostname=self.host))
