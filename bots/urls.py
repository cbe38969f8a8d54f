"""Builder, inbox and dashboard pages."""
from django.urls import path
from django.views.generic import RedirectView

app_name = "bots"
urlpatterns = [
    path("", RedirectView.as_view(url="/bots/"), name="home"),
]
