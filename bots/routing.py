"""Websocket routes of the bots app (the builder's live preview, the inbox)."""
from django.urls import path

from .consumers import PreviewConsumer

websocket_urlpatterns = [
    path("ws/preview/<int:bot_id>/", PreviewConsumer.as_asgi()),
]
