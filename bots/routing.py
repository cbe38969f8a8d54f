"""Websocket routes of the bots app (the builder's live preview, the inbox)."""
websocket_urlpatterns = []
