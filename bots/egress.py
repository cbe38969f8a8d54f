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
"""
from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

import requests
from requests_hardened import Config, HTTPSession
from requests_hardened.ip_filter import InvalidIPAddress as Refused  # a requests.RequestException

__all__ = ["HostRefused", "Refused", "connect", "refusal", "refused_address", "refused_host", "session"]


class HostRefused(OSError):
    """``connect`` would not connect: its text is ``refused_host``'s sentence."""


def refused_address(url: str, allow_private: bool, setting: str, what: str = "the URL") -> str:
    """Why ``url`` may not be called ('' when it may): not http(s), or a host that resolves to an
    address of this server's own network (loopback, private, link-local, reserved) while
    ``allow_private`` (the setting named ``setting``) is off. Raises OSError when the name does
    not resolve."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{what} must start with http:// or https:// and name a host"
    try:
        port = parts.port
    except ValueError:  # ":99999" passes Django's URLValidator
        return f"{what} has a port that is not a number from 1 to 65535"
    return refused_host(parts.hostname, port or (443 if parts.scheme == "https" else 80), allow_private, setting)


def refused_host(host: str, port: int, allow_private: bool, setting: str) -> str:
    """Why ``host`` may not be connected to ('' when it may): it resolves to an address of this
    server's own network while ``allow_private`` is off. Raises OSError when it does not resolve.
    What a form says when a host is saved; the connection itself goes through ``session`` or ``connect``."""
    if allow_private:
        return ""
    try:
        return _refused(host, _resolve(host, port), setting)
    except UnicodeError:  # a label IDNA cannot encode (too long once in punycode): no such name
        raise OSError(f"{host} is not a valid host name") from None


def connect(host: str, port: int, allow_private: bool, setting: str, timeout=socket._GLOBAL_DEFAULT_TIMEOUT,
            source_address=None) -> socket.socket:
    """A TCP connection to ``host`` for protocols without a pinned session (SMTP, IMAP): the name
    resolved once, every address it answers checked as ``refused_host`` checks them, and the
    connection made to those very addresses, in order until one answers, as
    ``socket.create_connection`` does. A name that answers a public address here and 127.0.0.1 to
    the next lookup therefore never reaches 127.0.0.1: there is no next lookup. Raises
    ``HostRefused`` (nothing connected) when an address is of this server's own network while
    ``allow_private`` is off; OSError when the name does not resolve or no address answers;
    UnicodeError for a name IDNA cannot write, as ``socket.create_connection`` does."""
    found = _resolve(host, port)
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


def _resolve(host: str, port: int) -> list:
    """``getaddrinfo``'s answers for a TCP connection to ``host``: (family, type, proto, name, sockaddr)."""
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)


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
    Redirects are never followed by the session (callers that follow them check every hop)."""
    if allow_private:
        return requests.Session()
    return HTTPSession(Config(ip_filter_enable=True, ip_filter_allow_loopback_ips=False, never_redirect=True,
                              default_timeout=None))


def refusal(error: Refused, url: str, setting: str) -> str:
    """``refused_address``'s sentence for an address the session refused at connect time."""
    return _own_network(urlsplit(url).hostname or url, error.args[0] if error.args else "?", setting)


def _own_network(hostname: str, address, setting: str) -> str:
    host = f"{address}" if hostname == str(address) else f"{hostname} ({address})"
    return f"{host} is an address of this server's own network (set {setting}=1 to allow it)"
