"""`manage.py serve` (what scripts/run.sh runs): without PUBLIC_URL, the platform's address is the
one it serves on. Its start while the model loads, and a model it cannot load:
test_serve_early_pages.py."""
import html
import re
import sys

import pytest
import requests

from bots.management.commands.serve import adopt_public_url, own_address
from tests.conftest import Service, embedded_env, free_port, manage


def test_without_public_url_the_platform_is_where_serve_listens(tmp_path):
    """`scripts/run.sh --port 8123`: the widget snippet and the Try page pointed at port 8000."""
    port = free_port()
    env = embedded_env(tmp_path)
    env.pop("PUBLIC_URL", None)  # tests/settings.py sets one for the suite
    manage(env, "migrate", "--noinput", timeout=180)
    bot_id = re.search(r"Bot +Ava \(id (\d+)", manage(env, "demo", timeout=180))[1]
    server = Service("serve", [sys.executable, "manage.py", "serve", "--port", str(port), "--no-preload"], env,
                     "Uvicorn running", tmp_path)
    try:
        server.wait_ready(timeout=180)
        base = f"http://127.0.0.1:{port}"
        assert f"ChatNexus is up: {base}/" in server.output() and "PUBLIC_URL is unset" in server.output()
        browser = signed_in_as_demo(base)
        page = html.unescape(browser.get(f"{base}/channels/bots/{bot_id}/", timeout=30).text)
        assert f'<script src="{base}/static/chatnexus/widget.js"' in page and ":8000" not in page
    finally:
        server.stop()
    assert "Traceback" not in server.output()


def signed_in_as_demo(base) -> requests.Session:
    """A browser signed in at ``base`` as ``manage.py demo``'s user, on its first page."""
    browser = requests.Session()
    login = browser.get(f"{base}/accounts/login/", timeout=30)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text)[1]
    signed_in = browser.post(login.url, data={"csrfmiddlewaretoken": token, "username": "demo",
                                              "password": "demo-password"}, headers={"Referer": login.url}, timeout=30)
    assert signed_in.url == f"{base}/bots/"
    return browser


@pytest.mark.parametrize("host,address", [("127.0.0.1", "http://127.0.0.1:8123"), ("0.0.0.0", "http://127.0.0.1:8123"),
                                          ("::", "http://[::1]:8123"), ("LocalHost", "http://localhost:8123"),
                                          ("192.0.2.7", "http://192.0.2.7:8123")])
def test_serve_names_the_address_a_browser_on_this_machine_opens(host, address):
    assert own_address(host, 8123) == address
    assert own_address("127.0.0.1", 80) == "http://127.0.0.1"


def test_an_adopted_address_is_a_host_the_site_answers_on_unless_hosts_are_set(settings, monkeypatch):
    monkeypatch.delenv("ALLOWED_HOSTS", raising=False)
    monkeypatch.delenv("CSRF_TRUSTED_ORIGINS", raising=False)
    settings.ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]"]
    adopt_public_url("http://192.0.2.7:8123")
    assert settings.PUBLIC_URL == "http://192.0.2.7:8123"
    assert settings.ALLOWED_HOSTS == ["localhost", "127.0.0.1", "[::1]", "192.0.2.7"]
    assert settings.CSRF_TRUSTED_ORIGINS == ["http://192.0.2.7:8123"]
    adopt_public_url("http://[::1]:8123")
    assert settings.ALLOWED_HOSTS == ["localhost", "127.0.0.1", "[::1]", "192.0.2.7"]  # already there

    monkeypatch.setenv("ALLOWED_HOSTS", "app.internal")  # set: the operator's list, nothing added
    settings.ALLOWED_HOSTS = ["app.internal"]
    adopt_public_url("http://192.0.2.7:8123")
    assert settings.ALLOWED_HOSTS == ["app.internal"]
