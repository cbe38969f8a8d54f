"""REST API routes (``/api/``). Token or session auth; docs at /api/docs/."""
from django.urls import path
from rest_framework.routers import DefaultRouter

from . import views

router = DefaultRouter()
router.register("bots", views.BotViewSet, basename="bot")
router.register("knowledge", views.KnowledgeViewSet, basename="knowledge")
router.register("conversations", views.ConversationViewSet, basename="conversation")
router.register("messages", views.MessageViewSet, basename="message")
router.register("saved-replies", views.SavedReplyViewSet, basename="saved-reply")

urlpatterns = [
    path("stats/", views.StatsView.as_view(), name="api-stats"),
    path("attachments/<int:attachment_id>/", views.AttachmentFileView.as_view(), name="attachment-file"),
    *router.urls,
]
