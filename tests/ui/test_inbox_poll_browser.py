"""The thread page's poll in Chromium, incremental: from its first poll on it asks only for what changed
past the versions it holds (not the whole thread each time), and still shows what the server would draw —
a new message, a delivery status that moved, a message deleted, what changed while it was offline, and a
message committed after a later change it had already seen."""
import pytest
from playwright.sync_api import expect

from bots.models import Message
from tests.platform.test_inbox_poll_thread import committed_after

from .conftest import log_in

pytestmark = pytest.mark.browser


def test_the_thread_asks_for_what_changed_and_shows_what_the_server_would(transactional_db, live_server_url, page,
                                                                          alice, bob, acme_bot):
    from bots import services

    first = services.receive(bot=acme_bot, channel="widget", thread_id="v_poll01", text="Is my bike ready?",
                             answer=False)
    conversation = first.conversation
    reply, _ = services.record_reply(first.message, "Let me check.", {})
    # sent, as the delivery worker would mark it: the session's worker, if running, then leaves it alone (it
    # claims only a pending reply, and writes "sent" only over its own claim), so no version moves under the page
    Message.objects.filter(id=reply.id).update(delivery_status=Message.Delivery.SENT)
    spam = services.receive(bot=acme_bot, channel="widget", thread_id="v_poll01", text="Buy cheap watches",
                            answer=False).message
    polls = []
    page.on("request", lambda request: polls.append(request.url) if "messages.json" in request.url else None)
    log_in(page, live_server_url, "alice")
    page.goto(f"{live_server_url}/inbox/{conversation.id}/")
    messages = page.locator("#messages li.msg")
    expect(messages).to_have_count(3)
    while len(polls) < 2:  # the first poll, and one asked after its answer was taken
        with page.expect_request(lambda request: "messages.json" in request.url):
            pass
    held = max(int(version or 0) for version in messages.evaluate_all("lis => lis.map((li) => li.dataset.version)"))
    assert polls and all(url.endswith(f"?since={held}") for url in polls), polls  # what the server drew, held

    services.receive(bot=acme_bot, channel="widget", thread_id="v_poll01", text="Hello?", answer=False)
    Message.objects.filter(id=reply.id).update(delivery_status=Message.Delivery.DELIVERED)  # as the channel's callback
    expect(messages.last).to_contain_text("Hello?", timeout=15_000)
    expect(page.locator("li.msg", has_text="Let me check.")).to_contain_text("delivery: delivered", timeout=15_000)

    services.delete_messages(Message.objects.filter(id=spam.id))  # as the admin does
    expect(page.locator("li.msg", has_text="Buy cheap watches")).to_have_count(0, timeout=15_000)
    expect(messages).to_have_count(3)
    assert any("since" not in url for url in polls)  # the count fell short: it asked for all of them, once

    page.context.set_offline(True)  # the laptop's wifi drops
    page.wait_for_timeout(3500)
    services.receive(bot=acme_bot, channel="widget", thread_id="v_poll01", text="Are you there?", answer=False)
    services.rate_reply(conversation.id, reply.id, Message.Rating.HELPFUL)
    page.wait_for_timeout(3500)
    page.context.set_offline(False)
    expect(messages.last).to_contain_text("Are you there?", timeout=15_000)
    expect(page.locator("li.msg", has_text="Let me check.")).to_contain_text("customer: helpful")

    with committed_after(lambda: services.add_note(conversation, bob, "Frame is cracked, calling them.")):
        services.rate_reply(conversation.id, reply.id, Message.Rating.NOT_HELPFUL)  # bob's note commits after it
        expect(page.locator("li.msg", has_text="Let me check.")).to_contain_text("customer: not helpful",
                                                                                   timeout=15_000)
    expect(messages.last).to_contain_text("Frame is cracked, calling them.", timeout=15_000)

    with page.expect_request(lambda request: "messages.json" in request.url) as next_poll:
        pass
    assert "?since=" in next_poll.value.url  # all of them asked for only as long as they differed
    drawn = messages.all_inner_texts()
    page.reload()  # the server draws the same
    expect(messages).to_have_count(len(drawn))
    assert messages.all_inner_texts() == drawn
