"""Fixtures and helpers for the website widget's tests.

- ``host_site``: a customer's website on a *different origin* than the platform
  (``http://127.0.0.2:<port>``), serving a page that embeds the widget snippet.
- ``widget_channel``: Acme's bot with its widget enabled for that website.
- ``workers_done``: real Celery workers, and after the test every message answered (or not to
  be answered) and every reply delivered — messages a test leaves queued would otherwise be
  answered during a later test, or while the test database is emptied (a deadlocked TRUNCATE).
- ``open_socket`` / ``frames_until``: a real websocket client (``websockets``) against
  the live ASGI server, for the consumer's non-browser tests.

Import the fixtures into a test module with ``from tests.channels.widget_helpers import *``.
"""
import html
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from websockets.sync.client import connect

from tests.conftest import free_port, wait_for

__all__ = ["host_site", "widget_channel", "workers_done", "open_socket", "recv", "frames_until", "ws_url", "HostSite"]

HOST_PAGE = """<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Acme Bikes</title>
<style>/* a hostile host stylesheet: must not reach inside the widget */
button {{ background: rgb(255, 0, 0) !important; font-size: 40px !important; }}
.msg, .panel, .launcher {{ display: none !important; }}</style></head>
<body><h1>Acme Bikes</h1><p>Welcome to our shop.</p><button id="host-button">Host button</button>
<script src="{platform}/static/chatnexus/widget.js" data-bot="{bot}" async></script>
</body></html>"""


class HostSite:
    def __init__(self, host="127.0.0.2"):
        self.port = free_port()
        self.origin = f"http://{host}:{self.port}"
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                query = parse_qs(urlsplit(self.path).query)
                body = HOST_PAGE.format(
                    platform=html.escape(query.get("platform", [""])[0]), bot=html.escape(query.get("bot", [""])[0]),
                    lang=html.escape(query.get("lang", ["en"])[0]),
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                if query.get("csp"):  # a shop with a Content-Security-Policy
                    self.send_header("Content-Security-Policy", query["csp"][0])
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((host, self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        outer.url = self.origin + "/"

    def page_url(self, platform, bot_key, lang="en", csp=""):
        return f"{self.origin}/?" + urlencode({"platform": platform, "bot": bot_key, "lang": lang, "csp": csp})

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def host_site():
    site = HostSite()
    yield site
    site.stop()


@pytest.fixture
def widget_channel(transactional_db, acme, acme_bot, host_site):
    """Acme's bot, its widget allowed on the host site."""
    from channels_app.models import ChannelConfig

    return ChannelConfig.objects.create(
        organization=acme, bot=acme_bot, kind="widget", settings={"allowed_origins": [host_site.origin]}
    )


@pytest.fixture
def workers_done(celery_workers, transactional_db):
    yield celery_workers
    from bots.models import Message

    def settled():
        return not (Message.objects.filter(reply_state="pending").exists()
                    or Message.objects.filter(direction="out", delivery_status__in=["pending", "sending"]).exists())

    wait_for(settled, timeout=240, what="the workers to finish this test's messages")


def ws_url(live_server_url, public_key):
    return live_server_url.replace("http://", "ws://") + f"/ws/widget/{public_key}/"


def open_socket(live_server_url, public_key, origin, token=None, hello=True):
    """A widget socket that has said hello (with ``token``, or as a new visitor) as widget.js does."""
    ws = connect(ws_url(live_server_url, public_key), origin=origin, open_timeout=20, close_timeout=5)
    if hello:
        ws.send(json.dumps({"type": "hello", "token": token or ""}))
    return ws


def recv(ws, timeout=20):
    return json.loads(ws.recv(timeout=timeout))


def frames_until(ws, predicate, timeout=20):
    """Frames received up to and including the first one matching ``predicate``."""
    frames = []
    while True:
        frame = recv(ws, timeout)
        frames.append(frame)
        if predicate(frame):
            return frames
