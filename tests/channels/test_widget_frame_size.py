"""The largest websocket frame ``manage.py serve`` takes (what compose's ``web`` and the Dockerfile
run): the longest a widget message can make, not uvicorn's 16 MiB (32 of them queued per socket).

Against ``serve`` itself, started here on the test database with ``REDIS_URL`` set (web only, no
workers): the suite's other live server runs uvicorn directly, without serve's settings.
"""
import json
import sys

import pytest
from websockets.exceptions import ConnectionClosed

from bots.management.commands.serve import ws_max_size
from tests.channels.widget_helpers import open_socket, recv
from tests.conftest import Service, free_port, service_env

SHOP = "https://shop.example"


@pytest.fixture
def served(transactional_db, _redis_clean, tmp_path):
    """``manage.py serve``'s URL."""
    port = free_port()
    server = Service("serve", [sys.executable, "manage.py", "serve", "--port", str(port)],
                     service_env(PUBLIC_URL=f"http://127.0.0.1:{port}"), "Application startup complete", tmp_path)
    try:
        server.wait_ready()
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def widget(transactional_db, acme, acme_bot):
    """Acme's bot, its widget on the shop's site, taking the longest messages the form allows."""
    from channels_app.models import ChannelConfig

    return ChannelConfig.objects.create(organization=acme, bot=acme_bot, kind="widget",
                                        settings={"allowed_origins": [SHOP], "max_message_chars": 20_000})


def padded_ping(size):
    """A ping frame of exactly ``size`` bytes (the consumer reads only its type: nothing is stored)."""
    frame = json.dumps({"type": "ping", "pad": ""})
    return json.dumps({"type": "ping", "pad": "x" * (size - len(frame))})


def test_a_frame_over_the_longest_message_closes_the_socket_and_one_within_it_is_taken(served, widget):
    ws = open_socket(served, widget.bot.public_key, SHOP)
    assert [recv(ws)["type"], recv(ws)["type"]] == ["session", "history"]
    assert len(padded_ping(ws_max_size()).encode()) == ws_max_size() < 256 * 1024
    ws.send(padded_ping(ws_max_size()))
    assert recv(ws) == {"type": "pong"}

    ws.send(padded_ping(ws_max_size() + 1))
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=20)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009  # message too big
