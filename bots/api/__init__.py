"""The REST API (Django REST framework, token auth)."""
