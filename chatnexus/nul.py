"""Refuse a query string carrying NUL characters with a 400 before any view runs.

PostgreSQL text cannot hold NUL: a search term like ``?q=a%00b`` reached the database from the
API's filters and came back as a 500. Forms refuse it already (Django's fields), bodies are
cleaned where they are stored (``bots.services.storable``); this covers every query parameter of
every view at once. (The same characters in a path never match a route: 404.)
"""
from django.http import JsonResponse


class RefuseNulMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if any("\x00" in key or "\x00" in value for key, values in request.GET.lists() for value in values):
            return JsonResponse({"error": "query parameters may not contain NUL characters"}, status=400)
        return self.get_response(request)
