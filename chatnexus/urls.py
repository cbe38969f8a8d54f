"""URL map: each area brings its own urls module."""
from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

urlpatterns = [
    # browsers ask for /favicon.ico on pages that name no icon (the widget's try page, JSON)
    path("favicon.ico", RedirectView.as_view(url=static("chatnexus/favicon.svg"), permanent=True)),
    path("admin/", admin.site.urls),
    path("accounts/", include("bots.urls_accounts")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/", include("bots.api.urls")),
    path("channels/", include("channels_app.urls")),
    path("", include("bots.urls")),
]
