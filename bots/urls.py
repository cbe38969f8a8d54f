"""Pages of the bots app: builder (urls_builder), inbox and dashboards (urls_inbox)."""
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="bots:list"), name="home"),
    path("bots/", include(("bots.urls_builder", "bots"))),
    path("inbox/", include(("bots.urls_inbox", "inbox"))),
    path("dashboard/", include(("bots.urls_dashboards", "dashboards"))),
    path("team/", include(("bots.urls_org", "org"))),
]
