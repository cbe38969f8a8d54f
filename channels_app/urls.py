"""Inbound webhooks of the channels (each channel module adds its routes here)."""
urlpatterns = []
