"""Refuse a URL carrying NUL characters, in its path or its query string, with a 400 before any view
runs.

PostgreSQL text cannot hold NUL: a search term like ``?q=a%00b`` reached the database from the
API's filters and came back as a 500, and so did a key in a path (``/channels/widget/ab%00cd/config/``:
a ``<str:...>`` converter takes any character but "/", NUL too, and the view looks the key up). Forms
refuse it already (Django's fields), bodies are cleaned where they are stored
(``bots.services.storable``); this covers every path and query parameter of every view at once.
(Websockets do not pass through here: the widget's consumer refuses such a key itself,
``channels_app.widget.options.load``.)
"""
from django.http import JsonResponse


class RefuseNulMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if "\x00" in request.path:
            return JsonResponse({"error": "the address (URL) may not contain NUL characters"}, status=400)
        if any("\x00" in key or "\x00" in value for key, values in request.GET.lists() for value in values):
            return JsonResponse({"error": "query parameters may not contain NUL characters"}, status=400)
        return self.get_response(request)
