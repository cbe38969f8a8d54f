"""The whole builder in Chromium: sign up, create a bot with a persona and a FAQ,
publish, ask the live test chat the FAQ question, and watch the real model's
reply stream in token by token with its decoding stats.

Real services throughout: uvicorn (HTTP + websockets), Celery workers on Redis
with the bundled model, PostgreSQL, Chromium.
"""
import re

import pytest
from playwright.sync_api import expect

from bots.models import Bot, Message
from tests.conftest import as_worker, wait_for

from .conftest import log_in

pytestmark = pytest.mark.browser

QUESTION = "What are your opening hours?"
ANSWER = "We are open Monday to Friday, 9am to 6pm."


def test_it_builds_publishes_and_streams_a_preview_reply(transactional_db, celery_workers, live_server_url, page,
                                                         mailbox):
    base = live_server_url

    # Sign up: a new user and organisation, once the address is confirmed and the password chosen on
    # the mailed link's page (the server sends mail), landing on the (empty) bot list.
    page.goto(f"{base}/accounts/signup/")
    page.fill("#id_username", "dana")
    page.fill("#id_email", "dana@example.com")
    page.fill("#id_organization_name", "Dana's Bikes")
    page.click("form button[type=submit]")
    expect(page.locator("h1")).to_have_text("Check your email")
    confirm = wait_for(lambda: next((re.search(r"/accounts/signup/[^\s/]+/", m["message"].get_content())
                                     for m in mailbox.messages if m["to"] == ["dana@example.com"]), None),
                       what="the sign-up mail")
    page.goto(base + confirm.group(0))  # the link's page asks for the password: only the mailbox's holder chooses it
    page.fill("#id_password1", "a-long-and-unusual-passphrase")
    page.fill("#id_password2", "a-long-and-unusual-passphrase")
    page.click("main form button[type=submit]")
    expect(page).to_have_url(f"{base}/bots/")
    expect(page.locator("main")).to_contain_text("No bots yet")

    # Create a bot and give it a persona.
    page.click("#new-bot")
    page.fill("#id_name", "Ava")
    page.fill("#id_company", "Dana's Bikes")
    page.click("#create-bot button[type=submit]")
    expect(page.locator("h1")).to_have_text("Ava")
    bot = Bot.objects.get(name="Ava", organization__name="Dana's Bikes")
    expect(page).to_have_url(re.compile(rf"/bots/{bot.id}/#persona$"))

    page.fill("#id_role", "bike shop assistant")
    page.fill("#id_avatar_color", "#0e7490")
    # The system-prompt preview follows the unsaved form.
    expect(page.locator("#prompt-preview")).to_contain_text("You are Ava, the bike shop assistant at Dana's Bikes.")
    page.click("a[data-tab=voice]")
    page.select_option("#id_tone", "friendly")
    page.click("a[data-tab=behaviour]")
    page.fill("#id_suggestions", f"{QUESTION}\nDo you sell helmets?")
    page.click("#save-draft")
    expect(page.locator(".flash")).to_contain_text("Draft saved")
    expect(page.locator("a[data-tab=behaviour]")).to_have_class(re.compile("active"))

    # Knowledge: one FAQ pair.
    page.click("a[data-tab=knowledge]")
    page.fill("#faq-form #id_title", QUESTION)
    page.fill("#faq-form #id_body", ANSWER)
    page.click("#add-faq")
    expect(page.locator("#faq-list")).to_contain_text(QUESTION)
    expect(page.locator("#panel-knowledge")).to_be_visible()

    # The preview shows the FAQ retrieved for a sample question.
    page.fill("#sample-question", QUESTION)
    expect(page.locator("#prompt-preview")).to_contain_text(ANSWER)

    # Publish.
    expect(page.locator("#publish-state")).to_contain_text("Not published yet")
    page.click("#publish")
    expect(page.locator("#publish-state")).to_contain_text("Version 1 published")
    expect(page.locator("#unpublished-badge")).to_have_count(0)
    bot.refresh_from_db()
    assert bot.published_version == 1
    assert bot.published_config["knowledge"][0]["body"] == ANSWER

    # Ask the live test chat the FAQ question; the reply streams in.
    expect(page.locator("#chat-status")).to_have_attribute("data-state", "open")
    # the draft's suggested questions are buttons under the greeting, as in the widget: one asks it
    chips = page.get_by_role("group", name="Suggested questions")
    expect(chips.get_by_role("button")).to_have_text([QUESTION, "Do you sell helmets?"])
    chips.get_by_role("button", name=QUESTION).click()
    expect(page.locator(".msg.user").last).to_have_text(QUESTION)
    expect(chips).to_have_count(0)  # the conversation has begun
    reply = page.locator(".msg.bot[data-reply-to]").last
    expect(reply).to_have_attribute("data-state", "done", timeout=180_000)

    deltas = int(reply.get_attribute("data-deltas"))
    assert deltas >= 3, f"expected the reply to grow over several deltas, got {deltas}"
    shown = reply.locator(".text").text_content()
    stored = Message.objects.get(bot=bot, channel="preview", sender="bot")
    assert shown.strip()
    assert shown == stored.text
    assert stored.reply_to.text == QUESTION
    # Greedy decoding (temperature 0) is deterministic: with the FAQ retrieved into the
    # prompt, the bundled model answers from it.
    assert "Monday to Friday" in shown, shown

    # Its decoding stats are shown, and they are the stored ones.
    stats = reply.locator(".stats")
    expect(stats).to_be_visible()
    assert stats.locator("[data-stat=tokens]").text_content() == str(stored.stats["new_tokens"])
    assert stats.locator("[data-stat=drafter]").text_content() == stored.stats["drafter"]
    assert stats.locator("[data-stat=precision]").text_content() == stored.stats["precision"]
    for name in ("tokens/s", "acceptance", "tokens/forward", "first token"):
        assert stats.locator(f'[data-stat="{name}"]').text_content() not in ("", "–"), name

    page.screenshot(path="/tmp/builder.png", full_page=True)

    # Reset starts a new preview conversation.
    page.click("#chat-reset")
    expect(page.locator(".msg.bot[data-reply-to]")).to_have_count(0)
    expect(page.get_by_role("group", name="Suggested questions")).to_have_count(1)  # back with the greeting


# The page's websockets, as window.__sockets (to drop the test chat's connection).
RECORD_SOCKETS = """
window.__sockets = [];
(() => {
  const Native = window.WebSocket;
  window.WebSocket = function (url, protocols) { const ws = new Native(url, protocols); window.__sockets.push(ws); return ws; };
  window.WebSocket.prototype = Native.prototype;
  Object.assign(window.WebSocket, {CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3});
})();
"""


def test_a_dropped_test_chat_starts_a_new_conversation_and_says_so(transactional_db, live_server_url, page, alice,
                                                                   acme_bot):
    """The server's new socket is a new preview conversation: what the old one showed (a reply that will
    never finish streaming) goes, with a word why."""
    from django.db import transaction

    from bots import events, services
    from bots.models import Conversation

    log_in(page, live_server_url, "alice")
    page.add_init_script(RECORD_SOCKETS)
    page.goto(f"{live_server_url}/bots/{acme_bot.id}/")
    status = page.locator("#chat-status")
    expect(status).to_have_attribute("data-state", "open")
    page.fill("#chat-input", QUESTION)
    page.press("#chat-input", "Enter")
    # stored; the socket follows its conversation (a server's first message imports the engine to queue its reply)
    expect(page.locator(".msg.user[data-message-id]")).to_have_count(1, timeout=60_000)
    conversation = Conversation.objects.get(bot=acme_bot, channel="preview")
    # The worker starts answering a question the test stored with no reply task: the page's is queued for a real
    # worker too (the session's, started by an earlier test, answers it if it runs), whose reply could end
    # the stream the test plays.
    asked = as_worker(services.receive, bot=acme_bot, channel="preview", thread_id=conversation.external_id,
                      text="Do you sell helmets?", answer=False).message
    Message.objects.filter(id=asked.id).update(reply_state=Message.ReplyState.PENDING, meta={})
    as_worker(events.push, conversation.id, "reply.start", reply_to=asked.id)
    expect(page.locator(f'#chat-log .streaming[data-reply-to="{asked.id}"]')).to_have_count(1)

    page.evaluate("window.__sockets.forEach(s => s.close())")
    expect(status).to_have_attribute("data-state", "closed")
    expect(status).to_have_attribute("data-state", "open", timeout=15_000)
    expect(page.locator("#chat-log .notice")).to_have_text("Connection lost \u2014 this is a new test conversation.")
    expect(page.locator("#chat-log .msg.user")).to_have_count(0)
    expect(page.locator("#chat-log .streaming")).to_have_count(0)
    with transaction.atomic():  # the old conversation's questions are nobody's to answer after the test
        services.skip_pending(conversation.id, "test over")


def test_a_save_that_fails_opens_the_tab_of_the_field_to_fix(transactional_db, live_server_url, page, alice, acme_bot):
    log_in(page, live_server_url, "alice")
    page.goto(f"{live_server_url}/bots/{acme_bot.id}/#behaviour")
    page.fill("#id_suggestions", "\n".join(f"Question {n}?" for n in range(1, 6)))  # one more than the 4 allowed
    page.click("a[data-tab=persona]")
    page.click("#save-draft")  # from another tab than the field's
    expect(page.locator(".form-errors")).to_be_visible()
    expect(page.locator(".field-suggestions.has-error")).to_be_visible()
    expect(page.locator(".field-suggestions .errorlist")).to_contain_text("At most 4 suggested questions.")
    expect(page.locator("a[data-tab=behaviour]")).to_have_class(re.compile("active"))


PUBLISH_QUESTION = "Publish the last saved draft? Your unsaved changes will be lost \u2014 save them first."


def test_unsaved_settings_are_not_lost_without_a_word_on_publish_or_leaving(transactional_db, live_server_url, page,
                                                                             alice, acme_bot):
    log_in(page, live_server_url, "alice")
    page.goto(f"{live_server_url}/bots/{acme_bot.id}/")
    expect(page.locator("#chat-status")).to_have_attribute("data-state", "open")  # builder.js is running
    page.click("#id_role")
    page.fill("#id_role", "bike repair expert")  # not saved
    asked = []

    def say_no(dialog):
        asked.append((dialog.type, dialog.message))
        dialog.dismiss()

    page.on("dialog", say_no)
    with page.expect_event("dialog"):
        page.click("#publish")  # publishes the saved draft, not the form: asked first
    expect(page.locator("#id_role")).to_have_value("bike repair expert")
    assert Bot.objects.get(id=acme_bot.id).published_version == 1
    with page.expect_event("dialog"):
        page.get_by_role("link", name="All bots").click()  # leaving: the browser asks
    expect(page.locator("#id_role")).to_have_value("bike repair expert")
    assert page.url.startswith(f"{live_server_url}/bots/{acme_bot.id}/")
    assert [kind for kind, _ in asked] == ["confirm", "beforeunload"]
    assert asked[0][1] == PUBLISH_QUESTION

    page.click("#save-draft")  # saved: nothing to ask any more
    expect(page.locator(".flash")).to_contain_text("Draft saved")
    page.click("#publish")
    expect(page.locator("#publish-state")).to_contain_text("Version 2 published")
    assert len(asked) == 2
    assert Bot.objects.get(id=acme_bot.id).published_config["role"] == "bike repair expert"
