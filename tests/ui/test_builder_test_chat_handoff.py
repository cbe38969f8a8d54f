"""The builder's test chat after a handoff, in Chromium: the bot's handoff message is shown with a
line saying what a real chat would do, and the admin's next message is answered by the bot (a test
chat has no team to answer it, nor an inbox to give it back from).

Real services throughout: uvicorn (HTTP + websockets), Celery workers on Redis with the bundled
model (the reply) and the default queue (the handoff message's delivery), PostgreSQL, Chromium.
"""
import pytest
from playwright.sync_api import expect

from bots.models import Message

from .conftest import log_in

pytestmark = pytest.mark.browser

QUESTION = "What are your opening hours?"
HANDOFF = "A colleague will take it from here."


def test_a_test_chat_handed_off_says_so_and_the_bot_answers_the_next_message(transactional_db, celery_workers,
                                                                              live_server_url, page, alice, acme_bot):
    acme_bot.handoff_triggers, acme_bot.handoff_message = "talk to a human", HANDOFF
    acme_bot.save()  # the draft: what the test chat answers from
    log_in(page, live_server_url, "alice")
    page.goto(f"{live_server_url}/bots/{acme_bot.id}/")
    expect(page.locator("#chat-status")).to_have_attribute("data-state", "open")

    page.fill("#chat-input", "Can I talk to a human?")
    page.press("#chat-input", "Enter")
    handed = page.locator("#chat-log .msg.system")
    expect(handed).to_have_text(HANDOFF, timeout=60_000)
    note = page.locator("#chat-log .msg.system + .handoff-note")
    expect(note).to_have_text("In a real chat your team would now have this conversation. "
                              "Here the bot answers your next message, so you can keep testing.")
    expect(note).to_have_attribute("role", "status")

    page.fill("#chat-input", QUESTION)
    page.press("#chat-input", "Enter")
    reply = page.locator("#chat-log .msg.bot:not(.system)[data-reply-to]")
    expect(reply).to_have_attribute("data-state", "done", timeout=180_000)
    stored = Message.objects.get(bot=acme_bot, channel="preview", sender="bot")
    assert stored.reply_to.text == QUESTION
    assert reply.locator(".text").text_content() == stored.text
    assert stored.text.strip()  # the model's own answer, what the page shows
    expect(page.locator("#chat-log .handoff-note")).to_have_count(1)  # said once, under the handoff
