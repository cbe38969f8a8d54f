"""ASGI middleware: an HTTP request body larger than CHATNEXUS_MAX_REQUEST_BYTES is refused with 413
before Django reads it.

Django's ASGI handler reads the whole body into a temporary file before any middleware or view
runs, and uvicorn sets no limit, so every view's own size check (a WhatsApp webhook's 64 KB, an
email's 4 MB, a widget upload's Content-Length) came after the bytes were on disk: anyone could
fill it with one endless chunked POST. Here a declared Content-Length over the limit is answered at
once, and a body without one (chunked) is counted as it arrives and cut off at the limit. The
per-view limits stay, with their own clearer messages; this one only bounds what any request costs.
"""
import json

from django.conf import settings


class _TooLarge(Exception):
    pass


class BodyLimit:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = settings.CHATNEXUS_MAX_REQUEST_BYTES
        declared = next((value for name, value in scope.get("headers", []) if name == b"content-length"), None)
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                return await _refuse(send, 400, "bad Content-Length")
            if length > limit:
                return await _refuse(send, 413, f"request body larger than {limit} bytes")
            return await self.app(scope, receive, send)  # the server holds the body to its declared length

        received, started = 0, False

        async def counted():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _TooLarge
            return message

        async def watched(message):
            nonlocal started
            started = True
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except _TooLarge:
            if not started:  # Django reads the body before it answers: nothing was sent yet
                await _refuse(send, 413, f"request body larger than {limit} bytes")


async def _refuse(send, status, error):
    body = json.dumps({"error": error}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
