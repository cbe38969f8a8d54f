"""Calls out to URLs that members type (the API channel's reply webhook, knowledge fetched from
a web page): never to the server's own network unless the deployment allows it, so a member
cannot make the server reach its database, a cloud metadata address or an admin port.

Two layers. ``refused_address`` resolves the name and says, in a sentence, why it may not be
called (forms and callers show it). The call itself then goes through ``session``: a
requests-hardened session that resolves the name again, refuses a private address, and
connects to the very address it checked (the Host header and the TLS name stay the URL's). A
name that answers with a public address for the first look and 127.0.0.1 for the connection
(DNS rebinding) therefore reaches nothing: the check and the connection cannot disagree.

    with egress.session(allow_private) as http:
        response = http.get(url, timeout=..., allow_redirects=False)   # egress.Refused if pinned private

Protocols that open their own sockets (smtplib, imaplib: an email channel's mail servers) get the
same pinning from ``connect``: it resolves the name once, checks every address and connects to
those very addresses; their clients keep the name for TLS (channels_app/email/pinned.py).

    sock = egress.connect(host, port, allow_private, setting, timeout)   # egress.HostRefused if private

Socket timeouts hold for each read, so a server that answers a byte now and then holds the call,
and the worker making it, for as long as it likes: ``Deadline`` ends the whole call at a set time
(the mail clients' connections too: pinned.py). Looking up the name counts too: the system
resolver asks its servers for its own timeout times its retries, and nothing interrupts it, so
under a deadline it asks in a thread of its own, waited for only until the deadline.

    with egress.Deadline(20, late) as deadline, deadline.watching(egress.session(allow_private)) as http:
        refused = egress.refused_address(url, allow_private, setting, deadline=deadline)   # late() at the deadline
        with deadline.kept():
            response = http.post(url, ..., stream=True, timeout=deadline.timeout((5, 15)))
        body = deadline.read(response, 64 * 1024)   # late() at the deadline
"""
from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from urllib.parse import urlsplit

import requests
from requests_hardened import Config, HTTPSession
from requests_hardened.ip_filter import InvalidIPAddress as Refused  # a requests.RequestException
from requests_hardened.ip_filter_adapter import IPFilterAdapter
from urllib3.exceptions import NameResolutionError
from urllib3.util.connection import allowed_gai_family

__all__ = ["CutShort", "Deadline", "HostRefused", "Refused", "connect", "refusal", "refused_address", "refused_host",
           "session"]


class HostRefused(OSError):
    """``connect`` would not connect: its text is ``refused_host``'s sentence."""


def refused_address(url: str, allow_private: bool, setting: str, what: str = "the URL",
                    deadline: Deadline | None = None) -> str:
    """Why ``url`` may not be called ('' when it may): not http(s), or a host that resolves to an
    address of this server's own network (loopback, private, link-local, reserved) while
    ``allow_private`` (the setting named ``setting``) is off. Raises OSError when the name does
    not resolve; ``deadline.late()`` when the look-up is still going at the deadline."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{what} must start with http:// or https:// and name a host"
    try:
        port = parts.port
    except ValueError:  # ":99999" passes Django's URLValidator
        return f"{what} has a port that is not a number from 1 to 65535"
    return refused_host(parts.hostname, port or (443 if parts.scheme == "https" else 80), allow_private, setting,
                        deadline)


def refused_host(host: str, port: int, allow_private: bool, setting: str, deadline: Deadline | None = None) -> str:
    """Why ``host`` may not be connected to ('' when it may): it resolves to an address of this
    server's own network while ``allow_private`` is off. Raises OSError when it does not resolve.
    What a form says when a host is saved; the connection itself goes through ``session`` or ``connect``."""
    if allow_private:
        return ""
    try:
        return _refused(host, _resolve(host, port, deadline), setting)
    except UnicodeError:  # a label IDNA cannot encode (too long once in punycode): no such name
        raise OSError(f"{host} is not a valid host name") from None


def connect(host: str, port: int, allow_private: bool, setting: str, timeout=socket._GLOBAL_DEFAULT_TIMEOUT,
            source_address=None, deadline: Deadline | None = None) -> socket.socket:
    """A TCP connection to ``host`` for protocols without a pinned session (SMTP, IMAP): the name
    resolved once, every address it answers checked as ``refused_host`` checks them, and the
    connection made to those very addresses, in order until one answers, as
    ``socket.create_connection`` does. A name that answers a public address here and 127.0.0.1 to
    the next lookup therefore never reaches 127.0.0.1: there is no next lookup. Raises
    ``HostRefused`` (nothing connected) when an address is of this server's own network while
    ``allow_private`` is off; OSError when the name does not resolve or no address answers;
    UnicodeError for a name IDNA cannot write, as ``socket.create_connection`` does;
    ``deadline.late()`` when the look-up is still going at the deadline."""
    found = _resolve(host, port, deadline)
    refused = "" if allow_private else _refused(host, found, setting)
    if refused:
        raise HostRefused(refused)
    error = None
    for family, kind, proto, _, sockaddr in found:
        sock = socket.socket(family, kind, proto)
        try:
            if timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)
            return sock
        except OSError as failed:
            sock.close()
            error = failed
    raise error or OSError(f"{host} resolves to no address")


def _resolve(host: str, port: int, deadline: Deadline | None = None) -> list:
    """``getaddrinfo``'s answers for a TCP connection to ``host``: (family, type, proto, name, sockaddr);
    under a ``deadline``, looked up only until then (``Deadline.within``)."""
    if deadline is not None:
        return deadline.within(_resolve, host, port)
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)


def _is_address(host: str) -> bool:
    """Is ``host`` an address already ("[::1]" as urllib3 keeps one), nothing to look up?"""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _refused(host: str, found: list, setting: str) -> str:
    """``refused_host``'s sentence for the first address in ``found`` of this server's own network."""
    for *_, sockaddr in found:
        address = ipaddress.ip_address(sockaddr[0].split("%")[0])
        if not address.is_global or address.is_multicast:
            return _own_network(host, address, setting)
    return ""


def session(allow_private: bool) -> requests.Session:
    """A session for calls to a member's URL: plain where ``allow_private`` is on, else pinned to
    the public address it checked at connect time (module docstring); ``Refused`` otherwise.
    Redirects are never followed by the session (callers that follow them check every hop), nor
    is a redirect's body read ahead: requests reads it whole, even unfollowed, to find the next hop
    (``get_redirect_target``, here none), so an endless one filled the worker's memory."""
    http = requests.Session() if allow_private else HTTPSession(Config(
        ip_filter_enable=True, ip_filter_allow_loopback_ips=False, never_redirect=True, default_timeout=None))
    http.get_redirect_target = _no_next_hop
    return http


def _no_next_hop(response) -> None:
    return None


def refusal(error: Refused, url: str, setting: str) -> str:
    """``refused_address``'s sentence for an address the session refused at connect time."""
    return _own_network(urlsplit(url).hostname or url, error.args[0] if error.args else "?", setting)


def _own_network(hostname: str, address, setting: str) -> str:
    host = f"{address}" if hostname == str(address) else f"{hostname} ({address})"
    return f"{host} is an address of this server's own network (set {setting}=1 to allow it)"


# ---------------------------------------------------------------------------
# A deadline for a whole call


class CutShort(requests.ConnectionError):
    """``Deadline.read``: the connection dropped before the answer's end (not at the deadline)."""


class Deadline:
    """``seconds`` for a whole call to a member's server. requests' and the socket's timeouts hold
    for each read, so a server sending its headers, a chunk-size line or its body a byte at a time
    held the call for as long as it liked: at the deadline a timer shuts every socket the call
    opened (``watch``; ``watching`` a requests session), and whatever a read then raises
    (``kept``), or its early end, is ``late()``, the caller's error in words. Looking up a host's
    address is the system resolver's, which nothing interrupts: it is waited for only until the
    deadline (``within``), then ``late()`` too."""

    def __init__(self, seconds: float, late: Callable[[], Exception]):
        self.late = late
        self.at = time.monotonic() + seconds
        self.passed, self.sockets, self.lock = False, [], threading.Lock()
        self.timer = None

    def __enter__(self):
        # from its making, not from here: a look-up ``within`` it before (a URL's check) counts too
        self.timer = threading.Timer(max(0.0, self.at - time.monotonic()), self._shut)
        self.timer.daemon = True
        self.timer.start()
        return self

    def __exit__(self, *exc):
        self.timer.cancel()

    def _shut(self):
        with self.lock:
            self.passed = True
            for sock in self.sockets:
                self._shutdown(sock)

    def _shutdown(self, sock):
        try:  # shutdown, not close: it wakes a read waiting on the socket in another thread
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:  # closed already
            pass

    def watch(self, sock):
        """Shut ``sock`` at the deadline (now if it has passed)."""
        with self.lock:
            if self.passed:
                self._shutdown(sock)
            self.sockets.append(sock)

    def within(self, call: Callable, *args, **kwargs):
        """``call(*args, **kwargs)`` (a look-up: nothing interrupts the system resolver) in a daemon thread,
        waited for until the deadline: what it returned or raised, or ``late()`` if it is still going
        then (it ends by itself, answering no one)."""
        outcome = {}

        def run():
            try:
                outcome["value"] = call(*args, **kwargs)
            except BaseException as error:  # noqa: BLE001 - raised again in the caller's thread
                outcome["error"] = error

        thread = threading.Thread(target=run, name="egress-lookup", daemon=True)
        thread.start()
        thread.join(max(0.0, self.at - time.monotonic()))
        if thread.is_alive():
            raise self.late()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    def watching(self, http: requests.Session) -> requests.Session:
        """``http``, every connection it opens watched once connected (urllib3's hook for connections
        of one's own: a pool class's ConnectionCls), its host names looked up ``within`` the deadline:
        a pinned session's look-up (requests_hardened's adapter resolves the name to the address it
        connects to, before the connection), and a plain one's (as it connects: ``_new_conn`` below)."""
        for adapter in http.adapters.values():
            manager = adapter.poolmanager
            manager.pool_classes_by_scheme = {scheme: self._watched(pool)
                                              for scheme, pool in manager.pool_classes_by_scheme.items()}
            if isinstance(adapter, IPFilterAdapter):
                pin = adapter.build_connection_pool_key_attributes
                adapter.build_connection_pool_key_attributes = lambda *args, pin=pin, **kwargs: self.within(
                    pin, *args, **kwargs)
        return http

    def _watched(self, pool):
        deadline = self

        class Connection(pool.ConnectionCls):
            def connect(self):
                super().connect()
                deadline.watch(self.sock)

            def _new_conn(self):
                """urllib3 looks the name up as it connects: here, looked up first ``within`` the
                deadline, and the first address connected to (as requests_hardened pins it); TLS
                names the host still (``connect`` reads ``host`` after this)."""
                name = self._dns_host
                if _is_address(name):  # a pinned session's, or a URL's own address
                    return super()._new_conn()
                try:
                    found = deadline.within(socket.getaddrinfo, name, self.port, allowed_gai_family(),
                                            socket.SOCK_STREAM)
                except socket.gaierror as error:
                    raise NameResolutionError(self.host, self, error) from error
                except UnicodeError:  # a name IDNA cannot write: urllib3 refuses it in words, looking nothing up
                    return super()._new_conn()
                self._dns_host = found[0][4][0]
                try:
                    return super()._new_conn()
                finally:
                    self._dns_host = name

        return type(pool.__name__, (pool,), {"ConnectionCls": Connection})

    @contextmanager
    def kept(self):
        """Whatever the block raises once the deadline has passed is ``late()``: its socket was shut
        (a status line cut short reads as "could not be reached" otherwise)."""
        try:
            yield
        except Exception:
            self.check()
            raise

    def check(self):
        """``late()`` once the deadline has passed."""
        if self.passed or time.monotonic() > self.at:
            raise self.late()

    def timeout(self, most: tuple[float, float]) -> tuple[float, float]:
        """requests' (connect, read) timeouts: ``most``, or less when the deadline is nearer."""
        left = max(0.1, self.at - time.monotonic())
        return min(most[0], left), min(most[1], left)

    def read(self, response: requests.Response, most: int) -> bytes:
        """The body of ``response`` (requested with ``stream=True``), read as it arrives until its
        end or until more than ``most`` bytes came (then what came: longer than ``most`` says there
        is more); ``late()`` at the deadline, ``CutShort`` when the connection dropped before."""
        body = bytearray()
        while len(body) <= most:
            try:  # what has arrived (read1), not a full chunk: a body that trickles in meets the deadline
                chunk = response.raw.read1(64 * 1024, decode_content=True)
            except Exception as error:  # noqa: BLE001 - urllib3's read errors, a dropped connection: all alike
                self.check()  # shut at the deadline
                raise CutShort(f"the answer stopped halfway ({type(error).__name__})") from None
            self.check()  # an end too: the deadline's shutdown reads as one
            if not chunk:
                break
            body += chunk
        return bytes(body)
