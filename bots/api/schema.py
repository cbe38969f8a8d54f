"""The OpenAPI schema's view of organisation selection: every operation a member calls
(``IsMember`` and its subclasses) documents the optional ``X-Organization`` header."""
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


class ChatNexusSchema(AutoSchema):
    def get_override_parameters(self):
        from .views import IsMember

        parameters = list(super().get_override_parameters())
        if any(isinstance(permission, IsMember) for permission in self.view.get_permissions()):
            parameters.append(ORGANIZATION_PARAMETER)
        return parameters
