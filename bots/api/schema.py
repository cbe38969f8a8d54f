"""The OpenAPI schema's view of organisation selection: every operation a member calls
(``IsMember`` and its subclasses) documents the optional ``X-Organization`` header. And the
headers of conditional writes (bots/api/conditional.py), for the views that take them."""
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiParameter

ORGANIZATION_PARAMETER = OpenApiParameter(
    "X-Organization",
    str,
    OpenApiParameter.HEADER,
    required=False,
    description=(
        "Slug of the organisation this request acts for, for a user who belongs to several. "
        "Without it: the oldest membership. 403 when the user is not a member of it."
    ),
)

IF_MATCH_PARAMETER = OpenApiParameter(
    "If-Match",
    str,
    OpenApiParameter.HEADER,
    required=False,
    description=(
        'The ETag a GET (or the last write) gave, quotes included: "3f…". The write is refused with 412 '
        "Precondition Failed, nothing changed, when the item was changed since. Without it: written "
        "whatever happened since."
    ),
)
ETAG_HEADER = OpenApiParameter(
    "ETag",
    str,
    OpenApiParameter.HEADER,
    response=[200, 201],
    description="The item's version as returned: send it back in If-Match to change or delete it only if unchanged.",
)


class ChatNexusSchema(AutoSchema):
    def get_override_parameters(self):
        from .views import IsMember

        parameters = list(super().get_override_parameters())
        if any(isinstance(permission, IsMember) for permission in self.view.get_permissions()):
            parameters.append(ORGANIZATION_PARAMETER)
        return parameters
