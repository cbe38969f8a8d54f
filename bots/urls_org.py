"""The team: members, roles, invitations (namespace ``org``)."""
from django.urls import path

from .views import org

urlpatterns = [
    path("", org.member_list, name="members"),
    path("members/<int:membership_id>/role/", org.member_role, name="member-role"),
    path("members/<int:membership_id>/remove/", org.member_remove, name="member-remove"),
    path("invitations/<int:invitation_id>/cancel/", org.invitation_cancel, name="invitation-cancel"),
    path("invitations/<int:invitation_id>/renew/", org.invitation_renew, name="invitation-renew"),
    path("retention/", org.retention, name="retention"),
    path("hours/", org.team_hours, name="hours"),
    path("tags/<int:tag_id>/", org.tag_edit, name="tag-edit"),
    path("activity/", org.activity, name="activity"),
]
