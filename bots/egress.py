"""Calls out to URLs that members type (the API channel's reply webhook, knowledge fetched from
a web page): never to the server's own network unless the deployment allows it, so a member
cannot make the server reach its database, a cloud metadata address or an admin port."""
from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit


def refused_address(url: str, allow_private: bool, setting: str, what: str = "the URL") -> str:
    """Why ``url`` may not be called ('' when it may): not http(s), or a host that resolves to an
    address of this server's own network (loopback, private, link-local, reserved) while
    ``allow_private`` (the setting named ``setting``) is off. Raises OSError when the name does
    not resolve."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{what} must start with http:// or https:// and name a host"
    if allow_private:
        return ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    for *_, sockaddr in socket.getaddrinfo(parts.hostname, port, proto=socket.IPPROTO_TCP):
        address = ipaddress.ip_address(sockaddr[0].split("%")[0])
        if not address.is_global or address.is_multicast:
            host = f"{address}" if parts.hostname == str(address) else f"{parts.hostname} ({address})"
            return f"{host} is an address of this server's own network (set {setting}=1 to allow it)"
    return ""
