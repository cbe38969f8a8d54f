"""The widget's public HTTP endpoint: the bot's look, for the embed script.

``GET /channels/widget/<public_key>/config/`` answers with JSON. CORS is granted only
to the bot's allow-listed origins (and the platform itself); another origin gets a
403 with a clear error, an unknown or disabled widget a 404.
"""
from django.http import JsonResponse
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_GET

from . import options as widget_options


@require_GET
def public_config(request, public_key):
    loaded = widget_options.load(public_key)
    origin = request.headers.get("Origin", "")
    if loaded is None:
        response = JsonResponse({"error": "No website widget is enabled for this bot."}, status=404)
    elif origin and not widget_options.origin_allowed(loaded[2], origin):
        response = JsonResponse({"error": f"The origin {origin} is not allowed to embed this bot's widget."}, status=403)
    else:
        bot, _config, opts = loaded
        response = JsonResponse(widget_options.public_look(bot, opts))
        if origin:
            response["Access-Control-Allow-Origin"] = origin
    response["Cache-Control"] = "no-store"
    patch_vary_headers(response, ["Origin"])
    return response
