"""Websocket routes of the channels (the website widget)."""
from django.urls import path

from .widget.consumer import WidgetConsumer

websocket_urlpatterns = [
    path("ws/widget/<str:public_key>/", WidgetConsumer.as_asgi()),
]
