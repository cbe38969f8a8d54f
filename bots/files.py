"""Serving a customer's file to an agent without letting it act on our origin.

Only common image, audio, video and PDF types render in the browser; anything else
(HTML, SVG, scripts, unknown types) is a download. Every response carries ``nosniff``
and a CSP that allows no script, so even a mislabelled file cannot run.
"""
from django.http import FileResponse
from django.utils.http import content_disposition_header

INLINE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp", "application/pdf")
INLINE_PREFIXES = ("audio/", "video/")
CSP = "default-src 'none'; img-src 'self'; media-src 'self'; style-src 'unsafe-inline'"


def attachment_response(attachment):
    """The stored file of a ``bots.Attachment``; a download without a name is ``attachment-<n>``."""
    content_type = (attachment.content_type or "application/octet-stream").split(";")[0].strip().lower()
    inline = content_type in INLINE_TYPES or content_type.startswith(INLINE_PREFIXES)
    response = FileResponse(attachment.file.open("rb"), content_type=content_type)
    name = attachment.filename or ("" if inline else f"attachment-{attachment.index + 1}")
    response["Content-Disposition"] = content_disposition_header(not inline, name) or "inline"
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = CSP
    response["Cache-Control"] = "private, max-age=300"
    return response
