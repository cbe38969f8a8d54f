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

pytestmark = pytest.mark.browser

QUESTION = "What are your opening hours?"
ANSWER = "We are open Monday to Friday, 9am to 6pm."


def test_it_builds_publishes_and_streams_a_preview_reply(transactional_db, celery_workers, live_server_url, page):
    base = live_server_url

    # Sign up: a new user and organisation, landing on the (empty) bot list.
    page.goto(f"{base}/accounts/signup/")
    page.fill("#id_username", "dana")
    page.fill("#id_email", "dana@example.com")
    page.fill("#id_organization_name", "Dana's Bikes")
    page.fill("#id_password1", "a-long-and-unusual-passphrase")
    page.fill("#id_password2", "a-long-and-unusual-passphrase")
    page.click("form button[type=submit]")
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
