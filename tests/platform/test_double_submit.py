"""The same form sent twice at once (a double click, two tabs): every copy is answered as the form
answers, never with a 500, and what is stored is what one of them would have made alone.

The copies go from clients of their own (their own database connections). So that they meet every
time, not only when the timing happens to make them, each test holds the table they write to (a SHARE
lock: their reads go on, their writes wait) until every copy waits on a lock, then lets them all go:
before, the slower copy was then a 500 (IntegrityError) each time."""
import threading

from django.contrib.auth import get_user_model
from django.db import connection, connections
from django.test import Client
from django.urls import reverse

from bots.models import ApiToken, AuditEvent, Bot, Invitation, Membership, Organization, SavedReply
from bots.models.tenants import token_digest
from channels_app.models import ChannelConfig
from tests.conftest import make_member, wait_for

PASSWORD = "a-long-passphrase-42"


def at_once(count, send, model, user=None):
    """``send(client)`` from ``count`` threads, each with a client of its own (signed in as ``user``,
    if given), let go together once all of them wait on a lock: writes to ``model``'s table are held
    until then. Their ``(client, response)`` pairs."""
    sent = [None] * count

    def run(n):
        client = Client(raise_request_exception=False)  # a 500 is a response to look at, not a thread's exception
        try:
            if user is not None:
                client.force_login(user)
            sent[n] = client, send(client)
        finally:
            connection.close()  # this thread's own

    gate = connections.create_connection("default")
    with gate.cursor() as cursor:
        cursor.execute("BEGIN")
        cursor.execute(f"LOCK TABLE {model._meta.db_table} IN SHARE MODE")
        threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
        for thread in threads:
            thread.start()
        wait_for(lambda: waiting() + sum(not thread.is_alive() for thread in threads) >= count,
                 what=f"{count} requests waiting on a lock")
        cursor.execute("COMMIT")
    gate.close()
    for thread in threads:
        thread.join()
    assert None not in sent, "a request raised"
    return sent


def waiting():
    """How many sessions of this database wait on a lock (a table's, a row's, another transaction's)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND wait_event_type = 'Lock'")
        return cursor.fetchone()[0]


def codes(sent):
    return sorted(response.status_code for _, response in sent)


def test_a_token_made_twice_at_once_leaves_one_token_shown_once(transactional_db, acme):
    alice = make_member(acme, "alice", "owner")
    ApiToken.issue(alice)  # one to replace: every copy deletes it
    sent = at_once(3, lambda client: client.post(reverse("api-token")), ApiToken, user=alice)
    assert codes(sent) == [302] * 3
    stored = ApiToken.objects.get(user=alice).digest
    shown = [client.get(response["Location"]).context.get("new_key") for client, response in sent]
    # the token that stands is shown to the copy that made it; the others' were replaced at once
    assert [token_digest(key) for key in shown if key] == [stored]


def test_signing_up_twice_at_once_makes_one_account(transactional_db):
    form = {"username": "dana", "email": "dana@example.com", "organization_name": "Dana's Donuts",
            "password1": PASSWORD, "password2": PASSWORD}
    sent = at_once(3, lambda client: client.post(reverse("signup"), form), get_user_model())
    assert codes(sent) == [200, 200, 302]
    for _, response in sent:
        if response.status_code == 200:  # the form again: the other copy made the account
            assert response.context["form"].errors["username"] == [
                "An account with this username was made a moment ago (the form sent twice?): if it is yours, log in."]
    user = get_user_model().objects.get(username="dana")
    assert Organization.objects.get(name="Dana's Donuts").memberships.get().user == user


def test_accepting_an_invitation_twice_at_once_makes_one_account(transactional_db, acme):
    alice = make_member(acme, "alice", "owner")
    invitation, token = Invitation.issue(organization=acme, email="newbie@example.com", role="agent", invited_by=alice)
    form = {"username": "newbie", "password1": PASSWORD, "password2": PASSWORD}
    sent = at_once(2, lambda client: client.post(reverse("invite-accept", args=[token]), form), get_user_model())
    assert codes(sent) == [200, 302]
    refused = next(response for _, response in sent if response.status_code == 200)
    assert "made a moment ago" in refused.context["form"].errors["username"][0]
    user = get_user_model().objects.get(username="newbie")
    assert user.email == "newbie@example.com" and Membership.objects.get(user=user).organization == acme
    invitation.refresh_from_db()
    assert invitation.accepted is not None


def test_a_saved_reply_added_twice_at_once_is_added_once(transactional_db, acme):
    alice = make_member(acme, "alice", "owner")
    sent = at_once(3, lambda client: client.post(reverse("inbox:replies"), {"title": "Hours", "text": "9 to 6"}),
                   SavedReply, user=alice)
    assert codes(sent) == [302, 400, 400]
    for _, response in sent:
        if response.status_code == 400:
            assert response.context["form"].errors["title"] == ["There is already a saved reply with this title."]
    assert SavedReply.objects.get(organization=acme).text == "9 to 6"


def test_a_channel_saved_twice_at_once_the_first_time_has_one_config(transactional_db, acme):
    alice = make_member(acme, "alice", "owner")
    bot = Bot.objects.create(organization=acme, name="Ava")
    form = {"channel": "widget", "widget-enabled": "on", "widget-allowed_origins": "https://shop.example.com",
            "widget-position": "left", "widget-connections_per_minute": 10, "widget-messages_per_minute": 10,
            "widget-bot_connections_per_minute": 100, "widget-bot_messages_per_minute": 100,
            "widget-max_message_chars": 1000, "widget-max_upload_mb": 5}
    sent = at_once(2, lambda client: client.post(reverse("channels:bot", args=[bot.id]), form), ChannelConfig,
                   user=alice)
    assert codes(sent) == [302, 302]  # the second copy updates the config the first made
    config = ChannelConfig.objects.get(bot=bot, kind="widget")
    assert config.settings["position"] == "left" and config.settings["allowed_origins"] == ["https://shop.example.com"]
    assert AuditEvent.objects.filter(action="channel.saved").count() == 2


def test_a_saved_reply_posted_twice_at_once_through_the_api_is_added_once(transactional_db, acme):
    """The API's create checked the title, then inserted: the slower copy of the same request was a 500."""
    from bots.models import ApiToken

    alice = make_member(acme, "alice", "owner")
    token = ApiToken.issue(alice)
    sent = at_once(3, lambda client: client.post("/api/saved-replies/", {"title": "Hours", "text": "9 to 6"},
                                                 content_type="application/json",
                                                 HTTP_AUTHORIZATION=f"Token {token}"), SavedReply)
    assert codes(sent) == [201, 400, 400]
    for _, response in sent:
        if response.status_code == 400:
            assert response.json() == {"title": [SavedReply.TITLE_TAKEN]}
    assert SavedReply.objects.get(organization=acme).text == "9 to 6"
