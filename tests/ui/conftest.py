"""Browser-test helpers: log in through the real login form."""
from playwright.sync_api import expect

PASSWORD = "correct-horse-battery"  # the named users' password (tests/conftest.py)


def log_in(page, base_url, username, password=PASSWORD):
    page.goto(f"{base_url}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("form button[type=submit]")
    expect(page).to_have_url(f"{base_url}/bots/")
