"""Team hours: a handoff outside them gets the bot's away message, not a promise of a reply
"shortly"; set on the Team page by owners and admins, in the organisation's time zone."""
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from django.urls import reverse
from django.utils import timezone

from bots import hours, services
from bots.models import Message, Organization

PARIS = ZoneInfo("Europe/Paris")
WEEKDAYS = {day: ["09:00", "18:00"] for day in ("mon", "tue", "wed", "thu", "fri")}


def at(*args, tz=PARIS):
    return datetime(*args, tzinfo=tz)


@pytest.mark.parametrize("when, is_open", [
    (at(2026, 11, 30, 8, 59), False),  # Monday, before nine in Paris
    (at(2026, 11, 30, 9, 0), True),
    (at(2026, 11, 30, 17, 59), True),
    (at(2026, 11, 30, 18, 0), False),
    (at(2026, 11, 28, 12, 0), False),  # Saturday
    (at(2026, 11, 30, 8, 30, tz=ZoneInfo("UTC")), True),  # 09:30 in Paris in winter (UTC+1)
    (at(2026, 7, 6, 7, 30, tz=ZoneInfo("UTC")), True),  # 09:30 in Paris in summer (UTC+2)
    (at(2026, 7, 6, 16, 30, tz=ZoneInfo("UTC")), False),  # 18:30 in Paris in summer
])
def test_weekday_hours_in_the_organisations_time_zone(when, is_open):
    assert hours.is_open(WEEKDAYS, "Europe/Paris", now=when) is is_open


def test_a_span_past_midnight_and_no_hours_at_all():
    nights = {"fri": ["22:00", "06:00"]}
    assert not hours.is_open(nights, "UTC", now=at(2026, 11, 27, 21, 59, tz=ZoneInfo("UTC")))  # Friday
    assert hours.is_open(nights, "UTC", now=at(2026, 11, 27, 23, 0, tz=ZoneInfo("UTC")))
    assert hours.is_open(nights, "UTC", now=at(2026, 11, 28, 5, 59, tz=ZoneInfo("UTC")))  # Saturday morning
    assert not hours.is_open(nights, "UTC", now=at(2026, 11, 28, 6, 0, tz=ZoneInfo("UTC")))
    assert hours.is_open({}, "Europe/Paris", now=at(2026, 11, 28, 3, 0))  # not set: always staffed
    assert hours.zone("Not/AZone") == ZoneInfo("UTC")


def _away_today(org_tz="UTC"):
    """Hours that certainly do not hold now: one hour, three days from today."""
    today = timezone.now().astimezone(ZoneInfo(org_tz)).weekday()
    return {hours.DAYS[(today + 3) % 7]: ["09:00", "10:00"]}


@pytest.mark.django_db
def test_a_handoff_outside_team_hours_gets_the_away_message(acme, acme_bot):
    acme_bot.away_message = "We're closed now; we'll answer on Monday morning."
    acme_bot.save()
    acme_bot.publish()
    Organization.objects.filter(id=acme.id).update(team_hours=_away_today(), timezone="UTC")
    closed = services.receive(bot=acme_bot, channel="widget", thread_id="late", text="talk to a human please")
    notice = Message.objects.get(reply_to=closed.message)
    assert notice.text == "We're closed now; we'll answer on Monday morning." and notice.meta["outside_team_hours"]
    assert closed.conversation.needs_human and closed.conversation.bot_paused  # the team still gets it

    always = {day: ["00:00", "00:00"] for day in hours.DAYS}  # an end not after the start: round the clock
    Organization.objects.filter(id=acme.id).update(team_hours=always)
    staffed = services.receive(bot=acme_bot, channel="widget", thread_id="day", text="talk to a human please")
    notice = Message.objects.get(reply_to=staffed.message)
    assert notice.text == acme_bot.handoff_message and "outside_team_hours" not in notice.meta


@pytest.mark.django_db
def test_managers_set_team_hours_on_the_team_page(client, alice, bob, acme, globex):
    client.force_login(alice)
    page = client.get(reverse("org:members")).content.decode()
    assert "Not set: a customer who asks for a person is always told" in page and 'id="hours-form"' in page
    form = {"timezone": "Europe/Paris", **{f"{day}_open": "on" for day in ("mon", "tue", "wed", "thu", "fri")},
            **{f"{day}_from": "09:00" for day in hours.DAYS}, **{f"{day}_to": "18:00" for day in hours.DAYS},
            "sat_open": "on", "sat_from": "10:00", "sat_to": "13:30"}
    response = client.post(reverse("org:hours"), form)
    assert response.status_code == 302 and response["Location"].endswith("#hours")
    acme.refresh_from_db()
    assert acme.timezone == "Europe/Paris" and acme.team_hours == {**WEEKDAYS, "sat": ["10:00", "13:30"]}
    page = client.get(reverse("org:members")).content.decode()
    assert "Team hours saved." in page and "<strong>Saturday</strong> 10:00–13:30" in page
    assert "<strong>Sunday</strong> closed" in page
    assert Organization.objects.get(id=globex.id).team_hours == {}  # another organisation's untouched

    for bad, says in ((dict(form, mon_from=""), "Monday: give the time the team starts and stops"),
                      (dict(form, tue_to="09:00"), "Tuesday: the team cannot stop when it starts."),
                      (dict(form, timezone="Mars/Olympus"), "Select a valid choice")):
        client.post(reverse("org:hours"), bad)
        assert says in client.get(reverse("org:members")).content.decode()
    acme.refresh_from_db()
    assert acme.team_hours == {**WEEKDAYS, "sat": ["10:00", "13:30"]}  # nothing saved from those

    client.post(reverse("org:hours"), {"timezone": "Europe/Paris"})  # no day ticked: cleared
    assert Organization.objects.get(id=acme.id).team_hours == {}
    client.force_login(bob)  # an agent: sees them, cannot set them
    assert 'id="hours-form"' not in client.get(reverse("org:members")).content.decode()
    assert client.post(reverse("org:hours"), form).status_code == 404
    assert Organization.objects.get(id=acme.id).team_hours == {}
