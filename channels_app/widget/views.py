"""The widget's public HTTP endpoints: the bot's look, for the embed script, and visitors' files.

``GET /channels/widget/<public_key>/config/`` answers with JSON. CORS is granted only
to the bot's allow-listed origins (and the platform itself: PUBLIC_URL's origin, or the one the request
reached it at, ``options.own_origin``); another origin gets a
403 with a clear error, an unknown or disabled widget a 404.
``POST /channels/widget/<public_key>/upload/``: a visitor's file (uploads.py).
"""
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.utils.cache import patch_vary_headers
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from . import options as widget_options
from . import uploads


def own_origin(request) -> str:
    """The platform's origin as this request reached it: its Try page, opened there, may embed the widget."""
    return widget_options.own_origin(request.scheme, request.headers.get("Host", ""))


@require_GET
def public_config(request, public_key):
    loaded = widget_options.load(public_key)
    origin = request.headers.get("Origin", "")
    if loaded is None:
        response = JsonResponse({"error": "No website widget is enabled for this bot."}, status=404)
    elif origin and not widget_options.origin_allowed(loaded[2], origin, own_origin(request)):
        response = JsonResponse({"error": f"The origin {origin} is not allowed to embed this bot's widget."}, status=403)
    else:
        bot, _config, opts = loaded
        response = JsonResponse(widget_options.public_look(bot, opts))
        if origin:
            response["Access-Control-Allow-Origin"] = origin
    response["Cache-Control"] = "no-store"
    patch_vary_headers(response, ["Origin"])
    return response


@csrf_exempt  # no cookies ride along: the visitor token in the form and the origin allow-list guard it
@require_POST
def upload(request, public_key):
    origin = request.headers.get("Origin", "")
    try:
        length = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        length = 0
    checked = uploads.check_request(public_key, origin, length, own_origin(request))  # before the body is parsed
    if isinstance(checked, uploads.UploadRefusal):
        result = checked
    else:
        try:  # request.POST / FILES parse the body
            result = uploads.take_upload(*checked, public_key, request.POST, request.FILES,
                                         client_ip=request.META.get("REMOTE_ADDR") or "?")
        except (MultiPartParserError, RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent):
            result = uploads.UploadRefusal(400, "bad_upload", "That upload could not be read; please try again.")
    if isinstance(result, uploads.UploadRefusal):
        response = JsonResponse(result.frame(), status=result.status)
        if result.retry_after:
            response["Retry-After"] = str(result.retry_after)
    else:
        status, frame = result
        response = JsonResponse(frame, status=status)
    if not isinstance(checked, uploads.UploadRefusal) or checked.code not in ("forbidden_origin", "not_found"):
        response["Access-Control-Allow-Origin"] = origin  # an allow-listed origin: the page may read why
    response["Cache-Control"] = "no-store"
    patch_vary_headers(response, ["Origin"])
    return response
