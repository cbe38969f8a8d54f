"""API authentication: `Authorization: Token <token>` checked against the stored digest."""
from datetime import timedelta

from django.utils import timezone
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed

from bots.models import ApiToken
from bots.models.tenants import token_digest

TOUCH_EVERY = timedelta(minutes=5)  # last_used is written at most this often per token


class HashedTokenAuthentication(TokenAuthentication):
    """DRF's token scheme (same header, same 401s), over ApiToken: only digests are stored."""

    keyword = "Token"

    def authenticate_credentials(self, key):
        token = ApiToken.objects.select_related("user").filter(digest=token_digest(key)).first()
        if token is None:
            raise AuthenticationFailed("Invalid token.")
        if not token.user.is_active:
            raise AuthenticationFailed("User inactive or deleted.")
        now = timezone.now()
        if token.last_used is None or now - token.last_used > TOUCH_EVERY:
            ApiToken.objects.filter(pk=token.pk).update(last_used=now)
        return token.user, token
