"""Team hours: when an organisation's people answer. A handoff outside them gets the bot's away
message instead of its handoff message, so nobody is promised a reply "shortly" at 3 a.m.

``Organization.team_hours`` maps a weekday ("mon" … "sun") to one ``["HH:MM", "HH:MM"]`` span
in ``Organization.timezone``; a day left out is closed; ``{}`` means not set (always staffed,
as before the setting). A span whose end is not after its start runs past midnight
(``["22:00", "06:00"]``: until 6 the next morning). Times are wall-clock times in that zone,
so daylight-saving changes move nothing.
"""
from __future__ import annotations

from datetime import datetime, time
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


def _parse(value: str) -> time:
    return time.fromisoformat(value)


def is_open(hours: dict, zone_name: str, now: datetime | None = None) -> bool:
    """Whether ``now`` (aware; default: the current time) falls in the team hours; True when none are set."""
    if not hours:
        return True
    local = (now or dj_timezone.now()).astimezone(zone(zone_name))
    clock = local.time().replace(tzinfo=None)
    today, yesterday = DAYS[local.weekday()], DAYS[(local.weekday() - 1) % 7]
    span = hours.get(today)
    if span:
        start, end = _parse(span[0]), _parse(span[1])
        if (start <= clock < end) if end > start else clock >= start:
            return True
    span = hours.get(yesterday)  # yesterday's span running past midnight
    if span:
        start, end = _parse(span[0]), _parse(span[1])
        if end <= start and clock < end:
            return True
    return False


def team_away(organization, now: datetime | None = None) -> bool:
    """Whether ``organization``'s team is outside its hours now (never when it set none)."""
    return not is_open(organization.team_hours, organization.timezone, now)


def summary(hours: dict) -> list[tuple[str, str]]:
    """[(day name, "09:00–18:00" or "closed")] Monday first, for pages."""
    return [(DAY_NAMES[day], "–".join(hours[day]) if hours.get(day) else "closed") for day in DAYS]
