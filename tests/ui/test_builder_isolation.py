"""Another organisation's user can neither open a bot's builder nor its preview websocket."""
import pytest
from playwright.sync_api import expect

from .conftest import log_in

pytestmark = pytest.mark.browser

OPEN_SOCKET = """
(path) => new Promise((resolve) => {
  const ws = new WebSocket("ws://" + location.host + path);
  ws.onmessage = (e) => resolve({message: JSON.parse(e.data)});
  ws.onclose = (e) => resolve({closed: e.code});
})
"""


def test_it_hides_the_builder_and_refuses_the_preview_socket_to_another_organisation(
    transactional_db, live_server_url, page, charlie, acme_bot
):
    log_in(page, live_server_url, "charlie")  # Globex's owner
    expect(page.locator("main")).not_to_contain_text("Ava")

    response = page.goto(f"{live_server_url}/bots/{acme_bot.id}/")
    assert response.status == 404

    page.goto(f"{live_server_url}/bots/")
    result = page.evaluate(OPEN_SOCKET, f"/ws/preview/{acme_bot.id}/")
    assert result == {"closed": 4403}


def test_it_opens_the_preview_socket_for_the_bots_manager(transactional_db, live_server_url, page, alice, acme_bot):
    # The same socket for Acme's owner: the refusal above is about the organisation.
    log_in(page, live_server_url, "alice")
    page.goto(f"{live_server_url}/bots/{acme_bot.id}/")
    expect(page.locator("#chat-status")).to_have_attribute("data-state", "open")
    result = page.evaluate(OPEN_SOCKET, f"/ws/preview/{acme_bot.id}/")
    assert result == {"message": {"event": "ready", "bot": acme_bot.id}}
