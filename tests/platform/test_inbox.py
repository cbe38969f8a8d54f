"""The inbox: filters, thread page with stats, agent replies, take over / give back, close / reopen."""
from django.urls import reverse

from bots import services
from bots.models import Conversation, Message

from .conftest import make_conversation


def test_it_lists_conversations_and_filters_them(client, bob, acme_bot):
    widget, _ = make_conversation(acme_bot, channel="widget", thread="v1", contact={"name": "Wendy Widget"})
    mail, _ = make_conversation(acme_bot, channel="email", thread="t1", contact={"name": "Eve Email"})
    Conversation.objects.filter(id=mail.id).update(needs_human=True)
    client.force_login(bob)
    page = client.get(reverse("inbox:list")).content.decode()
    assert "Wendy Widget" in page and "Eve Email" in page
    page = client.get(reverse("inbox:list"), {"channel": "email"}).content.decode()
    assert "Eve Email" in page and "Wendy Widget" not in page
    page = client.get(reverse("inbox:list"), {"needs_human": "on"}).content.decode()
    assert "Eve Email" in page and "Wendy Widget" not in page
    page = client.get(reverse("inbox:list"), {"status": "closed"}).content.decode()
    assert "Eve Email" not in page and "Wendy Widget" not in page
    assert client.get(reverse("inbox:list"), {"bot": "abc"}).status_code == 400


def test_it_shows_a_thread_with_reply_stats(client, bob, acme_bot):
    conversation, inbound = make_conversation(acme_bot, text="When are you open?")
    Message.objects.filter(id=inbound.id).update(reply_state="pending")
    inbound.refresh_from_db()
    services.record_reply(
        inbound, "Nine to six.", {"new_tokens": 7, "drafted": 10, "accepted": 6, "acceptance_rate": 0.6,
                                  "tokens_per_s": 21.5, "ttft_s": 0.12, "mean_tokens_per_forward": 1.75},
    )  # fmt: skip
    client.force_login(bob)
    page = client.get(reverse("inbox:thread", args=[conversation.id])).content.decode()
    assert "Nine to six." in page and "21.5 tok/s" in page and "acceptance 0.60" in page and "TTFT 0.12 s" in page
    data = client.get(reverse("inbox:thread-json", args=[conversation.id])).json()
    assert [m["text"] for m in data["messages"]] == ["When are you open?", "Nine to six."]
    assert data["messages"][1]["stats"]["new_tokens"] == 7


def test_it_sends_an_agent_reply_and_pauses_the_bot(client, bob, acme_bot):
    conversation, _ = make_conversation(acme_bot, channel="preview")
    client.force_login(bob)
    response = client.post(reverse("inbox:reply", args=[conversation.id]), {"text": "Hi, Bob here."})
    assert response.status_code == 302
    reply = conversation.messages.get(sender="agent")
    assert reply.text == "Hi, Bob here." and reply.meta["agent_name"] == "bob"
    conversation.refresh_from_db()
    assert conversation.bot_paused


def test_it_refuses_an_empty_agent_reply(client, bob, acme_bot):
    conversation, _ = make_conversation(acme_bot)
    client.force_login(bob)
    client.post(reverse("inbox:reply", args=[conversation.id]), {"text": "   "})
    assert not conversation.messages.filter(sender="agent").exists()


def test_it_takes_over_gives_back_closes_and_reopens(client, bob, acme_bot):
    conversation, _ = make_conversation(acme_bot)
    client.force_login(bob)

    def post(action):
        assert client.post(reverse(f"inbox:{action}", args=[conversation.id])).status_code == 302
        conversation.refresh_from_db()
        return conversation

    assert post("take-over").bot_paused
    assert not post("give-back").bot_paused
    assert post("close").status == "closed"
    assert post("reopen").status == "open"
    assert client.get(reverse("inbox:close", args=[conversation.id])).status_code == 405


def _answered(bot, thread, text="Hi", reply_text="Hello!", rating=None):
    conversation, inbound = make_conversation(bot, thread=thread, text=text)
    Message.objects.filter(id=inbound.id).update(reply_state="pending")
    inbound.refresh_from_db()
    reply, _ = services.record_reply(inbound, reply_text, {})
    if rating is not None:
        services.rate_reply(conversation.id, reply.id, rating)
    return conversation


def test_it_finds_conversations_with_a_reply_rated_not_helpful(client, bob, acme_bot):
    liked = _answered(acme_bot, "liked", rating=1)
    disliked = _answered(acme_bot, "disliked", rating=-1)
    _answered(acme_bot, "unrated")
    client.force_login(bob)
    page = client.get(reverse("inbox:list"), {"not_helpful": "on"}).content.decode()
    assert f"/inbox/{disliked.id}/" in page and f"/inbox/{liked.id}/" not in page
    assert page.count('class="conversation') == 1


def test_managers_export_the_filtered_conversations_as_csv(client, alice, bob, acme_bot, globex_bot):
    import csv
    import io

    widget = _answered(acme_bot, "w1", text="=HYPERLINK(\"http://evil\")", reply_text="We open at 9.", rating=-1)
    _answered(acme_bot, "e1", text="Email question")
    Conversation.objects.filter(external_id="e1").update(channel="email")
    _answered(globex_bot, "g1", text="Globex secret")
    client.force_login(alice)
    assert 'id="export"' in client.get(reverse("inbox:list")).content.decode()
    response = client.get(reverse("inbox:export"), {"channel": "widget"})
    assert response.status_code == 200 and response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="conversations-')
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [(r["conversation"], r["sender"], r["text"], r["rating"]) for r in rows] == [
        (str(widget.id), "customer", "'=HYPERLINK(\"http://evil\")", ""),  # never a formula in a spreadsheet
        (str(widget.id), "bot", "We open at 9.", "Not helpful"),
    ]
    everything = b"".join(client.get(reverse("inbox:export")).streaming_content).decode()
    assert "Email question" in everything and "Globex secret" not in everything
    assert client.get(reverse("inbox:export"), {"bot": "x"}).status_code == 400
    client.force_login(bob)  # an agent
    assert client.get(reverse("inbox:export")).status_code == 404
    assert 'id="export"' not in client.get(reverse("inbox:list")).content.decode()
