"""Team hours: when an organisation's people answer. A handoff outside them gets the bot's away
message instead of its handoff message, so nobody is promised a reply "shortly" at 3 a.m.

``Organization.team_hours`` maps a weekday ("mon" … "sun") to its spans in
``Organization.timezone``: ``[["09:00", "12:30"], ["13:30", "18:00"]]`` (a lunch break), or one
span written alone, ``["09:00", "18:00"]`` (how it was stored before days had two); a day left
out is closed; ``{}`` means not set (always staffed, as before the setting). A day's last span
may end at or before its start, running past midnight (``["22:00", "06:00"]``: until 6 the next
morning). ``Organization.closed_dates`` lists dates ("2026-12-25") on which the team does not
work — holidays: the spans that start on such a date do not hold; a night shift that began the
day before still ends as usual. Times are wall-clock times in that zone, so daylight-saving
changes move nothing.
"""
from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from django.utils import timezone as dj_timezone

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_NAMES = dict(zip(DAYS, ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")))


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def zone_names() -> list[str]:
    return sorted(available_timezones())


def local_now(zone_name: str, now: datetime | None = None) -> datetime:
    """``now`` (aware; default: the current time) as a wall-clock time in the zone."""
    return (now or dj_timezone.now()).astimezone(zone(zone_name))


def spans(value) -> list[list[str]]:
    """A day's spans, [[start, end], ...], from either stored form (see above); [] for a closed day."""
    if not value:
        return []
    return [list(value)] if isinstance(value[0], str) else [list(span) for span in value]


def _times(value) -> list[tuple[time, time]]:
    return [(time.fromisoformat(start), time.fromisoformat(end)) for start, end in spans(value)]


def is_open(hours: dict, zone_name: str, now: datetime | None = None, closed_dates=()) -> bool:
    """Whether ``now`` (aware; default: the current time) falls in the team hours and not on one of
    ``closed_dates`` ("YYYY-MM-DD"); True when neither is set. Dates closed with no hours set close
    those whole days only."""
    local = local_now(zone_name, now)
    today = local.date()
    if not hours:
        return today.isoformat() not in closed_dates
    clock = local.time().replace(tzinfo=None)
    if today.isoformat() not in closed_dates:
        for start, end in _times(hours.get(DAYS[today.weekday()])):
            if (start <= clock < end) if end > start else clock >= start:
                return True
    yesterday = today - timedelta(days=1)
    if yesterday.isoformat() not in closed_dates:
        for start, end in _times(hours.get(DAYS[yesterday.weekday()]))[-1:]:  # yesterday's last span, past midnight
            if end <= start and clock < end:
                return True
    return False


def team_away(organization, now: datetime | None = None) -> bool:
    """Whether ``organization``'s team is outside its hours now (never when it set none)."""
    return not is_open(organization.team_hours, organization.timezone, now, organization.closed_dates)


def summary(hours: dict) -> list[tuple[str, str]]:
    """[(day name, "09:00–12:30, 13:30–18:00" or "closed")] Monday first, for pages."""
    return [(DAY_NAMES[day], ", ".join("–".join(span) for span in spans(hours.get(day))) or "closed")
            for day in DAYS]


def upcoming(closed_dates, zone_name: str, now: datetime | None = None) -> list[date]:
    """The closed dates from today on (in the zone), in order, for pages."""
    today = local_now(zone_name, now).date()
    return sorted(d for d in map(date.fromisoformat, closed_dates) if d >= today)
