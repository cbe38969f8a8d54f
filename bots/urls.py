"""Pages of the bots app: builder (urls_builder), inbox and dashboards (urls_inbox)."""
from django.urls import include, path

from .views.accounts import home

urlpatterns = [
    path("", home, name="home"),  # each role's start page: the bots, or the inbox for agents
    path("bots/", include(("bots.urls_builder", "bots"))),
    path("inbox/", include(("bots.urls_inbox", "inbox"))),
    path("dashboard/", include(("bots.urls_dashboards", "dashboards"))),
    path("team/", include(("bots.urls_org", "org"))),
]
