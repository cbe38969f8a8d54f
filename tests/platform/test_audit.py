"""The Team page's Activity: who changed the organisation's bots, channels, team and data, and
when — one sentence each, never a secret's value; owners and admins of that organisation only."""
import re

import pytest
from django.urls import reverse

from bots.models import AuditEvent, Bot, Invitation, Membership
from tests.conftest import make_member

from .conftest import make_conversation

pytestmark = pytest.mark.django_db
TOKEN = "a11ce5ec2e7a11ce5ec2e7a11ce5ec2e"  # a Twilio auth token is 32 hex digits


def said(org):
    return [(event.actor_name, event.action, event.text) for event in AuditEvent.objects.filter(organization=org)
            .order_by("id")]


def test_each_change_is_recorded_with_who_made_it(client, alice, bob, acme, acme_bot, globex):
    client.force_login(alice)
    client.post(reverse("bots:create"), {"name": "Zed", "company": "Acme Bikes"})
    zed = Bot.objects.get(name="Zed")
    client.post(reverse("bots:publish", args=[zed.id]))
    client.post(reverse("bots:version_restore", args=[zed.id, 1]))
    client.post(reverse("channels:bot", args=[acme_bot.id]), {
        "channel": "whatsapp", "whatsapp-enabled": "on", "whatsapp-account_sid": "AC" + "1" * 32,
        "whatsapp-auth_token": TOKEN, "whatsapp-phone_number": "whatsapp:+14155238886"})
    client.post(reverse("org:members"), {"email": "new@acme.example", "role": "agent"})
    client.post(reverse("org:invitation-cancel", args=[Invitation.objects.get(email="new@acme.example").id]))
    carol = make_member(acme, "carol", "agent")
    client.post(reverse("org:member-role", args=[Membership.objects.get(user=carol).id]), {"role": "admin"})
    client.post(reverse("org:member-remove", args=[Membership.objects.get(user=carol).id]))
    client.post(reverse("org:retention"), {"retention_days": "30"})
    client.post(reverse("org:hours"), {"timezone": "Europe/Paris", "mon_open": "on", "mon_from": "09:00",
                                        "mon_to": "17:00"})
    conversation, _ = make_conversation(acme_bot, thread="gone", contact={"name": "Dana"})
    client.post(reverse("inbox:delete", args=[conversation.id]))
    client.post(reverse("bots:delete", args=[zed.id]))

    assert said(acme) == [
        ("", "bot.published", "Published Ava version 1"),  # the fixture's, by nobody signed in: "the system"
        ("alice", "bot.created", "Created the bot Zed"),
        ("alice", "bot.published", "Published Zed version 1"),
        ("alice", "bot.restored", "Restored version 1 of Zed into its draft"),
        ("alice", "channel.saved", "Saved the WhatsApp (Twilio) settings of Ava (new Auth token)"),
        ("alice", "member.invited", "Invited new@acme.example as Agent"),
        ("alice", "member.invitation_cancelled", "Cancelled the invitation of new@acme.example"),
        ("alice", "member.role", "Made carol Admin"),
        ("alice", "member.removed", "Removed carol"),
        ("alice", "organization.retention", "Set conversations to be deleted 30 days after their last message"),
        ("alice", "organization.team_hours", "Set team hours (Europe/Paris): Monday 09:00–17:00"),
        ("alice", "conversation.deleted", f"Deleted conversation #{conversation.id} (Website widget, Ava)"),
        ("alice", "bot.deleted", "Deleted the bot Zed"),
    ]
    assert not AuditEvent.objects.filter(text__contains=TOKEN).exists() and said(globex) == []
    assert not AuditEvent.objects.filter(text__contains="Dana").exists()  # the log outlives the erasure

    page = client.get(reverse("org:members")).content.decode()
    assert 'id="activity"' in page and "Saved the WhatsApp (Twilio) settings of Ava (new Auth token)" in page
    assert TOKEN not in page
    client.force_login(bob)  # an agent: no Activity
    assert 'id="activity"' not in client.get(reverse("org:members")).content.decode()


def test_the_team_list_shows_who_signs_in_with_two_factors(client, alice, bob):
    from bots.models import TwoFactor

    TwoFactor.objects.create(user=bob, secrets={"totp": "JBSWY3DPEHPK3PXP"})
    client.force_login(alice)
    page = client.get(reverse("org:members")).content.decode()
    rows = {row.split("</td>")[0].split(">")[-1].strip(): row for row in page.split("<tr>")[2:]}
    assert 'class="badge on">on' in rows["bob"] and 'class="badge off">off' in rows["alice (you)"]
    assert "turn it on" in rows["alice (you)"] and "turn it on" not in rows["bob"]


def test_changes_through_the_api_are_recorded_too(alice, acme, acme_bot):
    from rest_framework.test import APIClient

    from bots.models import ApiToken

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {ApiToken.issue(alice)}")
    bot = client.post("/api/bots/", {"name": "Api Bot"}, format="json").json()
    client.post(f"/api/bots/{bot['id']}/publish/")
    client.post(f"/api/bots/{bot['id']}/restore/", {"version": 1}, format="json")
    conversation, _ = make_conversation(acme_bot, thread="api-gone", channel="api")
    assert client.delete(f"/api/conversations/{conversation.id}/").status_code == 204
    assert client.delete(f"/api/bots/{bot['id']}/").status_code == 204
    assert said(acme)[1:] == [
        ("alice", "bot.created", "Created the bot Api Bot through the API"),
        ("alice", "bot.published", "Published Api Bot version 1"),
        ("alice", "bot.restored", "Restored version 1 of Api Bot into its draft"),
        ("alice", "conversation.deleted", f"Deleted conversation #{conversation.id} (API, Ava) through the API"),
        ("alice", "bot.deleted", "Deleted the bot Api Bot through the API"),
    ]


def test_the_whole_log_pages_and_downloads(client, alice, bob, acme, globex):
    import csv
    import io

    from bots import audit

    for n in range(audit.SHOWN + 5):
        audit.record(acme, alice, "test.event", f"Event {n}")
    audit.record(globex, None, "test.event", "Globex's own")
    client.force_login(alice)
    first = client.get(reverse("org:activity"))
    assert [e.text for e in first.context["page"]][:2] == [f"Event {audit.SHOWN + 4}", f"Event {audit.SHOWN + 3}"]
    assert len(first.context["page"]) == audit.SHOWN and "older →" in first.content.decode()
    second = client.get(reverse("org:activity"), {"page": 2})
    assert [e.text for e in second.context["page"]] == [f"Event {n}" for n in range(4, -1, -1)]
    download = client.get(reverse("org:activity"), {"format": "csv"})
    rows = list(csv.DictReader(io.StringIO(b"".join(download.streaming_content).decode())))
    assert len(rows) == audit.SHOWN + 5 and rows[0]["who"] == "alice" and rows[-1]["what"] == "Event 0"
    assert "Globex" not in b"".join(client.get(reverse("org:activity"), {"format": "csv"}).streaming_content).decode()
    alice.first_name = '=HYPERLINK("http://evil.example")'  # a member's own name, opened in a spreadsheet
    alice.save()
    audit.record(acme, alice, "test.event", "Event by a formula")
    rows = list(csv.DictReader(io.StringIO(b"".join(client.get(reverse("org:activity"), {"format": "csv"})
                                                   .streaming_content).decode())))
    assert rows[0]["who"] == "'" + alice.first_name  # shown as text, never run
    client.force_login(bob)  # an agent
    assert client.get(reverse("org:activity")).status_code == 404


def test_a_full_name_longer_than_the_column_is_recorded_cut_and_the_action_done(client, alice, acme_bot):
    alice.first_name, alice.last_name = "A" * 150, "B" * 150  # Django allows 150 + 150: 301 with the space
    alice.save()
    client.force_login(alice)
    assert client.post(reverse("bots:publish", args=[acme_bot.id])).status_code == 302
    event = AuditEvent.objects.get(action="bot.published", actor=alice)
    assert event.actor_name == "A" * 150 and event.text == "Published Ava version 2"


def test_joining_through_an_invitation_and_a_role_raised_by_one_are_recorded(client, alice, bob, acme, smtp_settings):
    from django.contrib.auth import get_user_model

    client.force_login(alice)
    client.post(reverse("org:members"), {"email": "erin@example.com", "role": "agent"})
    client.post(reverse("org:members"), {"email": "bob.other@example.com", "role": "admin"})  # bob, at another address
    erin_link, bob_link = (re.search(r"https?://[^/\s]+(/accounts/invite/\S+/)", m["message"].get_content()).group(1)
                           for m in smtp_settings.messages)
    erin = get_user_model().objects.create_user("erin", "erin@example.com", "erin-passphrase-9")
    client.force_login(erin)
    client.post(erin_link)
    client.force_login(bob)
    client.post(bob_link)

    assert said(acme)[-2:] == [
        ("erin", "member.joined", "Joined as Agent through the invitation to erin@example.com"),
        ("bob", "member.role", "Became Admin (was Agent) through the invitation to bob.other@example.com"),
    ]
