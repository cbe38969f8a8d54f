"""Dashboard numbers (bots.stats): percentiles, daily series, speculative-decoding figures, handoff rate."""
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from bots import services, stats
from bots.models import Message

from .conftest import make_conversation


@pytest.mark.parametrize(
    "values,q,expected",
    [([], 50, None), ([3.0], 95, 3.0), ([1, 2, 3, 4], 50, 2.5), ([1, 2, 3, 4, 5], 50, 3.0),
     (list(range(1, 101)), 95, 95.05), ([5, None, 1], 100, 5.0)],
)  # fmt: skip
def test_it_computes_percentiles(values, q, expected):
    assert stats.percentile(values, q) == expected


def answer(inbound, latency, **stat):
    Message.objects.filter(id=inbound.id).update(reply_state="pending")
    inbound.refresh_from_db()
    reply, _ = services.record_reply(inbound, "ok", stat)
    Message.objects.filter(id=reply.id).update(latency_s=latency)
    return reply


def test_it_summarises_an_organisation(acme, acme_bot, globex_bot):
    _, m1 = make_conversation(acme_bot, thread="a")
    _, m2 = make_conversation(acme_bot, thread="b")
    answer(m1, 1.0, new_tokens=30, target_forwards=10, drafted=40, accepted=20, tokens_per_s=20.0, ttft_s=0.2,
           prompt_tokens=300, prefix_reused=0)
    answer(m2, 3.0, new_tokens=10, target_forwards=10, drafted=10, accepted=0, tokens_per_s=10.0, ttft_s=0.4,
           prompt_tokens=300, prefix_reused=256)
    acme_bot.handoff_triggers = "human please"
    acme_bot.save()
    acme_bot.publish()
    services.receive(bot=acme_bot, channel="widget", thread_id="c", text="Human please!")
    make_conversation(globex_bot, thread="g")  # another tenant: never counted

    data = stats.summary(acme, days=7)
    assert data["conversations"] == 3
    assert data["messages"] == 2 + 2 + 2  # 3 inbound, 2 bot replies, 1 handoff notice
    assert data["replies"] == 2
    assert data["latency_median_s"] == 2.0 and data["latency_p95_s"] == 2.9
    assert data["ttft_median_s"] == 0.3
    assert data["tokens_per_s"] == 15.0
    assert data["acceptance_rate"] == 0.4  # (20 + 0) / (40 + 10)
    assert data["tokens_per_forward"] == 2.0  # (30 + 10) / (10 + 10)
    assert data["prompt_reuse_rate"] == round(256 / 600, 3)
    assert data["handoff_rate"] == round(1 / 3, 3)
    today = data["series"][-1]
    assert len(data["series"]) == 7 and today["day"] == timezone.localdate().isoformat()
    assert today["conversations"] == 3 and today["inbound"] == 3 and today["outbound"] == 3


def test_the_builders_test_chat_is_not_customers_traffic(acme, acme_bot):
    _, asked = make_conversation(acme_bot, thread="a")
    _, tried = make_conversation(acme_bot, thread="preview-1", channel="preview")  # a manager trying the draft
    answer(tried, 9.0, new_tokens=20, tokens_per_s=99.0)
    data = stats.summary(acme, days=7)
    assert (data["conversations"], data["messages"], data["replies"]) == (1, 1, 0)
    assert "preview" not in data["channels"]


def test_days_are_the_organisations_not_utc(acme, acme_bot):
    from datetime import datetime
    from zoneinfo import ZoneInfo

    acme.timezone = "America/Los_Angeles"
    acme.save()
    la = ZoneInfo("America/Los_Angeles")
    now = datetime(2026, 3, 10, 12, 0, tzinfo=la)
    evening = datetime(2026, 3, 9, 17, 30, tzinfo=la)  # already 10 March in UTC
    conversation, inbound = make_conversation(acme_bot, thread="evening")
    Message.objects.filter(id=inbound.id).update(created=evening)
    type(conversation).objects.filter(id=conversation.id).update(created=evening)
    week_ago = datetime(2026, 3, 3, 23, 0, tzinfo=la)  # before the 7 days shown (4-10 March), 4 March in UTC
    _, old = make_conversation(acme_bot, thread="old")
    Message.objects.filter(id=old.id).update(created=week_ago)
    data = stats.summary(acme, days=7, now=now)
    by_day = {d["day"]: d["inbound"] for d in data["series"]}
    assert by_day["2026-03-09"] == 1 and by_day["2026-03-10"] == 0
    assert data["series"][0]["day"] == "2026-03-04" and data["messages"] == sum(by_day.values()) == 1


def test_speed_is_the_models_canned_replies_left_out(acme, acme_bot):
    _, asked = make_conversation(acme_bot, thread="a")
    answer(asked, 2.0, new_tokens=20, tokens_per_s=25.0, ttft_s=0.3)
    photo = services.receive(bot=acme_bot, channel="widget", thread_id="b", text="", answer=False,
                             files=[("chain.png", "image/png", b"\x89PNG\r\n\x1a\n" + bytes(16))])
    services.canned_reply(photo)  # answered at once, without the model
    data = stats.summary(acme, days=7)
    assert data["replies"] == 2
    assert data["latency_median_s"] == 2.0 and data["ttft_median_s"] == 0.3 and data["tokens_per_s"] == 25.0
    assert data["series"][-1]["latency_median_s"] == 2.0


def test_it_summarises_one_bot_and_skips_old_messages(acme, acme_bot):
    from bots.models import Bot

    other = Bot.objects.create(organization=acme, name="Other")
    other.publish()
    _, old = make_conversation(acme_bot, thread="old")
    Message.objects.filter(id=old.id).update(created=timezone.now() - timedelta(days=30))
    make_conversation(other, thread="x")
    data = stats.summary(acme, bot=acme_bot, days=14)
    assert data["messages"] == 0 and data["latency_median_s"] is None and data["acceptance_rate"] is None
    assert data["prompt_reuse_rate"] is None


def test_it_renders_the_dashboards_with_local_chart_library(client, alice, acme_bot):
    _, m1 = make_conversation(acme_bot)
    answer(m1, 1.5, new_tokens=8, target_forwards=4, drafted=8, accepted=4, tokens_per_s=12.0, ttft_s=0.1,
           prompt_tokens=200, prefix_reused=128)
    client.force_login(alice)
    page = client.get(reverse("dashboards:org")).content.decode()
    assert "/static/chatnexus/vendor/chart.umd.min.js" in page and "cdn" not in page.lower()
    assert "2.00×" in page  # tokens per target forward
    assert '<strong data-stat="prompt-reuse">64 %</strong>' in page  # 128 of 200 prompt tokens
    # one precision per kind of number, on the tiles and in the bots table alike
    assert '<strong data-stat="latency">1.50 / 1.50 s</strong>' in page
    assert '<strong data-stat="ttft">0.10 / 0.10 s</strong>' in page
    assert '<strong data-stat="tokens-per-s">12.0</strong>' in page
    assert "<td>1.50 s</td><td>12.0</td><td>50 %</td><td>0 %</td><td>—</td>" in page
    assert 'id="no-data"' not in page
    page = client.get(reverse("dashboards:bot", args=[acme_bot.id]), {"days": "30"}).content.decode()
    assert "Last 30 days" in page
    assert client.get(reverse("dashboards:org"), {"format": "json"}).json()["replies"] == 1
    assert client.get("/static/chatnexus/vendor/chart.umd.min.js").status_code == 200


def test_an_empty_period_says_so_instead_of_showing_bare_charts(client, alice, acme_bot):
    client.force_login(alice)
    page = client.get(reverse("dashboards:org")).content.decode()
    assert 'id="no-data"' in page and "No conversations in the last 14 days yet" in page
    page = client.get(reverse("dashboards:bot", args=[acme_bot.id]), {"days": "7"}).content.decode()
    assert "No conversations in the last 7 days for Ava yet" in page


def test_customer_ratings_give_the_helpful_share(client, alice, acme_bot):
    replies = []
    for thread in "abcd":
        _, inbound = make_conversation(acme_bot, thread=thread)
        replies.append(answer(inbound, 1.0, new_tokens=4, target_forwards=4))
    assert stats.summary(alice.memberships.first().organization)["helpful_rate"] is None  # nobody rated yet
    for reply, rating in zip(replies, [1, 1, -1]):  # the fourth is not rated
        assert services.rate_reply(reply.conversation_id, reply.id, rating)
    assert not services.rate_reply(replies[3].conversation_id, replies[0].id, 1)  # not in that conversation
    data = stats.summary(alice.memberships.first().organization)
    assert data["rated_replies"] == 3 and data["helpful_rate"] == round(2 / 3, 3)
    client.force_login(alice)
    page = client.get(reverse("dashboards:org")).content.decode()
    assert '<strong data-stat="helpful">67 % of 3</strong>' in page
    thread = client.get(f"/inbox/{replies[2].conversation_id}/").content.decode()
    assert "customer: not helpful" in thread


def test_agent_response_time_runs_from_the_handoff_request_to_the_first_agent_message(acme, acme_bot, alice):
    acme_bot.handoff_triggers = "human please"
    acme_bot.save()
    acme_bot.publish()
    now = timezone.now()
    for thread, wait in (("h1", 30), ("h2", 90), ("h3", None)):  # h3: nobody has answered yet
        received = services.receive(bot=acme_bot, channel="widget", thread_id=thread, text="Human please!")
        Message.objects.filter(id=received.message.id).update(created=now - timedelta(minutes=10))
        if wait is not None:
            reply = services.agent_reply(received.conversation, alice, "Alice here")
            services.agent_reply(received.conversation, alice, "Still here")  # later messages do not count
            Message.objects.filter(id=reply.id).update(created=now - timedelta(minutes=10) + timedelta(seconds=wait))
    data = stats.summary(acme, days=7)
    assert data["handoffs_answered"] == 2
    assert data["agent_response_median_s"] == 60.0 and data["agent_response_p95_s"] == 87.0


def test_messages_a_handoff_swept_to_the_team_are_not_the_request(acme, acme_bot, alice):
    """A customer asks two questions the slow bot has not answered yet, then asks for a person: all three
    are the team's now, but the agent's response time runs from the request, not from the oldest."""
    acme_bot.handoff_triggers = "human please"
    acme_bot.save()
    acme_bot.publish()
    now = timezone.now()
    waiting = [services.receive(bot=acme_bot, channel="widget", thread_id="t", text=text).message
               for text in ("Do you ship to Canada?", "And to Mexico?")]
    request = services.receive(bot=acme_bot, channel="widget", thread_id="t", text="human please").message
    for message, minutes_ago in zip(waiting + [request], (30, 29, 2)):
        Message.objects.filter(id=message.id).update(created=now - timedelta(minutes=minutes_ago))
    reply = services.agent_reply(request.conversation, alice, "Alice here")
    Message.objects.filter(id=reply.id).update(created=now - timedelta(minutes=1))

    reasons = [m.meta["skip_reason"] for m in Message.objects.filter(id__in=[w.id for w in waiting]).order_by("id")]
    assert reasons == ["handed to the team before an answer"] * 2
    data = stats.summary(acme, days=7)
    assert data["handoffs_answered"] == 1 and data["agent_response_median_s"] == 60.0
    assert data["handoff_rate"] == 1.0


def test_a_handoff_after_the_model_failed_counts_as_a_handoff(acme, acme_bot, alice):
    """The model could not answer, so the conversation went to the team (services.hand_off_after_failure):
    a handoff on the dashboard, the agent's wait measured from the message handed over."""
    make_conversation(acme_bot, thread="fine")
    conversation, broken = make_conversation(acme_bot, thread="broken")
    Message.objects.filter(id=broken.id).update(reply_state=Message.ReplyState.FAILED)
    services.hand_off_after_failure(broken)
    services.agent_reply(conversation, alice, "Alice here")
    data = stats.summary(acme, days=7)
    assert data["handoff_rate"] == 0.5 and data["handoffs_answered"] == 1


def test_an_ongoing_conversation_counts_in_the_days_it_has_messages(client, alice, acme, acme_bot):
    """A WhatsApp number or a widget visitor is one conversation for good: one started weeks ago with a
    message today is a conversation of these days, on the tiles, the chart and the page."""
    conversation, old = make_conversation(acme_bot, thread="for-good")
    type(conversation).objects.filter(id=conversation.id).update(created=timezone.now() - timedelta(days=40))
    Message.objects.filter(id=old.id).update(created=timezone.now() - timedelta(days=40))
    make_conversation(acme_bot, thread="for-good", text="Back again")
    data = stats.summary(acme, days=14)
    assert (data["conversations"], data["messages"], data["channels"]) == (1, 1, {"widget": 1})
    assert data["series"][-1]["conversations"] == 1 and data["handoff_rate"] == 0.0
    client.force_login(alice)
    page = client.get(reverse("dashboards:org")).content.decode()
    assert '<strong data-stat="conversations">1</strong>' in page and 'id="no-data"' not in page


def hand_offs(bot):
    bot.handoff_triggers = "human please"
    bot.save()
    bot.publish()


def at(message, when):
    """``message`` as if stored at ``when``."""
    Message.objects.filter(id=message.id).update(created=when)
    return message


def test_each_handoff_is_timed_from_its_own_start_to_the_first_agent_message_after_it(acme, acme_bot, alice):
    """A conversation handed off again after the team closed it or gave it back: each handoff waits from its
    own request, and one that ended before an agent wrote (the bot answered again, or a new handoff began)
    stays unanswered, whatever an agent writes later."""
    hand_offs(acme_bot)
    now = timezone.now()

    def hand_off(thread, ago):
        return at(services.receive(bot=acme_bot, channel="widget", thread_id=thread, text="Human please!").message,
                  now - ago)

    def agent(message, ago):
        return at(services.agent_reply(message.conversation, alice, "Alice here"), now - ago)

    def bot_answers(thread, ago):  # the customer writes to the bot again, which answers a minute later
        _, again = make_conversation(acme_bot, thread=thread, text="Still there?")
        at(answer(at(again, now - ago), 1.0), now - ago + timedelta(minutes=1))

    closed = hand_off("closed", timedelta(days=20))  # nobody answered; closed, then the bot had it again
    services.set_status(closed.conversation, "closed")
    bot_answers("closed", timedelta(days=2))
    agent(hand_off("closed", timedelta(minutes=2)), timedelta(minutes=1))  # 60 s
    given_back = hand_off("given-back", timedelta(days=10))  # nobody answered; given back, handed off again
    services.set_bot_paused(given_back.conversation, False)
    agent(hand_off("given-back", timedelta(minutes=5)), timedelta(minutes=4))  # 60 s
    twice = hand_off("twice", timedelta(hours=3))
    agent(twice, timedelta(hours=3) - timedelta(seconds=30))  # 30 s
    services.set_bot_paused(twice.conversation, False)
    agent(hand_off("twice", timedelta(hours=2)), timedelta(hours=2) - timedelta(seconds=90))  # 90 s
    dropped = hand_off("dropped", timedelta(days=4))  # closed unanswered; the bot answered; later an agent wrote
    services.set_status(dropped.conversation, "closed")
    bot_answers("dropped", timedelta(days=3))
    agent(dropped, timedelta(days=1))

    data = stats.summary(acme, days=30)
    assert (data["agent_response_median_s"], data["agent_response_p95_s"]) == (60.0, 85.5)  # of 30, 60, 60, 90
    assert (data["handoffs_answered"], data["handoffs"]) == (4, 7)


def test_the_agent_response_tile_says_how_many_handoffs_were_answered(client, alice, acme_bot):
    hand_offs(acme_bot)
    now = timezone.now()
    asked = now - timedelta(minutes=5)
    answered, _waiting = (at(services.receive(bot=acme_bot, channel="widget", thread_id=thread, text="Human please!")
                             .message, asked) for thread in ("answered", "waiting"))
    at(services.agent_reply(answered.conversation, alice, "Alice here"), asked + timedelta(seconds=45))
    client.force_login(alice)
    page = client.get(reverse("dashboards:org")).content.decode()
    assert '<strong data-stat="agent-response">45.0 / 45.0 s, 1 of 2 answered</strong>' in page


def test_mail_a_machine_sent_is_not_customers_traffic(acme, acme_bot):
    """Newsletters, list mail and auto-replies are stored for the inbox (channels_app/email/inbound.py), but no
    customer wrote them: neither conversations nor messages on the dashboard, nor behind the handoff rate."""
    from channels_app.email import inbound
    from channels_app.models import ChannelConfig
    from tests.channels.mails import mail

    email = ChannelConfig.objects.create(organization=acme, bot=acme_bot, kind="email",
                                         settings={"address": "help@acme-bikes.example"})
    newsletter = mail(sender="Riders <news@riders.example.com>", subject="This week's rides", message_id="<n@riders>",
                      extra="List-Id: <rides.riders.example.com>\r\n"
                            "List-Unsubscribe: <mailto:u@riders.example.com>\r\n")
    away = mail(sender="Dana <dana@shop.example>", subject="Out of office", message_id="<ooo@shop>",
                extra="Auto-Submitted: auto-replied\r\n")
    for raw in (newsletter, away):
        assert inbound.ingest(email, raw, "test").message.meta["automated"] is True
    hand_offs(acme_bot)
    services.receive(bot=acme_bot, channel="widget", thread_id="person", text="Human please!")

    data = stats.summary(acme, days=7)
    # the request and the handoff message
    assert (data["conversations"], data["messages"], data["channels"]) == (1, 2, {"widget": 1})
    assert data["handoff_rate"] == 1.0 and data["series"][-1]["inbound"] == 1


def test_the_wait_before_the_model_starts_is_shown_beside_the_time_to_first_token(client, alice, acme, acme_bot):
    """The engine's time to first token starts when it does: the time the message waited in the queue (and
    for its prompt) before it is the rest of the reply latency, less the engine's whole time."""
    for thread, latency, total in (("a", 2.0, 1.0), ("b", 4.5, 1.5)):
        _, asked = make_conversation(acme_bot, thread=thread)
        answer(asked, latency, new_tokens=10, ttft_s=0.2, total_s=total)
    data = stats.summary(acme, days=7)
    assert (data["queue_median_s"], data["queue_p95_s"]) == (2.0, 2.9)  # of 1.0 and 3.0
    client.force_login(alice)
    page = client.get(reverse("dashboards:org")).content.decode()
    assert '<strong data-stat="queue">2.00 / 2.90 s</strong>' in page
    assert "Time to first token from the model's start" in page
