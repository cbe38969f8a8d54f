"""Team hours: a handoff outside them gets the bot's away message, not a promise of a reply
"shortly"; set on the Team page by owners and admins, in the organisation's time zone."""
from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest
from django.urls import reverse
from django.utils import timezone

from bots import hours, services
from bots.models import Message, Organization

PARIS = ZoneInfo("Europe/Paris")
WEEKDAYS = {day: ["09:00", "18:00"] for day in ("mon", "tue", "wed", "thu", "fri")}  # one span, as first stored
SAVED_WEEKDAYS = {day: [["09:00", "18:00"]] for day in WEEKDAYS}  # as the Team page saves them now


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
    assert acme.timezone == "Europe/Paris" and acme.team_hours == {**SAVED_WEEKDAYS, "sat": [["10:00", "13:30"]]}
    page = client.get(reverse("org:members")).content.decode()
    assert "Team hours saved." in page and "<strong>Saturday</strong> 10:00–13:30" in page
    assert "<strong>Sunday</strong> closed" in page
    assert Organization.objects.get(id=globex.id).team_hours == {}  # another organisation's untouched

    for bad, says in ((dict(form, mon_from=""), "Monday: give the time the team starts and stops"),
                      (dict(form, tue_to="09:00"), "Tuesday: the team cannot stop when it starts."),
                      (dict(form, timezone="Mars/Olympus"), "Select a valid choice")):
        response = client.post(reverse("org:hours"), bad)
        assert response.status_code == 400 and says in response.content.decode()
    acme.refresh_from_db()
    assert acme.team_hours == {**SAVED_WEEKDAYS, "sat": [["10:00", "13:30"]]}  # nothing saved from those

    client.post(reverse("org:hours"), {"timezone": "Europe/Paris"})  # no day ticked: cleared
    assert Organization.objects.get(id=acme.id).team_hours == {}
    client.force_login(bob)  # an agent: sees them, cannot set them
    assert 'id="hours-form"' not in client.get(reverse("org:members")).content.decode()
    assert client.post(reverse("org:hours"), form).status_code == 404
    assert Organization.objects.get(id=acme.id).team_hours == {}


LUNCH = {"mon": [["09:00", "12:30"], ["13:30", "18:00"]], "fri": [["09:00", "12:00"], ["20:00", "02:00"]]}


@pytest.mark.parametrize("when, is_open", [
    (at(2026, 11, 30, 12, 29), True),  # Monday morning span
    (at(2026, 11, 30, 12, 30), False),  # lunch
    (at(2026, 11, 30, 13, 29), False),
    (at(2026, 11, 30, 13, 30), True),  # afternoon span
    (at(2026, 11, 30, 18, 0), False),
    (at(2026, 11, 27, 15, 0), False),  # Friday between its spans
    (at(2026, 11, 27, 23, 0), True),  # Friday's evening span, past midnight...
    (at(2026, 11, 28, 1, 59), True),  # ...into Saturday
    (at(2026, 11, 28, 2, 0), False),
])
def test_two_spans_a_day(when, is_open):
    assert hours.is_open(LUNCH, "Europe/Paris", now=when) is is_open
    assert hours.summary(LUNCH)[0] == ("Monday", "09:00–12:30, 13:30–18:00")
    assert hours.summary(WEEKDAYS)[0] == ("Monday", "09:00–18:00")  # the first stored form reads the same


def test_closed_dates_close_the_spans_that_start_on_them():
    christmas = ["2026-12-25"]  # a Friday
    assert hours.is_open(LUNCH, "Europe/Paris", now=at(2026, 12, 18, 10, 0), closed_dates=christmas)
    assert not hours.is_open(LUNCH, "Europe/Paris", now=at(2026, 12, 25, 10, 0), closed_dates=christmas)
    assert not hours.is_open(LUNCH, "Europe/Paris", now=at(2026, 12, 26, 1, 0), closed_dates=christmas)  # its night
    nights = {"thu": ["22:00", "06:00"]}
    assert hours.is_open(nights, "Europe/Paris", now=at(2026, 12, 25, 5, 0), closed_dates=christmas)  # Thursday's shift
    # dates with no hours set: staffed every day but those
    assert hours.is_open({}, "Europe/Paris", now=at(2026, 12, 24, 23, 59), closed_dates=christmas)
    assert not hours.is_open({}, "Europe/Paris", now=at(2026, 12, 25, 0, 0), closed_dates=christmas)
    # the date is the organisation's: 23:30 UTC on the 24th is already the 25th in Paris
    assert not hours.is_open({}, "Europe/Paris", now=at(2026, 12, 24, 23, 30, tz=ZoneInfo("UTC")), closed_dates=christmas)
    assert hours.upcoming(["2026-12-25", "2026-11-01", "2027-01-01"], "UTC", now=at(2026, 11, 27, 12, 0)) == [
        date(2026, 12, 25), date(2027, 1, 1)]


@pytest.mark.django_db
def test_a_handoff_on_a_closed_date_gets_the_away_message(acme, acme_bot):
    acme_bot.publish()
    today = timezone.now().astimezone(ZoneInfo("Pacific/Auckland")).date().isoformat()
    Organization.objects.filter(id=acme.id).update(team_hours={}, timezone="Pacific/Auckland", closed_dates=[today])
    closed = services.receive(bot=acme_bot, channel="widget", thread_id="holiday", text="talk to a human please")
    notice = Message.objects.get(reply_to=closed.message)
    assert notice.text == acme_bot.away_message and notice.meta["outside_team_hours"]


@pytest.mark.django_db
def test_managers_set_a_second_span_and_closed_dates(client, alice, acme):
    client.force_login(alice)
    today = timezone.now().astimezone(ZoneInfo("Europe/Paris")).date()
    form = {"timezone": "Europe/Paris", "mon_open": "on", "mon_from": "09:00", "mon_to": "12:30",
            "mon_from2": "13:30", "mon_to2": "18:00", "fri_open": "on", "fri_from": "09:00", "fri_to": "12:00",
            "fri_from2": "20:00", "fri_to2": "02:00",
            "closed_dates": f"{today.year + 1}-12-25, {today.year + 1}-01-01\n{today.year + 1}-12-25  2020-05-01 "}
    client.post(reverse("org:hours"), form)
    acme.refresh_from_db()
    assert acme.team_hours == LUNCH
    assert acme.closed_dates == [f"{today.year + 1}-01-01", f"{today.year + 1}-12-25"]  # sorted, once, none gone by
    page = client.get(reverse("org:members")).content.decode()
    assert "Team hours saved." in page and "<strong>Monday</strong> 09:00–12:30, 13:30–18:00" in page
    assert f"<strong>Closed on</strong> Fri 1 Jan {today.year + 1}" in page
    assert 'value="13:30"' in page and f"{today.year + 1}-01-01\n{today.year + 1}-12-25</textarea>" in page
    assert acme.audit_events.latest("id").text.endswith(f"closed on {today.year + 1}-01-01, {today.year + 1}-12-25")

    for bad, says in ((dict(form, mon_to2=""), "Monday: give both times of the second span, or neither."),
                      (dict(form, mon_from2="12:00"), "Monday: the second span starts before the first ends."),
                      (dict(form, mon_to="02:00"), "Monday: only the day&#x27;s last span can run past midnight."),
                      (dict(form, mon_to2="13:30"), "Monday: the team cannot stop when it starts."),
                      (dict(form, closed_dates="25/12/2026"), "Closed on: “25/12/2026” is not a date written YYYY-MM-DD.")):
        response = client.post(reverse("org:hours"), bad)
        assert response.status_code == 400 and says in response.content.decode(), says
    page = response.content.decode()  # what was typed is still there to be corrected
    assert 'value="20:00"' in page and "25/12/2026</textarea>" in page
    acme.refresh_from_db()
    assert acme.team_hours == LUNCH and len(acme.closed_dates) == 2  # nothing saved from those

    client.post(reverse("org:hours"), {"timezone": "Europe/Paris", "closed_dates": str(today)})  # dates only
    acme.refresh_from_db()
    assert acme.team_hours == {} and acme.closed_dates == [str(today)]
    assert "Closed on" in client.get(reverse("org:members")).content.decode()


@pytest.mark.django_db
def test_saving_the_team_page_unchanged_keeps_the_hours(client, alice, acme):
    """What the page shows is what it saves: a one-span day shows no second span."""
    from bots.views.org import TeamHoursForm

    Organization.objects.filter(id=acme.id).update(team_hours={"tue": ["09:00", "18:00"], **LUNCH},
                                                   timezone="Europe/Paris")
    acme.refresh_from_db()
    shown = TeamHoursForm.initial_for(acme)
    assert (shown["tue_from2"], shown["tue_to2"]) == (None, None) and shown["fri_from2"] == "20:00"
    client.force_login(alice)
    posted = {key: "on" if value is True else "" if value in (None, False) else value for key, value in shown.items()}
    assert client.post(reverse("org:hours"), posted).status_code == 302
    acme.refresh_from_db()
    assert acme.team_hours == {"tue": [["09:00", "18:00"]], **LUNCH}
