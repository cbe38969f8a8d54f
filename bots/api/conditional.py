"""Conditional writes (RFC 9110 §13): an ETag on what the API returns of one object, and
``If-Match`` on a write, so a client that read the object, then writes it after someone else
changed it, is answered 412 instead of silently overwriting the other change.

    GET /api/knowledge/7/                  → 200, ETag: "3f…"
    PATCH /api/knowledge/7/  If-Match: "3f…"  → 200 and the new ETag, or 412 when it changed since

The ETag is a digest of the object's representation (the serializer's data): any change of what
GET shows changes it. Without ``If-Match`` a write goes through as before. Django's ``condition``
decorator and ``get_conditional_response`` compute the ETag before the view runs and answer 412
with an empty body; here the view checks it before validating the write (which may fetch a web
page, with nothing locked), then again in the write's own transaction, on the row it has locked (no
other save between the check and the write), and the 412 says why in JSON. Headers
are parsed with Django's ``parse_etags`` and compared strongly, as its ``_if_match_passes`` does.
"""
from django.utils.http import parse_etags, quote_etag
from rest_framework import status
from rest_framework.exceptions import APIException, ValidationError

from ..forms import digest

IF_MATCH = "HTTP_IF_MATCH"


class PreconditionFailed(APIException):
    status_code = status.HTTP_412_PRECONDITION_FAILED
    default_code = "precondition_failed"
    default_detail = ("This was changed since you read it: its ETag is no longer the one If-Match gives. Nothing "
                      "was changed. GET it again, apply your change to it as it is now, and send that with the new "
                      "ETag in If-Match.")


def etag(data) -> str:
    """A strong ETag of a representation (a serializer's data)."""
    return quote_etag(digest(data))


def tagged(response):
    """``response`` (one object's representation, as DRF returns it) with its ETag."""
    response["ETag"] = etag(response.data)
    return response


def check_if_match(request, current: str) -> None:
    """Nothing when the request has no ``If-Match``, or one naming ``current`` (or ``*``: the object
    exists); else PreconditionFailed (412), or a 400 when the header names no ETag at all (``abc``
    without its quotes: a condition the client meant, not one to drop as Django does)."""
    header = request.META.get(IF_MATCH)
    if header is None:
        return
    wanted = parse_etags(header)
    if not wanted:
        raise ValidationError({"If-Match": ['Give the ETag as the API sent it, quotes included ("3f…"), or *.']})
    if wanted != ["*"] and current not in wanted:  # strong comparison: W/"…" never matches
        raise PreconditionFailed()
