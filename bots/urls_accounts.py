"""Your account, sign up, log in (and its two-factor step), log out, password reset, invitations, org
switcher, API token, two-factor sign-in."""
from django.contrib.auth import views as auth_views
from django.urls import path

from .views import accounts, two_factor

urlpatterns = [
    path("", accounts.account, name="account"),
    path("notifications/", accounts.notifications, name="account-notifications"),
    path("signup/", accounts.signup, name="signup"),
    path("signup/sent/", accounts.signup_sent, name="signup-sent"),
    path("signup/<str:token>/", accounts.signup_confirm, name="signup-confirm"),
    path("login/", accounts.LoginView.as_view(), name="login"),
    path("login/code/", two_factor.login_code, name="login-code"),
    path("two-factor/", two_factor.manage, name="two-factor"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("password/reset/", accounts.PasswordResetView.as_view(), name="password_reset"),
    path("password/reset/sent/", accounts.PasswordResetDoneView.as_view(), name="password_reset_done"),
    path(
        "password/reset/<uidb64>/<token>/",
        auth_views.PasswordResetConfirmView.as_view(),
        name="password_reset_confirm",
    ),
    path("password/reset/done/", auth_views.PasswordResetCompleteView.as_view(), name="password_reset_complete"),
    path("password/change/", accounts.PasswordChangeView.as_view(), name="password_change"),
    path("password/change/done/", auth_views.PasswordChangeDoneView.as_view(), name="password_change_done"),
    path("invite/<str:token>/", accounts.invite_accept, name="invite-accept"),
    path("organization/switch/", accounts.switch_organization, name="switch-organization"),
    path("api-token/", accounts.api_token, name="api-token"),
]
