"""Dashboards (namespace ``dashboards``)."""
from django.urls import path

from .views import dashboards

urlpatterns = [
    path("", dashboards.org_dashboard, name="org"),
    path("bots/<int:bot_id>/", dashboards.bot_dashboard, name="bot"),
]
