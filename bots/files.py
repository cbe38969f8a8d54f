"""Serving a customer's file to an agent without letting it act on our origin.

Only common image, audio, video and PDF types render in the browser; anything else
(HTML, SVG, scripts, unknown types) is a download. Every response carries ``nosniff``
and a CSP that allows no script, so even a mislabelled file cannot run.
"""
from django.http import FileResponse, HttpResponse
from django.utils.http import content_disposition_header

INLINE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp", "application/pdf")
INLINE_PREFIXES = ("audio/", "video/")
CSP = "default-src 'none'; img-src 'self'; media-src 'self'; style-src 'unsafe-inline'"


def file_response(content, *, content_type: str, filename: str = "", fallback_name: str = "attachment"):
    """`content`: bytes or an open file. A download without a name is called `fallback_name`."""
    content_type = (content_type or "application/octet-stream").split(";")[0].strip().lower()
    inline = content_type in INLINE_TYPES or content_type.startswith(INLINE_PREFIXES)
    if isinstance(content, bytes):
        response = HttpResponse(content, content_type=content_type)
    else:
        response = FileResponse(content, content_type=content_type)
    name = filename or ("" if inline else fallback_name)
    response["Content-Disposition"] = content_disposition_header(not inline, name) or "inline"
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = CSP
    response["Cache-Control"] = "private, max-age=300"
    return response


def attachment_response(attachment):
    return file_response(attachment.file.open("rb"), content_type=attachment.content_type,
                         filename=attachment.filename, fallback_name=f"attachment-{attachment.index + 1}")
