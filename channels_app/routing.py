"""Websocket routes of the channels (the website widget)."""
websocket_urlpatterns = []
