"""The platform's own pages may embed the widget at whatever address of the platform the manager
opened them (``localhost`` while PUBLIC_URL says ``127.0.0.1``): the Try page loads the script from
that address, and the origin checks take the request's own origin when its host is one the site
answers on (``ALLOWED_HOSTS``). Another site's page, or a page on a name rebound to this machine's
address, is still refused."""
import html
import re
import socket

import pytest
from django.urls import reverse
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from channels_app.models import ChannelConfig
from tests.channels.widget_helpers import *  # noqa: F401,F403 - fixtures and helpers
from tests.channels.widget_helpers import recv

SHOP = "https://shop.example.com"
MANAGER = "localhost:8123"  # the address the manager opened: not PUBLIC_URL's (127.0.0.1:8000 under test)


@pytest.fixture
def widget(acme, acme_bot):
    """Acme's widget, allowed on the shop only."""
    return ChannelConfig.objects.create(organization=acme, bot=acme_bot, kind="widget",
                                        settings={"allowed_origins": [SHOP], "file_uploads": False})


def test_the_try_page_loads_the_script_from_the_address_the_manager_is_at(client, alice, widget, acme_bot):
    client.force_login(alice)
    page = client.get(reverse("channels:widget-try", args=[acme_bot.id]), HTTP_HOST=MANAGER).content.decode()
    src = html.unescape(re.search(r'<script src="([^"]+)" data-bot=', page)[1])
    assert src == "/static/chatnexus/widget.js"  # a path: the browser asks the address it is at
    assert "127.0.0.1:8000" not in page


def test_the_config_is_served_to_the_platforms_own_origin_as_the_manager_reached_it(client, widget, acme_bot):
    url = reverse("channels:widget-config", args=[acme_bot.public_key])
    response = client.get(url, HTTP_HOST=MANAGER, HTTP_ORIGIN=f"http://{MANAGER}")
    assert response.status_code == 200 and response["Access-Control-Allow-Origin"] == f"http://{MANAGER}"
    response = client.get(url, HTTP_HOST=MANAGER, HTTP_ORIGIN="https://evil.example")
    assert response.status_code == 403
    # the same address over another scheme, or another port, is another origin
    assert client.get(url, HTTP_HOST=MANAGER, HTTP_ORIGIN=f"https://{MANAGER}").status_code == 403
    assert client.get(url, HTTP_HOST=MANAGER, HTTP_ORIGIN="http://localhost:8124").status_code == 403


def test_an_upload_from_the_platforms_own_origin_passes_the_origin_check(client, widget, acme_bot):
    url = reverse("channels:widget-upload", args=[acme_bot.public_key])
    # files are off for this widget: "uploads_off" is the next check's answer, so the origin passed
    response = client.post(url, {}, HTTP_HOST=MANAGER, HTTP_ORIGIN=f"http://{MANAGER}")
    assert (response.status_code, response.json()["code"]) == (403, "uploads_off")
    response = client.post(url, {}, HTTP_HOST=MANAGER, HTTP_ORIGIN="https://evil.example")
    assert (response.status_code, response.json()["code"]) == (403, "forbidden_origin")


# ---------------------------------------------------------------------------
# The websocket: Django checks no socket's Host, so the widget's check must


def socket_as(live_server_url, public_key, host, origin):
    """A widget socket to the live server, its Host header ``host`` (connected to the server's own
    address whatever the name, as a browser would once DNS said the name is this machine)."""
    port = int(live_server_url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    ws = connect(f"ws://{host}/ws/widget/{public_key}/", sock=sock, origin=origin, open_timeout=20, close_timeout=5)
    ws.send('{"type": "hello", "token": ""}')
    return ws


def close_code(ws):
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            ws.recv(timeout=20)
    return closed.value.rcvd.code if closed.value.rcvd else None


def test_a_socket_from_the_platforms_own_origin_is_accepted_at_any_of_its_hosts(widget_channel, live_server_url):
    port = live_server_url.rsplit(":", 1)[1]
    key = widget_channel.bot.public_key  # allowed on the host site only; PUBLIC_URL is 127.0.0.1:<port>
    ws = socket_as(live_server_url, key, f"localhost:{port}", f"http://localhost:{port}")
    assert recv(ws)["type"] == "session" and recv(ws)["type"] == "history"
    ws.close()


@pytest.mark.parametrize("host,origin", [
    ("127.0.0.1:{port}", "https://evil.example"),  # another site's page
    ("localhost:{port}", "http://127.0.0.2:{port}"),  # another page of this machine, not the one connected to
    ("rebound.example:{port}", "http://rebound.example:{port}"),  # DNS rebinding: a name the site does not answer on
])  # fmt: skip
def test_a_socket_from_another_origin_is_refused_even_when_its_host_matches(widget_channel, live_server_url, host,
                                                                             origin):
    from bots.models import Conversation

    port = live_server_url.rsplit(":", 1)[1]
    ws = socket_as(live_server_url, widget_channel.bot.public_key, host.format(port=port), origin.format(port=port))
    assert recv(ws)["code"] == "forbidden_origin" and close_code(ws) == 4403
    assert not Conversation.objects.exists()
