"""Dashboards: the organisation's and each bot's numbers and charts (``bots.stats``), and each
bot's questions to answer (``bots.gaps``)."""
from django.http import JsonResponse
from django.shortcuts import render

from .. import gaps, stats
from ..models import Bot
from ..tenancy import get_scoped_or_404, scoped
from .decorators import manager_required

DAY_CHOICES = (7, 14, 30, 90)


def _days(request):
    try:
        days = int(request.GET.get("days", 14))
    except ValueError:
        days = 14
    return days if days in DAY_CHOICES else 14


@manager_required
def org_dashboard(request):
    days = _days(request)
    data = stats.summary(request.organization, days=days)
    bots = [(bot, stats.summary(request.organization, bot=bot, days=days)) for bot in scoped(request, Bot).order_by("name")]
    if request.GET.get("format") == "json":
        return JsonResponse(data)
    return render(
        request,
        "dashboards/dashboard.html",
        {"stats": data, "bot": None, "bots": bots, "days": days, "day_choices": DAY_CHOICES},
    )


@manager_required
def bot_dashboard(request, bot_id):
    bot = get_scoped_or_404(request, Bot, id=bot_id)
    days = _days(request)
    data = stats.summary(request.organization, bot=bot, days=days)
    if request.GET.get("format") == "json":
        return JsonResponse(data)
    questions = gaps.questions_to_answer(bot, days)
    return render(request, "dashboards/dashboard.html", {"stats": data, "bot": bot, "days": days, "day_choices": DAY_CHOICES,
                                                         "gaps": questions.rows, "gaps_read_from": questions.read_from,
                                                         "gaps_scanned": gaps.SCANNED})
