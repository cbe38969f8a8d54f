"""ASGI entry point: HTTP through Django, websockets through Channels.

Served by uvicorn (``uvicorn chatnexus.asgi:application``). Websocket routes are
collected from the apps that own them: the builder's live preview (bots) and the
website widget (channels_app).
"""
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatnexus.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402  (needs Django set up)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from bots.routing import websocket_urlpatterns as bots_ws  # noqa: E402
from channels_app.routing import websocket_urlpatterns as channels_ws  # noqa: E402

from .bodylimit import BodyLimit  # noqa: E402

# The first stored message queues its reply task (bots.services._queue_reply), which imports the engine
# (torch, transformers: seconds). Imported there, inside the one thread every consumer's and view's
# database work shares (thread-sensitive sync_to_async), it stalled every socket and page of the server
# for those seconds; imported here, the server pays it once before it takes its first request.
import inference.tasks  # noqa: E402,F401

application = ProtocolTypeRouter(
    {
        "http": BodyLimit(django_asgi_app),  # bodies over CHATNEXUS_MAX_REQUEST_BYTES: 413, never read
        # The widget does its own origin check per bot (allow-list), so no global
        # AllowedHostsOriginValidator here; the preview checks its Origin (bots.consumers.same_origin)
        # and the session user.
        "websocket": AuthMiddlewareStack(URLRouter(bots_ws + channels_ws)),
    }
)
