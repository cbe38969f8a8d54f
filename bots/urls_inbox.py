"""The inbox (namespace ``inbox``)."""
from django.urls import path

from .views import inbox, replies

urlpatterns = [
    path("", inbox.conversation_list, name="list"),
    path("export.csv", inbox.export, name="export"),
    path("bulk/", inbox.bulk, name="bulk"),
    path("replies/", replies.saved_replies, name="replies"),
    path("replies/<int:saved_reply_id>/delete/", replies.saved_reply_delete, name="reply-delete"),
    path("<int:conversation_id>/", inbox.thread, name="thread"),
    path("<int:conversation_id>/messages.json", inbox.thread_json, name="thread-json"),
    path("<int:conversation_id>/reply/", inbox.reply, name="reply"),
    path("<int:conversation_id>/delete/", inbox.delete, name="delete"),
    path("<int:conversation_id>/assign/", inbox.assign, name="assign"),
    path("<int:conversation_id>/tags/", inbox.tags, name="tags"),
    path("attachments/<int:attachment_id>/", inbox.attachment, name="attachment"),
] + [
    path(f"<int:conversation_id>/{action}/", inbox.control, {"action": action}, name=action)
    for action in inbox.ACTIONS
]
