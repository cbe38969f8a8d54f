"""The inbox thread page in Chromium, as an agent works it: Send clicked again while the first click is on
its way sends one reply; a reply the server refused (too long, the session expired) is still in the box
afterwards, and goes from it once the thread shows it stored; the page follows what another agent (or
the customer) did to the conversation — taken over, assigned, closed, needing a human — in the words
the server draws."""
import threading

import pytest
from django.contrib.sessions.models import Session
from django.db import connection, transaction
from playwright.sync_api import expect

from bots.models import Conversation

from .conftest import log_in

pytestmark = pytest.mark.browser


def test_send_clicked_again_while_the_first_is_on_its_way_sends_one_reply(transactional_db, live_server_url, page,
                                                                           alice, acme_bot):
    from bots import services

    first = services.receive(bot=acme_bot, channel="widget", thread_id="v_twice01", text="My chain broke.",
                             answer=False)
    conversation = first.conversation
    log_in(page, live_server_url, "alice")
    page.goto(f"{live_server_url}/inbox/{conversation.id}/")
    held, release = threading.Event(), threading.Event()

    def slow_server():  # the conversation's row held: the reply cannot be stored until released
        with transaction.atomic():
            Conversation.objects.select_for_update().get(id=conversation.id)
            held.set()
            release.wait(30)
        connection.close()

    posts, seen = [], []
    page.on("request", lambda request: posts.append(request.url) if request.method == "POST" else None)
    page.on("console", lambda message: seen.append(message.text))
    page.get_by_label("Reply as alice").fill("Bring it in today.")
    # what the agent sees while the post is on its way (the browser answers no questions about a page
    # it is leaving, but the page itself can still say what happens on it)
    page.evaluate("""() => new MutationObserver(() => console.log("disabled: " +
        Array.from(document.querySelectorAll("#reply-form button")).map((b) => b.disabled).join()))
        .observe(document.getElementById("reply-form"), {attributes: true, subtree: true, attributeFilter: ["disabled"]})""")
    send = page.get_by_role("button", name="Send", exact=True)
    where = send.bounding_box()
    holder = threading.Thread(target=slow_server)
    holder.start()
    assert held.wait(10)
    try:
        send.dblclick(no_wait_after=True)
        page.wait_for_timeout(1000)
        page.mouse.click(where["x"] + where["width"] / 2, where["y"] + where["height"] / 2)  # and once more
        page.wait_for_timeout(1000)
    finally:
        release.set()
        holder.join(10)
    expect(page.locator("li.msg", has_text="Bring it in today.")).to_have_count(1)
    page.wait_for_timeout(1000)  # a second post, had one gone, would be stored by now
    assert conversation.messages.filter(sender="agent").count() == 1
    assert len(posts) == 1 and "disabled: true,true" in seen
    expect(page.get_by_label("Reply as alice")).to_have_value("")

    # the other button still says what it is: a note stays with the team
    page.get_by_label("Reply as alice").fill("Customer since 2019.")
    page.get_by_role("button", name="Add as internal note").click()
    expect(page.locator("li.msg.note", has_text="Customer since 2019.")).to_have_count(1)
    assert conversation.messages.filter(sender="agent").count() == 1


def test_a_refused_reply_stays_in_the_box_until_the_thread_shows_it(transactional_db, live_server_url, page, alice,
                                                                     acme_bot):
    from bots import services

    first = services.receive(bot=acme_bot, channel="widget", thread_id="v_refused01", text="Hello?", answer=False)
    thread = f"{live_server_url}/inbox/{first.conversation.id}/"
    log_in(page, live_server_url, "alice")
    page.goto(thread)
    box = page.get_by_label("Reply as alice")

    # too long for the server (a browser that ignores the box's maxlength)
    box.evaluate("b => { b.removeAttribute('maxlength'); }")
    box.fill("x" * 10_001)
    page.get_by_role("button", name="Send", exact=True).click()
    expect(page.locator("body")).to_contain_text("Write a reply of 1 to 10000 characters.")
    expect(box).to_have_value("x" * 10_001)

    # the session ended meanwhile: the reply goes to the sign-in page; signed in again (another tab), back to the thread
    box.fill("Sorry for the wait, we fix it today.")
    Session.objects.all().delete()
    page.get_by_role("button", name="Send", exact=True).click()
    expect(page).to_have_url(f"{live_server_url}/accounts/login/?next=/inbox/{first.conversation.id}/reply/")
    log_in(page.context.new_page(), live_server_url, "alice")
    page.goto(thread)
    expect(box).to_have_value("Sorry for the wait, we fix it today.")
    assert not first.conversation.messages.filter(sender="agent").exists()

    page.get_by_role("button", name="Send", exact=True).click()
    expect(page.locator("li.msg", has_text="Sorry for the wait, we fix it today.")).to_have_count(1)
    expect(box).to_have_value("")
    page.reload()
    expect(box).to_have_value("")  # stored: not brought back


def test_the_thread_follows_what_others_did_to_the_conversation(transactional_db, live_server_url, page, alice, bob,
                                                                acme_bot):
    from bots import services

    first = services.receive(bot=acme_bot, channel="widget", thread_id="v_others01", text="Hello", answer=False)
    conversation = first.conversation
    log_in(page, live_server_url, "alice")
    page.goto(f"{live_server_url}/inbox/{conversation.id}/")
    status, mode, needs_human = page.locator("#conv-status"), page.locator("#conv-mode"), page.locator("#conv-needs-human")
    take_over = page.get_by_role("button", name="Take over")
    give_back = page.get_by_role("button", name="Give back to the bot")
    close, reopen = page.get_by_role("button", name="Close", exact=True), page.get_by_role("button", name="Reopen")
    assignee = page.get_by_label("Assigned to")
    expect(take_over).to_be_visible()
    expect(give_back).to_be_hidden()
    expect(needs_human).to_be_hidden()

    services.set_bot_paused(conversation, True, by=bob)  # bob, in his own tab
    expect(give_back).to_be_visible(timeout=15_000)
    expect(take_over).to_be_hidden()
    expect(mode).to_have_text("an agent has it")
    expect(assignee).to_have_value(str(bob.id))
    expect(status).to_have_text("Open")

    services.set_status(conversation, Conversation.Status.CLOSED)
    expect(status).to_have_text("Closed", timeout=15_000)
    expect(reopen).to_be_visible()
    expect(close).to_be_hidden()
    expect(take_over).to_be_visible()  # closing gave it back to the bot

    services.receive(bot=acme_bot, channel="widget", thread_id="v_others01", text="Can I talk to a human?")
    expect(needs_human).to_be_visible(timeout=15_000)
    expect(status).to_have_text("Open")
    expect(close).to_be_visible()

    assignee.select_option("alice")  # being chosen, not sent yet: the next poll leaves it alone
    services.receive(bot=acme_bot, channel="widget", thread_id="v_others01", text="Anyone there?", answer=False)
    expect(page.locator("li.msg", has_text="Anyone there?")).to_be_visible(timeout=15_000)
    expect(assignee).to_have_value(str(alice.id))
    page.reload()  # the server draws the same
    expect(status).to_have_text("Open")
    expect(needs_human).to_be_visible()
    expect(assignee).to_have_value(str(bob.id))
