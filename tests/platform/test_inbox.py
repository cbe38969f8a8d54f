"""The inbox: filters, thread page with stats, agent replies, take over / give back, close / reopen."""
import pytest
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


def test_search_finds_words_of_a_message_and_who_the_customer_is(client, bob, acme_bot, globex_bot):
    by_words, _ = make_conversation(acme_bot, text="My chain keeps slipping", thread="v1", contact={"name": "Wendy"})
    by_mail, _ = make_conversation(acme_bot, channel="email", thread="t1", subject="Invoice 2041",
                                   contact={"name": "Eve Example", "email": "eve@shop.example"})
    by_phone, _ = make_conversation(acme_bot, channel="whatsapp", thread="+15551234567",
                                    contact={"name": "Carla", "phone": "+15551234567"})
    make_conversation(globex_bot, text="eve@shop.example chain", thread="g1")  # another organisation's
    client.force_login(bob)

    def found(q):
        page = client.get(reverse("inbox:list"), {"q": q}).content.decode()
        return {c.id for c in (by_words, by_mail, by_phone) if f"/inbox/{c.id}/" in page}, page

    assert found("CHAIN")[0] == {by_words.id}
    assert found("eve@shop")[0] == {by_mail.id} and found("Example")[0] == {by_mail.id}
    assert found("invoice 2041")[0] == {by_mail.id}
    assert found("5551234")[0] == {by_phone.id}
    assert found(" wendy ")[0] == {by_words.id}
    ids, page = found("chain")
    assert "g1" not in page and ids == {by_words.id}


def test_channels_are_named_as_people_say_them_and_filtered_by_their_code(client, bob, acme_bot):
    make_conversation(acme_bot, channel="whatsapp", thread="whatsapp:+15550001", contact={"name": "Wanda"})
    widget, _ = make_conversation(acme_bot, channel="widget", thread="v1", contact={"name": "Wendy"})
    client.force_login(bob)
    page = client.get(reverse("inbox:list")).content.decode()
    assert '<option value="whatsapp">WhatsApp</option>' in page
    assert '<option value="widget">Website widget</option>' in page
    assert "<td>WhatsApp</td>" in page and "<td>Website widget</td>" in page and "<td>whatsapp</td>" not in page
    page = client.get(reverse("inbox:list"), {"channel": "whatsapp"}).content.decode()
    assert '<option value="whatsapp" selected>WhatsApp</option>' in page and "Wendy" not in page
    thread = client.get(reverse("inbox:thread", args=[widget.id])).content.decode()
    assert "Website widget · " in thread


def test_it_names_each_contact_as_well_as_it_can(client, bob, acme_bot):
    visitor, _ = make_conversation(acme_bot, channel="widget", thread="v_Q2rS9tUvWxYz")
    phone, _ = make_conversation(acme_bot, channel="whatsapp", thread="whatsapp:+447700900123",
                                 contact={"phone": "+447700900123"})
    named, _ = make_conversation(acme_bot, channel="widget", thread="v_other", contact={"name": "Wendy Widget"})
    dashed, _ = make_conversation(acme_bot, channel="widget", thread="v_Q2rS9tUvW8-9e7")
    client.force_login(bob)
    page = client.get(reverse("inbox:list")).content.decode()
    assert "Website visitor …WxYz" in page and "v_Q2rS9tUvWxYz" not in page  # not a random token
    assert "+447700900123" in page and "Wendy Widget" in page
    assert "Website visitor …89e7" in page  # letters and digits only: not "…-9e7"
    assert "<h1>Website visitor …WxYz</h1>" in client.get(reverse("inbox:thread", args=[visitor.id])).content.decode()


def test_the_list_says_when_in_words_a_person_would_use(client, bob, acme_bot):
    from datetime import timedelta

    from django.utils import timezone

    from bots.models import Conversation

    fresh, _ = make_conversation(acme_bot, thread="v-now")
    older, _ = make_conversation(acme_bot, thread="v-older")
    Conversation.objects.filter(id=older.id).update(last_message_at=timezone.now() - timedelta(hours=3))
    client.force_login(bob)
    page = client.get(reverse("inbox:list")).content.decode()
    assert "0\xa0minutes ago" not in page and "0 minutes ago" not in page
    assert ">now<" in page and "3\xa0hours ago" in page


def test_the_lists_stamp_moves_with_what_the_filtered_list_would_show(client, alice, acme_bot):
    from bots.models import Bot

    other = Bot.objects.create(organization=acme_bot.organization, name="Max")
    make_conversation(acme_bot, thread="v-1")
    client.force_login(alice)

    def stamp(**filters):
        return client.get(reverse("inbox:list"), {**filters, "format": "stamp"}).json()["stamp"]

    everything, ava_only = stamp(), stamp(bot=acme_bot.id)
    assert client.get(reverse("inbox:list")).context["stamp"] == everything  # what the page starts from
    make_conversation(other, thread="v-2")  # another bot's customer writes
    assert stamp() != everything and stamp(bot=acme_bot.id) == ava_only
    make_conversation(acme_bot, thread="v-1", text="Still there?")  # a new message, same conversation
    assert stamp(bot=acme_bot.id) != ava_only
    assert client.get(reverse("inbox:list"), {"bot": "abc", "format": "stamp"}).status_code == 400


def test_each_conversation_shows_its_latest_message(client, bob, acme_bot):
    asked, inbound = make_conversation(acme_bot, thread="v1", text="Do you fix e-bikes?")
    services.record_reply(inbound, "Yes, every day but Sunday.", {})
    noted, _ = make_conversation(acme_bot, thread="v2", text="Where is my order 1042?")
    services.add_note(noted, bob, "Checking with the warehouse")  # notes are not the conversation
    client.force_login(bob)
    rows = {row.split("</a>")[0].rsplit(">", 1)[-1]: row
            for row in client.get(reverse("inbox:list")).content.decode().split('<tr class="conversation')[1:]}
    assert "Bot: Yes, every day but Sunday." in rows[asked.display_name]
    assert "Where is my order 1042?" in rows[noted.display_name] and "warehouse" not in rows[noted.display_name]


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
    assert "stopped at" not in page and data["messages"][1]["stop_note"] == ""  # the model ended it ("eos")


@pytest.mark.parametrize("stop_reason,note", [("length", "stopped at the reply length limit"),
                                              ("repetition", "cut where it began repeating itself"),
                                              ("time", "stopped at the time limit")])
def test_a_reply_the_model_did_not_end_itself_says_why_it_stopped(client, bob, acme_bot, stop_reason, note):
    conversation, inbound = make_conversation(acme_bot, text="When are you open?")
    Message.objects.filter(id=inbound.id).update(reply_state="pending")
    inbound.refresh_from_db()
    services.record_reply(inbound, "Nine to six.", {"new_tokens": 160, "stop_reason": stop_reason})
    client.force_login(bob)
    assert note in client.get(reverse("inbox:thread", args=[conversation.id])).content.decode()
    assert client.get(reverse("inbox:thread-json", args=[conversation.id])).json()["messages"][1]["stop_note"] == note


def test_it_sends_an_agent_reply_and_pauses_the_bot(client, bob, acme_bot):
    conversation, _ = make_conversation(acme_bot, channel="widget")
    client.force_login(bob)
    response = client.post(reverse("inbox:reply", args=[conversation.id]), {"text": "Hi, Bob here."})
    assert response.status_code == 302
    reply = conversation.messages.get(sender="agent")
    assert reply.text == "Hi, Bob here." and reply.meta["agent_name"] == "bob"
    conversation.refresh_from_db()
    assert conversation.bot_paused


@pytest.mark.parametrize("who", ["bob", "alice"])
def test_the_builders_test_chats_are_not_in_the_inbox_by_id_either(client, request, who, acme_bot):
    """The list leaves them out; their own pages must not open (ids are sequential) nor act on them."""
    conversation, _ = make_conversation(acme_bot, channel="preview")
    client.force_login(request.getfixturevalue(who))
    for name in ("thread", "thread-json"):
        assert client.get(reverse(f"inbox:{name}", args=[conversation.id])).status_code == 404
    for name, data in [("reply", {"text": "Hi"}), ("assign", {}), ("tags", {"add": "x"}), ("take-over", {}),
                       ("close", {}), ("delete", {})]:
        assert client.post(reverse(f"inbox:{name}", args=[conversation.id]), data).status_code == 404, name
    conversation.refresh_from_db()
    assert not conversation.bot_paused and conversation.status == "open"
    assert not conversation.messages.filter(sender="agent").exists()


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
    # an email's From name and Subject are the customer's words too
    Conversation.objects.filter(id=widget.id).update(contact_name="=cmd|' /C calc'!A0", subject="@SUM(1+1)")
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
    assert {(r["contact_name"], r["subject"]) for r in rows} == {("'=cmd|' /C calc'!A0", "'@SUM(1+1)")}
    everything = b"".join(client.get(reverse("inbox:export")).streaming_content).decode()
    assert "Email question" in everything and "Globex secret" not in everything
    assert client.get(reverse("inbox:export"), {"bot": "x"}).status_code == 400
    client.force_login(bob)  # an agent
    assert client.get(reverse("inbox:export")).status_code == 404
    assert 'id="export"' not in client.get(reverse("inbox:list")).content.decode()


def test_taking_over_or_answering_assigns_an_unassigned_conversation(client, alice, bob, acme_bot):
    first, _ = make_conversation(acme_bot, thread="t1")
    second, _ = make_conversation(acme_bot, thread="t2")
    client.force_login(bob)
    client.post(reverse("inbox:take-over", args=[first.id]))
    client.post(reverse("inbox:reply", args=[second.id]), {"text": "Bob here"})
    assert Conversation.objects.get(id=first.id).assignee == bob
    assert Conversation.objects.get(id=second.id).assignee == bob
    client.force_login(alice)
    client.post(reverse("inbox:reply", args=[second.id]), {"text": "Alice too"})
    assert Conversation.objects.get(id=second.id).assignee == bob  # an assigned conversation stays assigned


def test_members_assign_conversations_to_members_only_and_filter_by_them(client, alice, bob, charlie, acme_bot):
    mine, _ = make_conversation(acme_bot, thread="a1")
    other, _ = make_conversation(acme_bot, thread="a2")
    client.force_login(alice)
    assert 'id="assign"' in client.get(reverse("inbox:thread", args=[mine.id])).content.decode()
    client.post(reverse("inbox:assign", args=[mine.id]), {"assignee": alice.id})
    client.post(reverse("inbox:assign", args=[other.id]), {"assignee": bob.id})
    response = client.post(reverse("inbox:assign", args=[other.id]), {"assignee": charlie.id}, follow=True)
    assert "Only a member of this organisation" in response.content.decode()
    assert Conversation.objects.get(id=other.id).assignee == bob  # unchanged
    response = client.post(reverse("inbox:assign", args=[other.id]), {"assignee": "bob"}, follow=True)
    assert "Only a member of this organisation" in response.content.decode()  # not an id: refused, not a 500
    page = client.get(reverse("inbox:list"), {"assignee": "me"}).content.decode()
    assert f"/inbox/{mine.id}/" in page and f"/inbox/{other.id}/" not in page
    client.post(reverse("inbox:assign", args=[other.id]), {"assignee": ""})
    page = client.get(reverse("inbox:list"), {"assignee": "none"}).content.decode()
    assert f"/inbox/{other.id}/" in page and f"/inbox/{mine.id}/" not in page


def test_a_member_who_leaves_has_their_conversations_unassigned(alice, bob, acme_bot):
    from bots import membership as members
    from bots.models import Membership

    conversation, _ = make_conversation(acme_bot, thread="leaver")
    services.assign(conversation, bob.id)
    members.remove(Membership.objects.get(user=alice), Membership.objects.get(user=bob))
    assert Conversation.objects.get(id=conversation.id).assignee is None



def test_an_internal_note_stays_with_the_team(client, bob, acme_bot):
    from bots import stats
    from channels_app.widget.inbound import history
    from inference.tasks import _history

    conversation, inbound = make_conversation(acme_bot, thread="noted", text="Where is my order?")
    client.force_login(bob)
    response = client.post(reverse("inbox:reply", args=[conversation.id]), {"text": "VIP customer, be quick", "note": "1"})
    assert response.status_code == 302
    note = Message.objects.get(sender="note")
    assert note.text == "VIP customer, be quick" and note.delivery_status == "" and note.meta["agent_name"] == "bob"
    conversation.refresh_from_db()
    assert not conversation.bot_paused  # a note is not a reply: the bot keeps the conversation
    page = client.get(reverse("inbox:thread", args=[conversation.id])).content.decode()
    assert "VIP customer, be quick" in page and 'class="msg out note"' in page
    assert [m["text"] for m in history(conversation.id)["messages"]] == ["Where is my order?"]  # not for the customer
    later = services.receive(bot=acme_bot, channel="widget", thread_id="noted", text="Hello?", answer=False).message
    assert [turn["content"] for turn in _history(later)] == ["Where is my order?\n\nHello?"]  # not for the model
    assert stats.summary(acme_bot.organization)["messages"] == 2


def test_a_thread_lists_the_customers_other_conversations(client, bob, acme, acme_bot, globex_bot):
    from bots.models import Bot

    other_bot = Bot.objects.create(organization=acme, name="Sales")
    mail, _ = make_conversation(acme_bot, channel="email", thread="t1", subject="Broken chain",
                                contact={"name": "Eve", "email": "Eve@Shop.example"})
    widget, _ = make_conversation(other_bot, channel="widget", thread="v1", contact={"email": "eve@shop.example"})
    phone, _ = make_conversation(acme_bot, channel="whatsapp", thread="+15550001", contact={"phone": "+15550001"})
    stranger, _ = make_conversation(acme_bot, channel="widget", thread="v2", contact={"email": "zed@example.com"})
    theirs, _ = make_conversation(globex_bot, channel="email", thread="g1", contact={"email": "eve@shop.example"})
    anonymous, _ = make_conversation(acme_bot, channel="widget", thread="v3")
    client.force_login(bob)

    page = client.get(reverse("inbox:thread", args=[widget.id])).content.decode()
    assert "Other conversations with eve@shop.example" in page
    assert f'href="/inbox/{mail.id}/"' in page and "Email · Ava · Broken chain" in page
    for other in (phone, stranger, theirs, anonymous):  # another customer, another organisation's, nobody known
        assert f'href="/inbox/{other.id}/"' not in page
    assert f'href="/inbox/{widget.id}/"' in client.get(reverse("inbox:thread", args=[mail.id])).content.decode()
    assert 'id="same-customer"' not in client.get(reverse("inbox:thread", args=[anonymous.id])).content.decode()
    assert 'id="same-customer"' not in client.get(reverse("inbox:thread", args=[phone.id])).content.decode()


def test_ticked_conversations_are_closed_assigned_and_tagged_at_once(client, alice, bob, acme_bot, globex_bot):
    ours = [make_conversation(acme_bot, thread=f"v{i}")[0] for i in range(3)]
    theirs, _ = make_conversation(globex_bot, thread="g1")
    client.force_login(bob)  # an agent may: these are the inbox's own actions
    bulk = reverse("inbox:bulk")
    ids = [ours[0].id, ours[1].id, theirs.id]

    response = client.post(bulk, {"action": "close", "ids": ids, "query": "status=open&bot=" + str(acme_bot.id)})
    assert response.status_code == 302 and response["Location"] == f"/inbox/?status=open&bot={acme_bot.id}"
    statuses = dict(Conversation.objects.values_list("id", "status"))
    assert [statuses[c.id] for c in ours] == ["closed", "closed", "open"] and statuses[theirs.id] == "open"
    assert "Closed 2 conversations." in client.get(response["Location"]).content.decode()

    client.post(bulk, {"action": "assign", "assignee": str(alice.id), "ids": [ours[1].id, ours[2].id]})
    assert [Conversation.objects.get(id=c.id).assignee_id for c in ours] == [None, alice.id, alice.id]
    client.post(bulk, {"action": "tag", "tag": "Refunds", "ids": [c.id for c in ours]})
    client.post(bulk, {"action": "tag", "tag": "refunds", "ids": [ours[0].id]})  # the same tag: once
    assert [sorted(Conversation.objects.get(id=c.id).tags.values_list("name", flat=True)) for c in ours] == [
        ["Refunds"]] * 3
    assert not Conversation.objects.get(id=theirs.id).tags.exists()

    from django.contrib.auth import get_user_model
    outsider = get_user_model().objects.create_user("mallory")
    for bad, says in (({"action": "assign", "assignee": str(outsider.id), "ids": [ours[0].id]},
                       "Only a member of this organisation can be assigned."),
                      ({"action": "close", "ids": [theirs.id]}, "Tick the conversations first."),
                      ({"action": "explode", "ids": [ours[0].id]}, "Choose what to do."),
                      ({"action": "close", "ids": ["²", "99999999999999999999"]}, "Tick the conversations first."),
                      ({"action": "tag", "tag": "  ", "ids": [ours[0].id]}, "Write the tag&#x27;s name first.")):
        response = client.post(bulk, bad)
        assert response.status_code == 302 and says in client.get(response["Location"]).content.decode(), says
    assert Conversation.objects.get(id=ours[0].id).assignee_id is None and Conversation.objects.get(id=theirs.id).status == "open"


def test_the_export_counts_the_files_a_customer_sent_from_the_widget(client, alice, acme_bot):
    import csv
    import io

    services.receive(bot=acme_bot, channel="widget", thread_id="photo", text="See this", meta={"widget": True},
                     answer=False, files=[("chain.png", "image/png", b"\x89PNG\r\n\x1a\n" + bytes(16)),
                                          ("bill.pdf", "application/pdf", b"%PDF-1.4")])
    client.force_login(alice)
    rows = list(csv.DictReader(io.StringIO(b"".join(client.get(reverse("inbox:export")).streaming_content).decode())))
    assert [(r["text"], r["attachments"]) for r in rows] == [("See this", "2")]


def test_an_agent_keeps_an_assignment_made_since_their_page_loaded(alice, bob, acme_bot):
    conversation, _ = make_conversation(acme_bot, thread="stale")
    page = Conversation.objects.get(id=conversation.id)  # alice's page, loaded unassigned
    services.assign(Conversation.objects.get(id=conversation.id), bob.id)  # meanwhile, someone gives it to bob
    services.agent_reply(page, alice, "Alice here")
    assert Conversation.objects.get(id=conversation.id).assignee == bob
    assert page.assignee == bob and page.bot_paused  # the caller's instance says what is stored

    other, _ = make_conversation(acme_bot, thread="stale-2")
    page = Conversation.objects.get(id=other.id)
    services.assign(Conversation.objects.get(id=other.id), bob.id)
    services.set_bot_paused(page, True, by=alice)
    assert Conversation.objects.get(id=other.id).assignee == bob
