"""A bot's questions to answer (bots/gaps.py) on its dashboard: customer messages whose reply used
the fallback answer, was rated not helpful, or was followed by a request for a person — the same
question counted once per asking, the window respected, other bots and the test chat left out;
"Add as FAQ" opens the builder with the question filled in."""
from datetime import timedelta
from html import unescape

import pytest
from django.urls import reverse
from django.utils import timezone

from bots import services
from bots.models import Message

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
