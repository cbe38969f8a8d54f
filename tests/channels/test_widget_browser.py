"""The website widget in Chromium, embedded in a page on another origin than the platform.

End to end through the real pipeline: the widget's websocket, ``receive()``, the
Celery inference worker with the bundled model (reply streamed token by token), the
``default`` worker delivering the stored reply through the widget adapter.
"""
import re

import pytest
from playwright.sync_api import expect

from tests.channels.widget_helpers import *  # noqa: F401,F403 - fixtures
from tests.conftest import as_worker, wait_for

pytestmark = [pytest.mark.browser]

# Records every websocket frame the widget receives, so the test can see the deltas.
RECORD_FRAMES = """
window.__frames = [];
window.__sockets = [];
const NativeWebSocket = window.WebSocket;
window.WebSocket = function (url, protocols) {
  const ws = new NativeWebSocket(url, protocols);
  window.__sockets.push(ws);
  ws.addEventListener('message', (e) => { try { window.__frames.push(JSON.parse(e.data)); } catch (err) {} });
  ws.addEventListener('close', (e) => window.__frames.push({type: '__closed', code: e.code}));
  return ws;
};
window.WebSocket.prototype = NativeWebSocket.prototype;
Object.assign(window.WebSocket, {CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3});
"""


def open_chat(page, host_site, live_server_url, bot):
    """The bot's widget opened on the host page, every frame it receives recorded; its panel."""
    page.add_init_script(RECORD_FRAMES)
    page.goto(host_site.page_url(live_server_url, bot.public_key))
    page.get_by_role("button", name=f"Open chat with {bot.name}").click()
    return page.get_by_role("dialog", name=f"Chat with {bot.name}")


def resynced(page, timeout=30_000):
    """Drop the widget's connections and wait for the history frame of its reconnect: a new one, not one
    the page had (the visitor's first message brings a history frame too, so "two so far" can be true
    before the new socket has joined its conversation)."""
    before = page.evaluate("window.__frames.filter(f => f.type === 'history').length")
    page.evaluate("window.__sockets.forEach(s => s.close())")
    page.wait_for_function(f"window.__frames.filter(f => f.type === 'history').length > {before}", timeout=timeout)


def asked(page, host_site, live_server_url, bot, question="Do you fix e-bikes?"):
    """The bot's widget opened and the visitor's ``question`` stored, waiting for the bot with no reply task
    queued, and shown; (the panel, the stored message). For tests that play the inference worker: sent from
    the page, its task would be answered by a real worker if one runs (the suite's, started by an earlier
    test), whose frames then land among the test's."""
    from tests.platform.test_reply_one_at_a_time import pending

    panel = open_chat(page, host_site, live_server_url, bot)
    page.wait_for_function("window.__frames.some(f => f.type === 'history')")  # after the session frame
    visitor = page.evaluate("window.__frames.find(f => f.type === 'session').visitor")
    [inbound] = as_worker(pending, bot, visitor, question)
    resynced(page)  # the socket joins the visitor's conversation; its history shows the question
    return panel, inbound


def sent_with_a_refused_email(widget_channel, page, host_site, live_server_url, bot):
    """The pre-chat email on, "Hello there" sent with "jo@gmail" (the browser's check passes it, the
    server's does not); (the panel, the email box)."""
    widget_channel.settings["prechat_email"] = True
    widget_channel.save()
    panel = open_chat(page, host_site, live_server_url, bot)
    address = panel.get_by_role("textbox", name="Your email (optional)")
    address.fill("jo@gmail")
    panel.get_by_role("textbox", name="Message").fill("Hello there")
    panel.get_by_role("button", name="Send message").click()
    return panel, address


def letters(text):
    return re.sub(r"[^a-z0-9]", "", text.lower())


def test_it_streams_a_reply_and_keeps_history_across_reloads(
    widget_channel, acme_bot, host_site, live_server_url, celery_workers, page
):
    from bots.models import Message

    page.set_viewport_size({"width": 375, "height": 740})  # a phone
    page.add_init_script(RECORD_FRAMES)
    page.goto(host_site.page_url(live_server_url, acme_bot.public_key))

    launcher = page.get_by_role("button", name="Open chat with Ava")
    # its icon is drawn (SVG), not an emoji glyph that a system without an emoji font shows as a box
    assert launcher.evaluate("el => el.querySelector('svg path') !== null && el.textContent.trim() === ''")
    launcher.click()
    panel = page.get_by_role("dialog", name="Chat with Ava")
    panel.get_by_text("Hi! How can I help you today?").wait_for()
    assert panel.get_by_role("textbox", name="Message").evaluate("el => el === el.getRootNode().activeElement")
    # 16px on a phone: under that, iOS Safari zooms the page when the box gets focus
    assert panel.get_by_role("textbox", name="Message").evaluate("el => getComputedStyle(el).fontSize") == "16px"

    panel.get_by_role("textbox", name="Message").fill("What are your opening hours?")
    panel.get_by_role("textbox", name="Message").press("Enter")

    reply = wait_for(
        lambda: Message.objects.filter(bot=acme_bot, channel="widget", sender="bot").first(), timeout=180, what="the bot's reply"
    )
    page.wait_for_function("window.__frames.some(f => f.type === 'reply.done')", timeout=60_000)
    frames = page.evaluate("window.__frames")
    kinds = [f["type"] for f in frames]
    assert kinds.index("reply.start") < kinds.index("reply.delta") < kinds.index("reply.done")
    deltas = [f["delta"] for f in frames if f["type"] == "reply.delta"]
    assert len(deltas) >= 3, deltas  # streamed token by token, not in one piece
    assert letters("".join(deltas)).startswith(letters(reply.text)[:20])

    bot_bubbles = panel.locator(".msg.bot:not(.greeting)")
    wait_for(lambda: bot_bubbles.count() == 1 and letters(reply.text) in letters(bot_bubbles.first.inner_text()), what="the reply shown")
    inbound = Message.objects.get(bot=acme_bot, channel="widget", direction="in")
    assert inbound.text == "What are your opening hours?"
    wait_for(lambda: Message.objects.get(id=reply.id).delivery_status == "sent", what="the widget adapter to deliver")

    # The visitor rates the reply; the server stores it and says so.
    assert panel.get_by_role("button", name="Helpful", exact=True).evaluate("el => el.querySelector('svg path') !== null")
    panel.get_by_role("button", name="Helpful", exact=True).click()
    wait_for(lambda: Message.objects.get(id=reply.id).rating == 1, what="the rating stored")
    wait_for(lambda: panel.get_by_role("button", name="Helpful", exact=True).get_attribute("aria-pressed") == "true",
             what="the rating shown")
    assert panel.get_by_role("button", name="Not helpful").get_attribute("aria-pressed") == "false"

    # The host page's styles did not reach inside the widget.
    assert launcher.evaluate("el => getComputedStyle(el).backgroundColor") != "rgb(255, 0, 0)"

    # Reload: the widget reopens with the same visitor token and the server's history.
    page.reload()
    panel = page.get_by_role("dialog", name="Chat with Ava")
    panel.locator(".msg.me").get_by_text("What are your opening hours?").wait_for()
    wait_for(lambda: letters(reply.text) in letters(panel.locator(".msg.bot:not(.greeting)").first.inner_text()), what="history")
    assert Message.objects.filter(conversation=inbound.conversation).count() == 2
    assert panel.get_by_role("button", name="Helpful", exact=True).get_attribute("aria-pressed") == "true"  # from history
    # The returning visitor's token went in the hello frame: no socket URL carries it.
    urls = page.evaluate("window.__sockets.map(s => s.url)")
    assert urls and not any("token" in u for u in urls), urls

    # Keyboard: Escape closes the panel and gives focus back to the launcher.
    panel.get_by_role("textbox", name="Message").press("Escape")
    assert panel.is_hidden()
    assert launcher.evaluate("el => el === el.getRootNode().activeElement")


def test_it_refuses_a_page_on_a_disallowed_origin(transactional_db, acme, acme_bot, host_site, live_server_url, page):
    from bots.models import Conversation, Message
    from channels_app.models import ChannelConfig

    ChannelConfig.objects.create(
        organization=acme, bot=acme_bot, kind="widget", settings={"allowed_origins": ["https://shop.example.com"]}
    )
    page.add_init_script(RECORD_FRAMES)
    page.goto(host_site.page_url(live_server_url, acme_bot.public_key))
    page.get_by_role("button", name=re.compile("Open chat")).click()

    page.get_by_text("This website is not allowed to use this chat.").wait_for()
    page.wait_for_function("window.__frames.some(f => f.type === '__closed' && f.code === 4403)")
    assert page.get_by_role("textbox", name="Message").is_disabled()
    assert not Conversation.objects.exists() and not Message.objects.exists()


def test_it_reconnects_and_resyncs_after_a_dropped_connection(
    widget_channel, acme_bot, alice, host_site, live_server_url, page
):
    from bots import services
    from bots.models import Conversation, Message

    widget_channel.settings["prechat_email"] = True
    widget_channel.save()
    panel = open_chat(page, host_site, live_server_url, acme_bot)
    panel.get_by_role("textbox", name="Your email (optional)").fill("dana@example.com")
    panel.get_by_role("textbox", name="Message").fill("Hello there")
    panel.get_by_role("button", name="Send message").click()
    conversation = wait_for(lambda: Conversation.objects.filter(bot=acme_bot, channel="widget").first(), what="the conversation")
    assert conversation.contact_email == "dana@example.com"
    assert panel.get_by_role("textbox", name="Your email (optional)").is_hidden()

    panel.get_by_role("button", name="Talk to a human").click()
    wait_for(lambda: Conversation.objects.get(id=conversation.id).needs_human, what="the handoff")

    # The connection drops; meanwhile an agent answers (no delivery worker: it reaches
    # the widget only through the resync on reconnect).
    page.evaluate("window.__sockets.forEach(s => s.close())")
    services.agent_reply(Conversation.objects.get(id=conversation.id), alice, "Hi, this is Sam from Acme.")
    panel.get_by_text("Hi, this is Sam from Acme.").wait_for()
    panel.get_by_text(services.HANDOFF_REPLY).wait_for()
    # the visitor sees that a person wrote it: labelled, unlike the bot's replies
    agent = panel.locator(".msg.agent")
    assert agent.all_inner_texts() == ["Hi, this is Sam from Acme."]
    assert agent.evaluate("el => getComputedStyle(el, '::before').content") == '"From the team"'
    assert panel.locator(".msg:not(.agent)", has_text=services.HANDOFF_REPLY).evaluate(
        "el => getComputedStyle(el, '::before').content") in ("none", "normal")
    assert page.evaluate("window.__frames.filter(f => f.type === 'history').length") >= 2
    assert panel.locator(".msg.me").all_inner_texts() == ["Hello there", "I'd like to talk to a human, please."]
    assert Message.objects.filter(conversation=conversation, direction="in").count() == 2


def test_a_reply_that_comes_while_the_chat_is_closed_shows_on_the_launcher(
    widget_channel, acme_bot, alice, host_site, live_server_url, page
):
    from bots import services
    from bots.models import Conversation

    panel = open_chat(page, host_site, live_server_url, acme_bot)
    panel.get_by_role("button", name="Talk to a human").click()
    panel.get_by_text(services.HANDOFF_REPLY).wait_for()  # a reply seen with the chat open: not counted
    conversation = Conversation.objects.get(bot=acme_bot, channel="widget")
    panel.get_by_role("button", name="Close chat").click()
    launcher = page.locator(".launcher")
    assert launcher.locator(".badge").is_hidden()

    page.evaluate("window.__sockets.forEach(s => s.close())")  # it comes back through the resync
    services.agent_reply(Conversation.objects.get(id=conversation.id), alice, "Hi, this is Sam from Acme.")
    expect(launcher.locator(".badge")).to_have_text("1", timeout=15_000)  # after the reconnect's backoff and resync
    assert launcher.get_attribute("aria-label") == "Open chat with Ava (new messages: 1)"
    page.reload()  # still there for a visitor who comes back later
    expect(page.locator(".launcher .badge")).to_have_text("1", timeout=15_000)  # the config, a socket, its history
    page.get_by_role("button", name="Open chat with Ava (new messages: 1)").click()
    page.get_by_role("dialog", name="Chat with Ava").get_by_text("Hi, this is Sam from Acme.").wait_for()
    assert page.locator(".launcher .badge").is_hidden()
    page.get_by_role("button", name="Close chat").click()
    page.reload()
    page.get_by_role("button", name="Open chat with Ava").wait_for()
    assert page.locator(".launcher .badge").is_hidden()  # seen is seen, across reloads too


def test_it_speaks_the_host_pages_language(widget_channel, acme_bot, host_site, live_server_url, page):
    widget_channel.settings["messages_per_minute"] = 1
    widget_channel.save()
    page.goto(host_site.page_url(live_server_url, acme_bot.public_key, lang="es-MX"))
    page.get_by_role("button", name="Abrir el chat con Ava").click()
    panel = page.get_by_role("dialog", name="Chat con Ava")
    box = panel.get_by_role("textbox", name="Mensaje")
    assert box.get_attribute("placeholder") == "Escribe tu mensaje\u2026"
    assert panel.get_by_role("button", name="Hablar con una persona").inner_text() == "Persona"
    for text in ("Hola", "¿Abren el domingo?"):  # the second is over the limit of 1 a minute
        box.fill(text)
        box.press("Enter")
    panel.get_by_text("Estás enviando mensajes demasiado rápido").wait_for()  # the server's refusal, in Spanish


def test_the_bots_widget_language_wins_over_the_pages(widget_channel, acme_bot, host_site, live_server_url, page):
    widget_channel.settings["language"] = "fr"
    widget_channel.save()
    page.goto(host_site.page_url(live_server_url, acme_bot.public_key, lang="es"))
    page.get_by_role("button", name="Ouvrir le chat avec Ava").click()
    panel = page.get_by_role("dialog", name="Chat avec Ava")
    assert panel.get_by_role("button", name="Envoyer le message").inner_text() == "Envoyer"
    assert panel.locator(".away").is_hidden()  # no team hours: nobody is away
    panel.get_by_role("button", name="Parler \u00e0 une personne").click()  # the request is in French too
    panel.locator(".msg.me", has_text="J\u2019aimerais parler \u00e0 une personne").wait_for()


def test_outside_team_hours_the_widget_says_a_person_replies_later(widget_channel, acme_bot, host_site,
                                                                   live_server_url, page):
    from django.utils import timezone

    from bots.hours import DAYS
    from bots.models import Organization

    today = timezone.now().weekday()
    Organization.objects.filter(id=acme_bot.organization_id).update(team_hours={DAYS[(today + 3) % 7]: ["09:00", "10:00"]})
    page.goto(host_site.page_url(live_server_url, acme_bot.public_key, lang="de"))
    page.get_by_role("button", name="Chat mit Ava \u00f6ffnen").click()
    panel = page.get_by_role("dialog", name="Chat mit Ava")
    expect(panel.locator(".away")).to_have_text(
        "Unser Team ist gerade nicht da: Der Bot kann helfen, und ein Mensch antwortet hier, sobald es zur\u00fcck ist.")


def test_a_page_left_open_learns_that_the_team_went_away(widget_channel, acme_bot, host_site, live_server_url, page):
    """The away note follows the team's hours when the chat is opened again minutes later, not
    only when the page loads."""
    from django.utils import timezone

    from bots.hours import DAYS
    from bots.models import Organization

    page.clock.install()  # the browser's clock, moved on below instead of waiting
    fetched = []
    page.on("request", lambda request: fetched.append(request.url) if "/config/" in request.url else None)
    page.goto(host_site.page_url(live_server_url, acme_bot.public_key))
    page.get_by_role("button", name="Open chat with Ava").click()
    panel = page.get_by_role("dialog", name="Chat with Ava")
    panel.get_by_role("button", name="Send message").wait_for()
    assert panel.locator(".away").is_hidden()  # no team hours: nobody is away
    panel.get_by_role("button", name="Close chat").click()

    today = timezone.now().weekday()
    Organization.objects.filter(id=acme_bot.organization_id).update(team_hours={DAYS[(today + 3) % 7]: ["09:00", "10:00"]})
    page.get_by_role("button", name="Open chat with Ava").click()  # at once: the look is fresh, not fetched again
    panel.get_by_role("button", name="Close chat").click()
    assert len(fetched) == 1
    page.clock.fast_forward("06:00")
    page.get_by_role("button", name="Open chat with Ava").click()
    expect(panel.locator(".away")).to_be_visible()
    assert len(fetched) == 2


def test_a_new_visitor_asks_a_suggested_question_with_one_click(widget_channel, acme_bot, host_site, live_server_url,
                                                                 page):
    from bots.models import Message

    acme_bot.suggestions = "When are you open?\nDo you fix e-bikes?"
    acme_bot.save()
    acme_bot.publish()
    page.goto(host_site.page_url(live_server_url, acme_bot.public_key))
    page.get_by_role("button", name="Open chat with Ava").click()
    panel = page.get_by_role("dialog", name="Chat with Ava")
    chips = panel.get_by_role("group", name="Suggested questions")
    chips.get_by_role("button", name="When are you open?").wait_for()
    assert chips.get_by_role("button").all_inner_texts() == ["When are you open?", "Do you fix e-bikes?"]
    chips.get_by_role("button", name="Do you fix e-bikes?").click()
    wait_for(lambda: Message.objects.filter(bot=acme_bot, direction="in", text="Do you fix e-bikes?").exists(),
             what="the suggested question stored")
    assert chips.count() == 0  # the conversation has begun
    page.reload()
    page.get_by_role("dialog", name="Chat with Ava").locator(".msg.me").get_by_text("Do you fix e-bikes?").wait_for()
    assert page.get_by_role("group", name="Suggested questions").count() == 0  # not for a returning visitor


def test_a_visitor_attaches_a_file_and_sees_it_answered_and_kept(widget_channel, acme_bot, host_site, live_server_url,
                                                                 page):
    from bots.models import Attachment, Message
    from bots.models.bots import NO_TEXT_MESSAGE
    from channels_app.widget.uploads import ACCEPT

    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    panel = open_chat(page, host_site, live_server_url, acme_bot)
    page.wait_for_function("window.__frames.some(f => f.type === 'history')")  # connected: the token is known
    assert panel.locator("input[type=file]").get_attribute("accept") == ACCEPT  # from the widget's config
    with page.expect_file_chooser() as chooser:
        panel.get_by_role("button", name="Attach a file").click()
    chooser.value.set_files({"name": "broken-chain.png", "mimeType": "image/png", "buffer": png})

    panel.get_by_text(NO_TEXT_MESSAGE).wait_for()  # reached over the socket the upload's "sync" joined
    assert panel.locator(".msg.me").all_inner_texts() == ["broken-chain.png"]
    assert panel.locator(".msg.me .file svg").count() == 1  # the clip is drawn, not an emoji glyph
    attachment = Attachment.objects.get(message__bot=acme_bot, message__channel="widget")
    with attachment.file.open("rb") as stored:
        assert stored.read() == png
    assert Message.objects.filter(bot=acme_bot, direction="out", text=NO_TEXT_MESSAGE).count() == 1

    # a file over the bot's limit is refused in the page, before any upload
    widget_channel.settings["max_upload_mb"] = 1
    widget_channel.save()
    page.reload()
    panel.get_by_text(NO_TEXT_MESSAGE).wait_for()  # history after a reload: the file's line too
    assert panel.locator(".msg.me").all_inner_texts() == ["broken-chain.png"]
    with page.expect_file_chooser() as chooser:
        panel.get_by_role("button", name="Attach a file").click()
    chooser.value.set_files({"name": "huge.png", "mimeType": "image/png", "buffer": png + bytes(1024 * 1024)})
    panel.get_by_text("Files are limited to 1 MB.").wait_for()
    assert Attachment.objects.count() == 1


def test_the_attach_button_is_absent_when_the_bot_takes_no_files(widget_channel, acme_bot, host_site, live_server_url,
                                                                 page):
    widget_channel.settings["file_uploads"] = False
    widget_channel.save()
    page.goto(host_site.page_url(live_server_url, acme_bot.public_key))
    page.get_by_role("button", name="Open chat with Ava").click()
    panel = page.get_by_role("dialog", name="Chat with Ava")
    panel.get_by_role("button", name="Send message").wait_for()
    assert panel.get_by_role("button", name="Attach a file").count() == 0


def test_a_refused_message_goes_back_into_the_box_to_send_again(widget_channel, acme_bot, host_site, live_server_url,
                                                               page):
    from bots.models import Message

    widget_channel.settings["messages_per_minute"] = 1
    widget_channel.save()
    page.goto(host_site.page_url(live_server_url, acme_bot.public_key))
    page.get_by_role("button", name="Open chat with Ava").click()
    panel = page.get_by_role("dialog", name="Chat with Ava")
    box = panel.get_by_role("textbox", name="Message")
    box.fill("Do you fix e-bikes?")
    box.press("Enter")
    wait_for(lambda: Message.objects.filter(bot=acme_bot, direction="in").exists(), what="the first message")
    assert box.input_value() == ""
    second = "And how long does a new chain take?"
    box.fill(second)
    box.press("Enter")
    panel.get_by_text("You're sending messages too quickly.", exact=False).wait_for()  # refused, in words
    assert box.input_value() == second  # the visitor's words are not lost: back in the box to send later
    assert list(Message.objects.filter(bot=acme_bot, direction="in").values_list("text", flat=True)) == [
        "Do you fix e-bikes?"]


def test_a_reply_being_streamed_goes_when_a_person_takes_the_chat_over(
    widget_channel, acme_bot, alice, host_site, live_server_url, page
):
    """The test plays the inference worker's events, then the takeover's."""
    from bots import events, services
    from bots.models import Conversation, Message

    panel, inbound = asked(page, host_site, live_server_url, acme_bot)
    as_worker(events.push, inbound.conversation_id, "reply.start", reply_to=inbound.id)
    as_worker(events.push, inbound.conversation_id, "reply.delta", reply_to=inbound.id, delta="We fix every")
    bot_bubbles = panel.locator(".msg.bot:not(.greeting)")
    expect(bot_bubbles).to_have_text(["We fix every"])

    services.agent_reply(Conversation.objects.get(id=inbound.conversation_id), alice, "Hi, Sam here: yes, we do.")
    assert Message.objects.get(id=inbound.id).reply_state == Message.ReplyState.SKIPPED
    as_worker(events.push, inbound.conversation_id, "reply.cancelled", reply_to=inbound.id)  # what the worker then says
    page.wait_for_function("window.__frames.some(f => f.type === 'reply.cancelled')")
    expect(bot_bubbles).to_have_count(0)
    assert panel.locator(".typing").count() == 0


def test_an_email_the_server_refuses_is_asked_again_not_sent_with_every_message(
    widget_channel, acme_bot, host_site, live_server_url, page
):
    """"jo@gmail" passes the browser's check but not the server's: before, the widget kept it and every
    later message was refused with it, across reloads."""
    from bots.models import Conversation, Message

    panel, address = sent_with_a_refused_email(widget_channel, page, host_site, live_server_url, acme_bot)
    page.wait_for_function("window.__frames.some(f => f.type === 'error' && f.code === 'bad_email' && f.client_id)")
    expect(address).to_be_visible()  # asked again, with what was typed
    expect(address).to_have_value("jo@gmail")
    expect(panel.get_by_role("textbox", name="Message")).to_have_value("Hello there")  # the words back, to resend
    assert not Message.objects.exists()

    address.fill("jo@gmail.com")
    panel.get_by_role("button", name="Send message").click()
    wait_for(lambda: Message.objects.filter(text="Hello there").exists(), what="the message stored")
    assert Conversation.objects.get().contact_email == "jo@gmail.com"


def test_two_tabs_of_the_site_are_one_visitor(widget_channel, acme_bot, host_site, live_server_url, page):
    """Tab B, loaded before tab A's visitor wrote, opens the chat afterwards: it must join A's visitor
    (and keep A's token), not start a second one whose token then overwrites A's."""
    from bots.models import Conversation

    url = host_site.page_url(live_server_url, acme_bot.public_key)
    tab_b = page.context.new_page()
    tab_b.goto(url)  # loaded first, chat closed: no token yet
    page.goto(url)
    page.get_by_role("button", name="Open chat with Ava").click()
    panel = page.get_by_role("dialog", name="Chat with Ava")
    panel.get_by_role("textbox", name="Message").fill("Hello from tab A")
    panel.get_by_role("textbox", name="Message").press("Enter")
    wait_for(lambda: Conversation.objects.filter(bot=acme_bot).exists(), what="the conversation")

    tab_b.get_by_role("button", name="Open chat with Ava").click()
    tab_b.get_by_role("dialog", name="Chat with Ava").locator(".msg.me").get_by_text("Hello from tab A").wait_for()
    assert Conversation.objects.filter(bot=acme_bot).count() == 1
    tab_b.get_by_role("button", name="Close chat").click()  # B saves its state: A's visitor stays
    page.reload()
    page.get_by_role("button", name="Open chat with Ava").click()  # (closed in B: the open state is shared too)
    page.get_by_role("dialog", name="Chat with Ava").locator(".msg.me").get_by_text("Hello from tab A").wait_for()
    assert Conversation.objects.filter(bot=acme_bot).count() == 1
    tab_b.close()


def test_a_reply_that_fails_midway_takes_its_words_away(widget_channel, acme_bot, host_site, live_server_url, page):
    """The worker streamed some words, then failed: ``_mark_failed`` hands the conversation to the team and
    pushes ``reply.error``. The visitor is not left with half an answer."""
    from bots import events
    from bots.models import Conversation, Message
    from inference.tasks import _mark_failed

    panel, inbound = asked(page, host_site, live_server_url, acme_bot)
    as_worker(events.push, inbound.conversation_id, "reply.start", reply_to=inbound.id)
    as_worker(events.push, inbound.conversation_id, "reply.delta", reply_to=inbound.id, delta="We fix every")
    bot_bubbles = panel.locator(".msg.bot:not(.greeting)")
    expect(bot_bubbles.first).to_contain_text("We fix every")

    as_worker(_mark_failed, inbound, RuntimeError("the engine failed"))
    page.wait_for_function("window.__frames.some(f => f.type === 'reply.error')")
    # half an answer is not an answer (the handoff message that follows, where a worker delivers it, is)
    expect(panel.locator(".msg.bot", has_text="We fix every")).to_have_count(0)
    assert Message.objects.get(id=inbound.id).reply_state == Message.ReplyState.FAILED
    assert Conversation.objects.get(id=inbound.conversation_id).needs_human
    assert Message.objects.get(reply_to=inbound).sender == "system"  # the handoff message, on its way


def test_a_reply_that_fails_before_its_first_word_stops_the_typing_dots(widget_channel, acme_bot, host_site,
                                                                         live_server_url, page):
    from bots import events
    from inference.tasks import _mark_failed

    panel, inbound = asked(page, host_site, live_server_url, acme_bot)
    as_worker(events.push, inbound.conversation_id, "reply.start", reply_to=inbound.id)
    expect(panel.locator(".typing")).to_have_count(1)

    as_worker(_mark_failed, inbound, RuntimeError("the engine failed"))
    page.wait_for_function("window.__frames.some(f => f.type === 'reply.error')")
    expect(panel.locator(".typing")).to_have_count(0)  # nobody is typing: not dots forever


def test_the_typing_dots_go_when_a_person_takes_the_chat_over(widget_channel, acme_bot, alice, host_site,
                                                              live_server_url, page):
    from bots import events, services
    from bots.models import Conversation

    panel, inbound = asked(page, host_site, live_server_url, acme_bot)
    as_worker(events.push, inbound.conversation_id, "reply.start", reply_to=inbound.id)
    expect(panel.locator(".typing")).to_have_count(1)

    as_worker(services.set_bot_paused, Conversation.objects.get(id=inbound.conversation_id), True, by=alice)
    page.wait_for_function("window.__frames.some(f => f.type === 'conversation' && f.bot_paused)")
    expect(panel.locator(".typing")).to_have_count(0)  # the bot is not answering any more


# While window.__offline is set, the page's sockets go to a port nobody listens on (as with the network
# down); the next page load is online again. Added before open_chat's RECORD_FRAMES, which wraps it.
OFFLINE_SWITCH = """
(() => {
  const Connect = window.WebSocket;
  window.WebSocket = function (url, protocols) { return new Connect(window.__offline ? NOWHERE : url, protocols); };
  window.WebSocket.prototype = Connect.prototype;
  Object.assign(window.WebSocket, {CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3});
})();
"""

# Every frame the widget sends, as window.__sent.
RECORD_SENT = """
(() => {
  window.__sent = [];
  const send = WebSocket.prototype.send;
  WebSocket.prototype.send = function (data) {
    try { window.__sent.push(JSON.parse(data)); } catch (err) {}
    return send.call(this, data);
  };
})();
"""


def test_a_message_written_while_offline_survives_a_reload_and_is_sent_once(
    widget_channel, acme_bot, host_site, live_server_url, page
):
    from bots.models import Message
    from tests.conftest import free_port

    page.add_init_script(OFFLINE_SWITCH.replace("NOWHERE", f"'ws://127.0.0.1:{free_port()}/'"))
    panel = open_chat(page, host_site, live_server_url, acme_bot)
    page.wait_for_function("window.__frames.some(f => f.type === 'history')")  # a visitor now: its token is kept
    page.evaluate("window.__offline = true; window.__sockets.forEach(s => s.close())")
    panel.get_by_text("Connection lost \u2014 reconnecting\u2026").wait_for()
    box = panel.get_by_role("textbox", name="Message")
    box.fill("Are you open on Sunday?")
    box.press("Enter")
    mine = panel.locator(".msg.me")
    expect(mine).to_have_text(["Are you open on Sunday?"])
    expect(mine).to_have_class(re.compile(r"\bpending\b"))  # not taken by the server yet

    page.reload()  # before the socket came back: online again
    panel = page.get_by_role("dialog", name="Chat with Ava")
    mine = panel.locator(".msg.me")
    wait_for(lambda: Message.objects.filter(bot=acme_bot, direction="in").exists(), what="the message sent after the reload")
    expect(mine).to_have_text(["Are you open on Sunday?"])
    expect(mine).not_to_have_class(re.compile(r"\bpending\b"))  # the server's echo came

    page.reload()  # taken: nothing left to send
    page.wait_for_function("window.__frames.some(f => f.type === 'history')")
    expect(page.get_by_role("dialog", name="Chat with Ava").locator(".msg.me")).to_have_text(["Are you open on Sunday?"])
    assert list(Message.objects.filter(bot=acme_bot, direction="in").values_list("text", flat=True)) == [
        "Are you open on Sunday?"]


def test_the_refusal_line_goes_once_a_message_is_taken(widget_channel, acme_bot, host_site, live_server_url, page):
    from bots.models import Message

    panel, address = sent_with_a_refused_email(widget_channel, page, host_site, live_server_url, acme_bot)
    status = panel.locator(".status")
    expect(status).to_have_text("That email address does not look right.")

    address.fill("jo@gmail.com")
    panel.get_by_role("button", name="Send message").click()
    page.wait_for_function("window.__frames.some(f => f.type === 'message' && f.client_id)")
    expect(status).to_have_text("")  # what was wrong is fixed: the red line goes
    assert Message.objects.filter(bot=acme_bot, text="Hello there").count() == 1


def test_a_refused_handoff_is_not_sent_again_and_the_reconnect_does_not_wait_out_its_limit(
    widget_channel, acme_bot, host_site, live_server_url, page
):
    from bots.models import Conversation, Message

    widget_channel.settings["messages_per_minute"] = 1
    widget_channel.save()
    page.add_init_script(RECORD_SENT)
    panel = open_chat(page, host_site, live_server_url, acme_bot)
    box = panel.get_by_role("textbox", name="Message")
    box.fill("Hello")
    box.press("Enter")
    page.wait_for_function("window.__frames.some(f => f.type === 'message' && f.client_id)")
    panel.get_by_role("button", name="Talk to a human").click()  # the second message within the minute: refused
    page.wait_for_function("window.__frames.some(f => f.type === 'error' && f.code === 'rate_limited' && f.retry_after)")

    # the refusal kept its socket: its wait (most of a minute) is for sending again, not for reconnecting
    resynced(page, timeout=10_000)
    assert page.evaluate("window.__sent.filter(f => f.type === 'handoff').length") == 1  # refused is not resent
    assert not Conversation.objects.get(bot=acme_bot, channel="widget").needs_human
    assert Message.objects.filter(bot=acme_bot, direction="in").count() == 1


def test_a_history_frame_arriving_mid_connection_does_not_send_a_waiting_frame_again(
    widget_channel, acme_bot, host_site, live_server_url, page
):
    """The server sends a history frame right after the echo of the visitor's first message (the
    conversation is new to the socket). A visitor quick to click "Talk to a human" sends the handoff
    before that history arrives; the history must not send it again on the same socket (it did: with a
    limit of one message a minute, the copy was refused too, and counted against the visitor)."""
    import json
    import re as regex
    import threading

    histories, held, handoff_sent, sent = [], [], threading.Event(), []

    def route(ws):
        server = ws.connect_to_server()

        def to_server(message):
            frame = json.loads(message)
            sent.append(frame["type"])
            if frame["type"] == "handoff":
                handoff_sent.set()
                for waiting in held:  # the history the server sent meanwhile, only now reaching the page
                    ws.send(waiting)
                held.clear()
            server.send(message)

        def to_page(message):
            frame = json.loads(message)
            if frame["type"] == "history":
                histories.append(frame)
                if len(histories) == 2 and not handoff_sent.is_set():
                    held.append(message)  # the one after the first message's echo: late
                    return
            ws.send(message)

        ws.on_message(to_server)
        server.on_message(to_page)

    def until(condition, what):  # (the route's callbacks run only while this thread is in Playwright)
        for _ in range(300):
            if condition():
                return
            page.wait_for_timeout(100)
        raise AssertionError(f"timed out waiting for {what}")

    page.route_web_socket(regex.compile(r"/ws/widget/"), route)
    panel = open_chat(page, host_site, live_server_url, acme_bot)
    box = panel.get_by_role("textbox", name="Message")
    box.fill("Hello")
    box.press("Enter")
    page.wait_for_function("window.__frames.some(f => f.type === 'message' && f.client_id)")
    until(lambda: len(histories) == 2, "the history frame after the first message")
    panel.get_by_role("button", name="Talk to a human").click()
    page.wait_for_function("window.__frames.filter(f => f.type === 'history').length >= 2")
    # whatever that history made the widget send went out before this (one socket keeps the order)
    page.evaluate("window.__sockets[window.__sockets.length - 1].send(JSON.stringify({type: 'ping'}))")
    until(lambda: "ping" in sent, "the ping after the late history")
    assert sent.count("handoff") == 1, sent


def test_the_widget_keeps_its_look_on_a_page_whose_policy_forbids_inline_styles(
    widget_channel, acme_bot, host_site, live_server_url, page
):
    page.add_init_script(RECORD_FRAMES)
    page.goto(host_site.page_url(live_server_url, acme_bot.public_key, csp="style-src 'self'"))
    page.get_by_role("button", name=f"Open chat with {acme_bot.name}").click()
    panel = page.get_by_role("dialog", name=f"Chat with {acme_bot.name}")
    panel.get_by_text("Hi! How can I help you today?").wait_for()
    # the policy holds: the host page's own <style> is blocked
    assert page.locator("#host-button").evaluate("el => getComputedStyle(el).fontSize") != "40px"
    launcher = page.locator(".launcher")
    assert launcher.evaluate("el => getComputedStyle(el).position") == "fixed"
    assert launcher.evaluate("el => getComputedStyle(el).borderRadius") == "50%"
    assert panel.evaluate("el => getComputedStyle(el).position") == "fixed"
    assert panel.locator(".msg.greeting").evaluate("el => getComputedStyle(el).borderRadius") == "12px"


def test_enter_while_an_input_method_is_composing_does_not_send(widget_channel, acme_bot, host_site, live_server_url,
                                                               page):
    page.add_init_script(RECORD_SENT)
    panel = open_chat(page, host_site, live_server_url, acme_bot)
    page.wait_for_function("window.__frames.some(f => f.type === 'history')")
    box = panel.get_by_role("textbox", name="Message")
    box.fill("\u306b\u307b\u3093")
    # Enter picks the input method's words (Japanese, Chinese...): the keydown says it is composing
    box.dispatch_event("keydown", {"key": "Enter", "code": "Enter", "isComposing": True})
    expect(box).to_have_value("\u306b\u307b\u3093")
    assert panel.locator(".msg.me").count() == 0
    assert page.evaluate("window.__sent.filter(f => f.type === 'message').length") == 0


def test_right_to_left_words_lay_out_right_to_left(widget_channel, acme_bot, host_site, live_server_url, page):
    acme_bot.greeting = "مرحبا! كيف أساعدك؟"  # Arabic: "Hello! How can I help you?"
    acme_bot.save()
    acme_bot.publish()
    panel = open_chat(page, host_site, live_server_url, acme_bot)
    page.wait_for_function("window.__frames.some(f => f.type === 'history')")  # the log is drawn again then
    greeting = panel.locator(".msg.greeting")
    expect(greeting).to_have_text(acme_bot.greeting)
    assert greeting.evaluate("el => getComputedStyle(el).direction") == "rtl"
    # what the visitor types takes the direction of its words too
    expect(panel.get_by_role("textbox", name="Message")).to_have_attribute("dir", "auto")
    expect(panel.locator("input.email")).to_have_attribute("dir", "auto")


def test_a_streaming_reply_is_busy_for_screen_readers_until_it_is_done(widget_channel, acme_bot, host_site,
                                                                        live_server_url, page):
    """The log is aria-live: a bubble redrawn with every delta would be read out again and again. Busy
    while it streams, read once when done."""
    from bots import events, services

    panel, inbound = asked(page, host_site, live_server_url, acme_bot)
    as_worker(events.push, inbound.conversation_id, "reply.start", reply_to=inbound.id)
    as_worker(events.push, inbound.conversation_id, "reply.delta", reply_to=inbound.id, delta="We fix every")
    bot_bubble = panel.locator(".msg.bot:not(.greeting)")
    expect(bot_bubble).to_have_text("We fix every")
    expect(bot_bubble).to_have_attribute("aria-busy", "true")
    as_worker(events.push, inbound.conversation_id, "reply.delta", reply_to=inbound.id, delta=" bike.")
    expect(bot_bubble).to_have_text("We fix every bike.")
    expect(bot_bubble).to_have_attribute("aria-busy", "true")

    def done():  # what the worker does once the model has finished
        reply, _ = services.record_reply(inbound, "We fix every bike.", {"new_tokens": 4})
        events.push(inbound.conversation_id, "reply.done", reply_to=inbound.id, message=services.serialize_message(reply))

    as_worker(done)
    page.wait_for_function("window.__frames.some(f => f.type === 'reply.done')")
    expect(bot_bubble).to_have_count(1)
    expect(bot_bubble).not_to_have_attribute("aria-busy", re.compile(".*"))



def test_a_reply_the_history_already_shows_takes_no_late_stream(widget_channel, acme_bot, host_site, live_server_url,
                                                                  page):
    """The socket resynced, and its history frame holds the finished reply, while the reply's last stream
    frames were still on their way: they must not start a second, partial bubble that stays."""
    from bots import events, services

    panel, inbound = asked(page, host_site, live_server_url, acme_bot)
    as_worker(services.record_reply, inbound, "We fix every bike.", {"new_tokens": 4})
    resynced(page)
    bot_bubbles = panel.locator(".msg.bot:not(.greeting)")
    expect(bot_bubbles).to_have_text(["We fix every bike."])

    as_worker(events.push, inbound.conversation_id, "reply.start", reply_to=inbound.id)
    as_worker(events.push, inbound.conversation_id, "reply.delta", reply_to=inbound.id, delta="We fix")
    page.wait_for_function("window.__frames.some(f => f.type === 'reply.delta')")
    expect(bot_bubbles).to_have_text(["We fix every bike."])
    expect(panel.locator(".typing")).to_have_count(0)


def test_messages_written_offline_in_two_tabs_are_all_kept(widget_channel, acme_bot, host_site, live_server_url,
                                                           page):
    """Each tab wrote the visitor's store with its own unsent messages only: the second tab to write
    erased the first's, which was lost once that tab was closed."""
    from bots.models import Message
    from tests.conftest import free_port

    page.context.add_init_script(OFFLINE_SWITCH.replace("NOWHERE", f"'ws://127.0.0.1:{free_port()}/'"))
    first = open_chat(page, host_site, live_server_url, acme_bot)
    page.wait_for_function("window.__frames.some(f => f.type === 'history')")
    other = page.context.new_page()  # the same site in another tab, loaded before the first writes
    other.add_init_script(RECORD_FRAMES)
    other.goto(host_site.page_url(live_server_url, acme_bot.public_key))
    other_panel = other.get_by_role("dialog", name=f"Chat with {acme_bot.name}")  # open already, as the first left it
    other.wait_for_function("window.__frames.some(f => f.type === 'history')")
    for tab in (page, other):
        tab.evaluate("window.__offline = true; window.__sockets.forEach(s => s.close())")
    for tab, panel, text in ((page, first, "From the first tab"), (other, other_panel, "From the second tab")):
        tab.wait_for_function("window.__sockets.every(s => s.readyState >= 2)")  # no socket open
        box = panel.get_by_role("textbox", name="Message")
        box.fill(text)
        box.press("Enter")
        expect(panel.locator(".msg.me.pending")).to_have_text([text])
    page.close()  # the first tab goes, its unsent message with it unless the store kept it
    other.reload()  # online again
    wait_for(lambda: Message.objects.filter(bot=acme_bot, direction="in").count() == 2, what="both messages")
    assert sorted(Message.objects.filter(bot=acme_bot, direction="in").values_list("text", flat=True)) == [
        "From the first tab", "From the second tab"]
