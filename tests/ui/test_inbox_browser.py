"""The inbox thread page in Chromium: messages that arrive while it is open are drawn by
inbox.js (polling messages.json) the way the server draws them — the same stats, and the same
words for who wrote each message and what became of it ("Customer", "reply: Answered"); the
list says when new messages came in (polling its stamp) and shows them on request."""
import pytest
from django.utils import timezone
from playwright.sync_api import expect

from bots.hours import DAYS
from bots.models import Organization

from .conftest import log_in

pytestmark = pytest.mark.browser


def test_new_messages_appear_with_their_stats_while_the_thread_is_open(transactional_db, live_server_url, page,
                                                                       alice, acme_bot):
    from bots import services

    first = services.receive(bot=acme_bot, channel="widget", thread_id="v_browser01", text="When are you open?",
                             answer=False)
    log_in(page, live_server_url, "alice")
    page.goto(f"{live_server_url}/inbox/{first.conversation.id}/")
    expect(page.locator("h1")).to_have_text("Website visitor …er01")

    # while the page is open: a model reply, then a photo alone and its canned reply
    services.record_reply(first.message, "Nine to six, Monday to Saturday.",
                          {"new_tokens": 9, "drafted": 10, "accepted": 6, "acceptance_rate": 0.6, "tokens_per_s": 21.5,
                           "ttft_s": 0.12, "mean_tokens_per_forward": 1.8, "stop_reason": "repetition",
                           "bot_version": 2})
    photo = services.receive(bot=acme_bot, channel="widget", thread_id="v_browser01", text="", answer=False,
                             files=[("chain.png", "image/png", b"\x89PNG\r\n\x1a\n" + bytes(64))])
    services.canned_reply(photo)
    today = timezone.now().weekday()  # team hours that do not hold now: the handoff notice says so
    Organization.objects.filter(id=acme_bot.organization_id).update(team_hours={DAYS[(today + 3) % 7]: ["09:00", "10:00"]})
    services.receive(bot=acme_bot, channel="widget", thread_id="v_browser01", text="Can I talk to a human?")

    reply = page.locator("li.msg", has_text="Nine to six")
    expect(reply.locator(".meta")).to_contain_text("9 tokens · 21.5 tok/s · acceptance 0.60 · 1.80 tok/forward",
                                                   timeout=15_000)
    expect(reply.locator(".meta")).to_contain_text("· cut where it began repeating itself · version 2")
    # each may come a poll later than the reply (the page's poll ran between the writes above): 15 s each
    away = page.locator("li.msg.system")
    expect(away.locator(".meta")).to_contain_text("sent outside team hours", timeout=15_000)
    canned = page.locator("li.msg", has_text="I've kept your file for our team")
    expect(canned.locator(".meta")).to_contain_text("canned reply (no model)", timeout=15_000)
    expect(page.locator("li.msg", has_text="chain.png")).to_have_count(1, timeout=15_000)
    expect(page.locator("li.msg", has_text="When are you open?").locator(".meta")).to_contain_text("reply: Answered",
                                                                                                   timeout=15_000)
    expect(page.locator("main")).not_to_contain_text("undefined")  # (once all of it is drawn)
    drawn_by_js = page.locator("li.msg .who").all_inner_texts()
    page.reload()  # the server's own rendering says the same
    assert page.locator("li.msg .who").all_inner_texts() == drawn_by_js  # "Customer · ...", not "customer · ..."
    assert drawn_by_js[0].startswith("Customer ·") and drawn_by_js[1].startswith("Bot ·")
    expect(page.locator("li.msg", has_text="I've kept your file for our team").locator(".meta")).to_contain_text(
        "canned reply (no model)")
    expect(page.locator("li.msg", has_text="Nine to six").locator(".meta")).to_contain_text("9 tokens")
    expect(page.locator("li.msg", has_text="Nine to six").locator(".meta")).to_contain_text(
        "· cut where it began repeating itself · version 2")
    expect(page.locator("li.msg.system .meta")).to_contain_text("sent outside team hours")


def test_the_list_says_when_new_messages_came_in_and_shows_them_on_request(transactional_db, live_server_url,
                                                                           page, alice, acme_bot):
    from bots import services

    services.receive(bot=acme_bot, channel="widget", thread_id="v_listed01", text="Hello", answer=False)
    log_in(page, live_server_url, "alice")
    page.goto(f"{live_server_url}/inbox/")
    news = page.locator("#inbox-news")
    expect(page.locator("tr.conversation")).to_have_count(1)
    expect(news).to_be_hidden()
    services.receive(bot=acme_bot, channel="whatsapp", thread_id="whatsapp:+15550001111", text="Are you open?",
                     answer=False, contact={"phone": "+15550001111"})
    expect(news).to_be_visible(timeout=15_000)
    expect(page.locator("tr.conversation")).to_have_count(1)  # the table is not redrawn under the agent
    news.get_by_role("link", name="Show it").click()
    expect(page.locator("tr.conversation")).to_have_count(2)
    expect(page.locator("#conversations")).to_contain_text("+15550001111")
    expect(news).to_be_hidden()


def test_tags_are_added_with_enter_and_taken_off_with_their_cross(transactional_db, live_server_url, page, alice,
                                                                  acme_bot):
    from bots import services

    first = services.receive(bot=acme_bot, channel="widget", thread_id="v_tagged01", text="My invoice is wrong",
                             answer=False)
    log_in(page, live_server_url, "alice")
    page.goto(f"{live_server_url}/inbox/{first.conversation.id}/")
    for name in ("billing", "urgent"):
        page.fill("#tag-add", name)
        page.press("#tag-add", "Enter")  # the add form's own button: never a chip's ×
        expect(page.locator("#tags .tag", has_text=name)).to_be_visible()
    page.get_by_role("button", name="Remove the tag billing").click()
    expect(page.locator("#tags .tag")).to_have_count(1)
    expect(page.locator("#tags .tag")).to_contain_text("urgent")
    page.goto(f"{live_server_url}/inbox/?tag=urgent")
    expect(page.locator("tr.conversation")).to_have_count(1)


def test_an_agent_ticks_every_conversation_on_the_page_and_closes_them(transactional_db, live_server_url, page,
                                                                         alice, acme_bot):
    from bots import services
    from bots.models import Conversation

    for visitor in ("v_bulk01", "v_bulk02", "v_bulk03"):
        services.receive(bot=acme_bot, channel="widget", thread_id=visitor, text="Hello", answer=False)
    log_in(page, live_server_url, "alice")
    page.goto(f"{live_server_url}/inbox/?status=open")
    expect(page.locator("#bulk-assignee")).to_be_hidden()  # shown only for the action that takes it
    page.get_by_label("Tick every conversation on this page").check()
    assert page.locator("input.tick:checked").count() == 3
    page.locator("input.tick").first.uncheck()
    assert not page.get_by_label("Tick every conversation on this page").is_checked()
    page.get_by_label("With the ticked conversations").select_option("tag")
    expect(page.locator("#bulk-tag")).to_be_visible()
    page.locator("#bulk-tag").fill("Follow up")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("body")).to_contain_text("Tagged “Follow up”: 2 conversations.")
    expect(page.locator("#conversations .tag", has_text="Follow up")).to_have_count(2)

    page.get_by_label("Tick every conversation on this page").check()
    page.get_by_label("With the ticked conversations").select_option("close")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("body")).to_contain_text("Closed 3 conversations.")
    assert page.url.endswith("/inbox/?status=open")  # back to the same filtered list, now empty
    expect(page.locator("#conversations")).to_contain_text("No conversations yet.")
    assert set(Conversation.objects.filter(bot=acme_bot).values_list("status", flat=True)) == {"closed"}


def test_a_message_that_comes_before_the_first_poll_is_shown(transactional_db, live_server_url, page, alice, acme_bot):
    from bots import services

    first = services.receive(bot=acme_bot, channel="widget", thread_id="v_early01", text="Do you fix e-bikes?",
                             answer=False)
    log_in(page, live_server_url, "alice")

    def customer_writes_first(route):  # after the server drew the page, before inbox.js first asks
        services.receive(bot=acme_bot, channel="widget", thread_id="v_early01", text="And what does it cost?",
                         answer=False)
        route.continue_()

    page.route(lambda url: f"/inbox/{first.conversation.id}/messages.json" in url, customer_writes_first, times=1)
    page.goto(f"{live_server_url}/inbox/{first.conversation.id}/")
    expect(page.locator("li.msg", has_text="And what does it cost?")).to_be_visible(timeout=15_000)
    expect(page.locator("li.msg")).to_have_count(2)


def test_a_message_drawn_again_by_the_page_keeps_its_line_breaks(transactional_db, live_server_url, page, alice,
                                                                 acme_bot):
    from bots import services

    first = services.receive(bot=acme_bot, channel="widget", thread_id="v_lines01",
                             text="My chain broke.\nCan you fix it today?", answer=False)
    log_in(page, live_server_url, "alice")
    page.goto(f"{live_server_url}/inbox/{first.conversation.id}/")
    text = page.locator("li.msg .text").first
    assert text.inner_text() == "My chain broke.\nCan you fix it today?"  # the server's drawing (<br>)
    services.receive(bot=acme_bot, channel="widget", thread_id="v_lines01", text="Hello?", answer=False)
    expect(page.locator("li.msg", has_text="Hello?")).to_be_visible(timeout=15_000)  # inbox.js drew the list again
    assert text.inner_text() == "My chain broke.\nCan you fix it today?"  # its textContent, lines kept


def test_a_half_typed_reply_survives_the_thread_actions_and_goes_once_sent(transactional_db, live_server_url, page,
                                                                           alice, acme_bot):
    """Take over, give back, tag, close: each posts and reloads the page. The reply being written is kept
    (per conversation, for the tab) until it is sent."""
    from bots import services

    first = services.receive(bot=acme_bot, channel="widget", thread_id="v_draft01", text="My chain broke.",
                             answer=False)
    other = services.receive(bot=acme_bot, channel="widget", thread_id="v_draft02", text="Hello", answer=False)
    log_in(page, live_server_url, "alice")
    page.goto(f"{live_server_url}/inbox/{first.conversation.id}/")
    box = page.get_by_label("Reply as alice")
    box.press_sequentially("Bring it in today, we")  # typed, not pasted in one go
    page.get_by_role("button", name="Take over").click()
    expect(page.get_by_role("button", name="Give back to the bot")).to_be_visible()
    expect(box).to_have_value("Bring it in today, we")
    box.press_sequentially(" fix it")
    page.fill("#tag-add", "repairs")
    page.press("#tag-add", "Enter")
    expect(page.locator("#tags .tag", has_text="repairs")).to_be_visible()
    expect(box).to_have_value("Bring it in today, we fix it")

    page.goto(f"{live_server_url}/inbox/{other.conversation.id}/")
    expect(page.get_by_label("Reply as alice")).to_have_value("")  # another conversation's draft is its own

    page.goto(f"{live_server_url}/inbox/{first.conversation.id}/")
    expect(box).to_have_value("Bring it in today, we fix it")
    page.get_by_role("button", name="Send", exact=True).click()
    expect(page.locator("li.msg", has_text="Bring it in today, we fix it")).to_be_visible()
    expect(box).to_have_value("")
    page.reload()
    expect(box).to_have_value("")  # sent: not brought back
