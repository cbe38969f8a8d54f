"""URL map: each area brings its own urls module."""
from django.contrib import admin
from django.contrib.auth.views import redirect_to_login
from django.shortcuts import redirect
from django.templatetags.static import static
from django.urls import include, path, reverse
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView


def _admin_login(request, extra_context=None):
    """The admin signs in through our sign-in page, so its two-factor step cannot be skipped."""
    return redirect_to_login(request.GET.get("next") or reverse("admin:index"), login_url=reverse("login"))


def _admin_password_change(request, extra_context=None):
    """The admin changes a password on our page, which counts wrong old passwords like failed
    sign-ins (bots/views/accounts.py): Django's own let a staff session guess without limit."""
    return redirect("password_change")


admin.site.login = _admin_login
admin.site.password_change = _admin_password_change

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
