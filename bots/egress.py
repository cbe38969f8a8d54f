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
"""
from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

import requests
from requests_hardened import Config, HTTPSession
from requests_hardened.ip_filter import InvalidIPAddress as Refused  # a requests.RequestException

__all__ = ["Refused", "refusal", "refused_address", "refused_host", "session"]


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
    For protocols without a pinned session (SMTP, IMAP), call it right before connecting."""
    if allow_private:
        return ""
    try:
        found = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except UnicodeError:  # a label IDNA cannot encode (too long once in punycode): no such name
        raise OSError(f"{host} is not a valid host name") from None
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
