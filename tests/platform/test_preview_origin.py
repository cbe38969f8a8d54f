"""Which pages may open the builder's live test chat (``ws/preview/<bot>/``) for a signed-in manager:
only this site's own, by origin, scheme included — PUBLIC_URL's, or the one the socket reached it at
when its Host is one the site answers on (ALLOWED_HOSTS), as the widget checks its Try page. It
compared host and port alone: a plain-http page on an https site's name, a page on a name pointed at
this machine (DNS rebinding) and an https origin on a plain server all drove the chat.

Real websockets against real ASGI servers (uvicorn): ``live_server_url`` (PUBLIC_URL plain http, on
127.0.0.1) and one published at an https PUBLIC_URL behind a TLS-ending proxy (this module's).
"""
import json
import socket
import sys
from urllib.parse import urlsplit

import pytest
from django.test import Client
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.conftest import Service, free_port, service_env

PUBLIC = "https://chat.example.com"


@pytest.fixture(scope="module")
def https_site(django_db_setup, tmp_path_factory):
    """An ASGI server published at https://chat.example.com: a proxy in front ends TLS and passes
    the socket on as plain ws, with Host rewritten or kept."""
    port = free_port()
    args = [sys.executable, "-m", "uvicorn", "chatnexus.asgi:application", "--host", "127.0.0.1", "--port", str(port)]
    env = service_env(PUBLIC_URL=PUBLIC, ALLOWED_HOSTS="chat.example.com,127.0.0.1,localhost")
    server = Service("asgi-https", args, env, "Application startup complete", tmp_path_factory.mktemp("asgi-https"))
    try:
        server.wait_ready()
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def session_cookie(user) -> str:
    client = Client()
    client.force_login(user)  # a manager signed in on the site: the cookie the browser sends along
    return f"sessionid={client.cookies['sessionid'].value}"


def open_chat(server_url, bot, cookie, origin, host=None, **headers):
    """Open the bot's test chat from a page at ``origin`` as a browser would (its Host header
    ``host``, default the server's address): "ready", or the code the socket was closed with."""
    address = urlsplit(server_url)
    sock = socket.create_connection((address.hostname, address.port), timeout=20)
    url = f"ws://{host or address.netloc}/ws/preview/{bot.id}/"
    with connect(url, sock=sock, origin=origin, additional_headers={"Cookie": cookie, **headers}, proxy=None,
                 open_timeout=20, close_timeout=5) as ws:
        try:
            return json.loads(ws.recv(timeout=20))["event"]
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None


def test_the_sites_own_pages_open_it_and_an_https_origin_on_a_plain_socket_does_not(
        transactional_db, alice, acme_bot, live_server_url):
    cookie = session_cookie(alice)
    port = urlsplit(live_server_url).port
    assert open_chat(live_server_url, acme_bot, cookie, live_server_url) == "ready"  # PUBLIC_URL's
    # the site's own as it was reached: another name it answers on (ALLOWED_HOSTS)
    assert open_chat(live_server_url, acme_bot, cookie, f"http://localhost:{port}", host=f"localhost:{port}") == "ready"
    # the same host and port, another scheme: not a page of this (plain http) site
    assert open_chat(live_server_url, acme_bot, cookie, f"https://127.0.0.1:{port}") == 4403
    assert open_chat(live_server_url, acme_bot, cookie, f"https://localhost:{port}", host=f"localhost:{port}") == 4403


def test_a_name_the_site_does_not_answer_on_is_refused(transactional_db, alice, acme_bot, live_server_url):
    """A name its owner points at this machine (DNS rebinding): the page there sends that name as
    Origin and Host alike, which the host-only comparison took for the site's own."""
    port = urlsplit(live_server_url).port
    origin, host = f"http://rebound.example:{port}", f"rebound.example:{port}"
    assert open_chat(live_server_url, acme_bot, session_cookie(alice), origin, host=host) == 4403


def test_an_https_site_takes_no_plain_http_page(transactional_db, alice, acme_bot, https_site):
    cookie = session_cookie(alice)
    # the proxy rewrites Host to the server's address, or keeps the public name (with X-Forwarded-Proto)
    assert open_chat(https_site, acme_bot, cookie, PUBLIC) == "ready"
    assert open_chat(https_site, acme_bot, cookie, PUBLIC, host="chat.example.com",
                     **{"X-Forwarded-Proto": "https"}) == "ready"
    # a page served over plain http on the site's name (a network attacker's): refused, whatever Host
    assert open_chat(https_site, acme_bot, cookie, "http://chat.example.com") == 4403
    assert open_chat(https_site, acme_bot, cookie, "http://chat.example.com", host="chat.example.com") == 4403
