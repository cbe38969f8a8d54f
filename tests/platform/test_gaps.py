"""A bot's questions to answer (bots/gaps.py) on its dashboard: customer messages whose reply used
the fallback answer, was rated not helpful, was followed by a request for a person, or never came
(the model failed or ran out of time) — the same
question counted once per asking, the window respected, other bots and the test chat left out;
"Add as FAQ" opens the builder with the question filled in."""
import re
from datetime import timedelta
from html import unescape

import pytest
from django.urls import reverse
from django.utils import timezone

from bots import gaps, services
from bots.knowledge import folded
from bots.models import Message

from .conftest import make_conversation

pytestmark = pytest.mark.django_db


def ask(bot, thread, question, answer, rating=None, channel="widget"):
    inbound = services.receive(bot=bot, channel=channel, thread_id=thread, text=question, answer=False).message
    reply, _ = services.record_reply(inbound, answer, {"new_tokens": 5})
    if rating is not None:
        Message.objects.filter(id=reply.id).update(rating=rating)
    return inbound


def test_the_dashboard_lists_what_the_bot_could_not_answer(client, alice, acme_bot, globex_bot):
    fallback = acme_bot.fallback_answer
    ask(acme_bot, "t1", "Do you sell helmets?", f"Hmm. {fallback}")
    ask(acme_bot, "t2", "do you sell   HELMETS?", fallback)
    ask(acme_bot, "t3", "When are you open?", "Nine to six.", rating=1)
    ask(acme_bot, "t4", "How much is a tune-up?", "We do not know prices.", rating=-1)
    ask(acme_bot, "t5", "Can you fix my e-bike motor?", "Sure, bring it in.")
    services.receive(bot=acme_bot, channel="widget", thread_id="t5", text="I want to talk to a human")  # a handoff
    old = ask(acme_bot, "t6", "Do you rent tandems?", fallback)
    Message.objects.filter(conversation_id=old.conversation_id).update(created=timezone.now() - timedelta(days=40))
    ask(acme_bot, "t7", "Test question in the builder", fallback, channel="preview")
    ask(globex_bot, "g1", "Do you take new patients?", globex_bot.fallback_answer)

    client.force_login(alice)
    page = client.get(reverse("dashboards:bot", args=[acme_bot.id]), {"days": 30})
    rows = [(g["question"], g["count"], g["reasons"]) for g in page.context["gaps"]]
    assert rows == [
        ("do you sell   HELMETS?", 2, ["fallback answer"]),  # asked twice: first; shown as last asked
        ("Can you fix my e-bike motor?", 1, ["then asked for a person"]),
        ("How much is a tune-up?", 1, ["rated not helpful"]),
    ]
    html = page.content.decode()
    assert 'id="gaps"' in html and "Do you rent tandems?" not in html and "patients" not in html
    link = reverse("bots:builder", args=[acme_bot.id]) + "?faq=How%20much%20is%20a%20tune-up%3F#knowledge"
    assert link in unescape(html)

    builder = client.get(link.split("#")[0]).content.decode()
    assert 'value="How much is a tune-up?"' in builder and 'data-active-tab="knowledge"' in builder


def test_a_bot_with_nothing_to_answer_says_so(client, alice, acme_bot):
    ask(acme_bot, "fine", "When are you open?", "Nine to six.")
    client.force_login(alice)
    page = client.get(reverse("dashboards:bot", args=[acme_bot.id]))
    assert page.context["gaps"] == [] and "None in the last 14 days." in page.content.decode()


@pytest.mark.parametrize("reply, counts", [
    ("I'm not sure about that — let me get a colleague to help.", True),  # word for word
    ("Thanks for asking! I am not sure about that, let me get a colleague to help you.", True),  # reworded
    ("I'm not sure about that. Let me get a colleague to help!", True),  # split in two sentences
    ("We're open nine to six. I'm sure about that: come and see us.", False),
    ("Sure, a colleague fixed that for me yesterday.", False),
    ("No.", False),
])
def test_a_reply_that_rewords_the_fallback_answer_counts_too(reply, counts):
    from bots.gaps import used_fallback
    from bots.knowledge import folded

    assert used_fallback(reply, {folded("I'm not sure about that — let me get a colleague to help.")}) is counts


def test_a_handoff_labels_the_question_before_the_request_not_those_it_swept(acme_bot):
    """Questions still waiting for the bot when the customer asked for a person go to the team with the
    request; the one right before the request is what they asked before giving up on the bot."""
    acme_bot.handoff_triggers = "human please"
    acme_bot.save()
    acme_bot.publish()
    ask(acme_bot, "t", "What are your opening hours?", "Nine to six.")
    for text in ("Do you ship to Canada?", "And to Mexico?", "human please"):  # the bot had not answered yet
        services.receive(bot=acme_bot, channel="widget", thread_id="t", text=text)
    rows = [(g["question"], g["reasons"]) for g in gaps.questions_to_answer(acme_bot, 7).rows]
    assert rows == [("And to Mexico?", ["then asked for a person"])]


def test_the_fallback_answers_are_read_without_each_versions_whole_config(acme_bot):
    """Every published version keeps the whole config, knowledge included: only its fallback answer is read."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    acme_bot.fallback_answer = "Let me ask a colleague."
    acme_bot.save()
    acme_bot.publish()
    with CaptureQueriesContext(connection) as queries:
        found = gaps._fallbacks(acme_bot)
    assert folded("Let me ask a colleague.") in found
    versions = [q["sql"] for q in queries.captured_queries if "bots_botversion" in q["sql"]]
    assert len(versions) == 1, versions  # one query for all the versions
    assert not re.search(r'"config"\s*(FROM|,(?!\s*\'))', versions[0]), versions  # never the column itself


def test_a_question_the_model_failed_on_or_ran_out_of_time_for_is_listed(acme_bot, globex_bot):
    """Such a message is marked failed and handed to the team (inference/tasks.py): no bot reply
    to look at, so it was missing from the list."""
    from inference.tasks import NothingInTime, _mark_failed

    def waiting(message):  # as a message the worker took is (receive(answer=False) queues nothing)
        Message.objects.filter(id=message.id).update(reply_state="pending")
        return message

    late = services.receive(bot=acme_bot, channel="widget", thread_id="slow", text="Can you fit tubeless tyres?",
                            answer=False).message
    waiting(late)
    _mark_failed(late, NothingInTime("no reply within the time limit"))
    other = services.receive(bot=globex_bot, channel="widget", thread_id="slow", text="Globex question?",
                             answer=False).message
    waiting(other)
    _mark_failed(other, RuntimeError("broken model"))
    preview = services.receive(bot=acme_bot, channel="preview", thread_id="p", text="Test chat question?",
                               answer=False).message
    waiting(preview)
    _mark_failed(preview, RuntimeError("broken model"))
    rows = [(g["question"], g["reasons"]) for g in gaps.questions_to_answer(acme_bot, 7).rows]
    assert rows == [("Can you fit tubeless tyres?", ["not answered (the model failed or ran out of time)"])]
    assert Message.objects.get(id=late.id).reply_state == "failed"


def tokyo_days(organization, days):
    """The organisation now in Tokyo (UTC+9, no summer time): the first of its last ``days`` days, and its start."""
    from datetime import datetime, time
    from zoneinfo import ZoneInfo

    organization.timezone = "Asia/Tokyo"
    organization.save()
    tokyo = ZoneInfo("Asia/Tokyo")
    first_day = timezone.localdate(timezone.now(), tokyo) - timedelta(days=days - 1)
    return first_day, datetime.combine(first_day, time.min, tzinfo=tokyo)


def asked_at(bot, thread, question, when):
    asked = ask(bot, thread, question, bot.fallback_answer)
    Message.objects.filter(conversation_id=asked.conversation_id).update(created=when)


def test_the_list_covers_the_same_days_as_the_tiles(client, alice, acme, acme_bot):
    """The tiles count the organisation's days (midnight to midnight in its time zone), and so does the list:
    a question asked the second before the first day is in neither."""
    _, since = tokyo_days(acme, 7)
    asked_at(acme_bot, "before", "Do you rent tandems?", since - timedelta(seconds=1))
    asked_at(acme_bot, "first-day", "Do you sell helmets?", since)
    client.force_login(alice)
    page = client.get(reverse("dashboards:bot", args=[acme_bot.id]), {"days": 7})
    assert [g["question"] for g in page.context["gaps"]] == ["Do you sell helmets?"]
    assert page.context["stats"]["messages"] == 2  # the tiles: that question and its reply
    assert 'id="gaps-cut"' not in page.content.decode()  # all of the window was read


def test_the_list_says_when_in_the_organisations_time_zone(client, alice, acme, acme_bot):
    first_day, since = tokyo_days(acme, 7)
    asked_at(acme_bot, "first-day", "Do you sell helmets?", since + timedelta(hours=1, minutes=5))  # 16:05 UTC, a day before
    client.force_login(alice)
    html = client.get(reverse("dashboards:bot", args=[acme_bot.id]), {"days": 7}).content.decode()
    assert f"<td>{first_day.day} {first_day:%b}, 01:05</td>" in html and "Last (Asia/Tokyo)" in html


def test_a_window_with_more_replies_than_it_reads_says_from_when_it_read(client, alice, acme_bot):
    """Only the newest SCANNED replies are read (a bound on the page's work): where there were more, the
    page says from when on it read them, rather than leaving older questions out without a word."""
    ask(acme_bot, "oldest", "Do you rent tandems?", acme_bot.fallback_answer)
    conversation, _ = make_conversation(acme_bot, thread="busy")
    common = {"organization_id": acme_bot.organization_id, "bot": acme_bot, "conversation": conversation,
              "channel": "widget"}
    questions = Message.objects.bulk_create(
        Message(**common, direction=Message.Direction.INBOUND, sender=Message.Sender.CUSTOMER, text=f"Question {i}?",
                reply_state=Message.ReplyState.DONE) for i in range(gaps.SCANNED))
    replies = Message.objects.bulk_create(
        Message(**common, direction=Message.Direction.OUTBOUND, sender=Message.Sender.BOT, text="Nine to six.",
                reply_to=question) for question in questions)
    client.force_login(alice)
    html = client.get(reverse("dashboards:bot", args=[acme_bot.id])).content.decode()
    oldest_read = Message.objects.get(id=replies[0].id).created  # in UTC, the organisation's time zone
    assert "Do you rent tandems?" not in html
    assert 'id="gaps-cut"' in html
    assert f"questions asked before {oldest_read.day} {oldest_read:%b, %H:%M} may be missing" in html
