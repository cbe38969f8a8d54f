"""The README's first command, as a newcomer uses it: ``manage.py demo`` then ``manage.py serve``
(the embedded default: SQLite, in-memory broker and channel layer, workers in the process),
driven in Chromium. Log in as the demo user, open every page of the top bar and of the demo
bot, ask one of its suggested questions in its widget on the "Try it" page, find the conversation in
the inbox, and the rated reply under its version in the builder. No page may fail and the server may log no traceback."""
import sys

from playwright.sync_api import expect

from tests.conftest import Service, embedded_env, free_port, manage

PAGES = ["/bots/", "/inbox/", "/dashboard/", "/team/", "/accounts/api-token/", "/inbox/replies/", "/api/docs/"]


def test_a_newcomer_logs_in_opens_every_page_and_talks_to_the_demo_bot(tmp_path, page):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = embedded_env(tmp_path, PUBLIC_URL=base, CHATNEXUS_DTYPE="fp32", CHATNEXUS_MAX_REPLY_TOKENS="24",
                       PYTHONUNBUFFERED="1")
    manage(env, "migrate", "--noinput", timeout=180)
    assert "Log in demo / demo-password" in manage(env, "demo", timeout=180)
    server = Service("serve", [sys.executable, "manage.py", "serve", "--port", str(port)], env, "ChatNexus is up",
                     tmp_path)
    failed = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.on("requestfailed",  # a request cut short by the next page.goto is ERR_ABORTED: not a failure
            lambda r: failed.append(f"{r.failure} {r.url}") if r.failure != "net::ERR_ABORTED" else None)
    try:
        server.wait_ready(timeout=120)
        server.wait_model("Model ready in")

        page.goto(f"{base}/")
        page.fill("#id_username", "demo")
        page.fill("#id_password", "demo-password")
        page.click("form button[type=submit]")
        expect(page).to_have_url(f"{base}/bots/")
        page.get_by_role("link", name="Ava").first.click()
        expect(page.locator("h1")).to_have_text("Ava")
        builder = page.url
        for path in PAGES:
            response = page.goto(base + path)
            assert response.status == 200, path
        page.goto(builder)
        page.get_by_role("link", name="Channels").click()
        expect(page.locator("body")).to_contain_text("Website widget")

        with page.expect_popup() as popup:  # "Try it on a blank page" opens a new tab
            page.get_by_role("link", name="Try it on a blank page").click()
        widget_page = popup.value
        widget_page.get_by_role("button", name="Open chat with Ava").click()
        panel = widget_page.get_by_role("dialog", name="Chat with Ava")
        panel.get_by_role("button", name="Is delivery free?").click()  # one of the demo's suggested questions
        expect(panel.get_by_role("button", name="Helpful", exact=True)).to_be_visible(timeout=180_000)  # reply done
        answer = panel.locator(".msg.bot:not(.greeting)").first.inner_text().strip()
        assert answer

        page.goto(f"{base}/inbox/")
        row = page.locator("tr.conversation", has_text="Website widget")
        expect(row).to_have_count(1)
        row.get_by_role("link").click()
        expect(page.locator(".msg.out").first).to_contain_text(answer[:20])
        expect(page.locator(".msg.in").first).to_contain_text("Is delivery free?")

        helpful = widget_page.get_by_role("button", name="Helpful", exact=True)
        helpful.click()  # rate it: the Versions tab counts it
        # Pressed once the server's "rated" frame came back, i.e. once the rating is stored. (Looking again
        # with page.goto(builder + "#versions") did not: a second goto to the same address with a
        # fragment is a same-document navigation, which loads nothing, so a rating stored after the
        # first look was never seen.)
        expect(helpful).to_have_attribute("aria-pressed", "true")
        page.goto(builder + "#versions")  # on SQLite, whose JSON lookups behind the counts differ from PostgreSQL's
        version = page.locator("#version-list tr[data-version='1']")
        expect(version).to_contain_text("First version")
        expect(version.locator("td").nth(3)).to_have_text("1")  # the reply just given
        expect(version.locator("td").nth(4)).to_have_text("1")  # rated helpful
    finally:
        server.stop()
    assert failed == []
    assert "Traceback" not in server.output()
