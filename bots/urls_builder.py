"""The no-code bot builder: bot list, create/delete, the builder page, knowledge,
publishing, versions and the system-prompt preview. Mounted at ``/bots/`` (namespace ``bots``)."""
from django.urls import path

from .views import builder

urlpatterns = [
    path("", builder.bot_list, name="list"),
    path("new/", builder.bot_create, name="create"),
    path("<int:bot_id>/", builder.bot_builder, name="builder"),
    path("<int:bot_id>/delete/", builder.bot_delete, name="delete"),
    path("<int:bot_id>/export.json", builder.bot_export, name="export"),
    path("import/", builder.bot_import, name="import"),
    path("<int:bot_id>/publish/", builder.bot_publish, name="publish"),
    path("<int:bot_id>/versions/<int:number>/restore/", builder.version_restore, name="version_restore"),
    path("<int:bot_id>/preview-prompt/", builder.prompt_preview, name="prompt_preview"),
    path("<int:bot_id>/knowledge/faq/", builder.faq_add, name="faq_add"),
    path("<int:bot_id>/knowledge/faq/import/", builder.faq_import, name="faq_import"),
    path("<int:bot_id>/knowledge/document/", builder.document_add, name="document_add"),
    path("<int:bot_id>/knowledge/<int:item_id>/", builder.knowledge_edit, name="knowledge_edit"),
    path("<int:bot_id>/knowledge/<int:item_id>/delete/", builder.knowledge_delete, name="knowledge_delete"),
    path("<int:bot_id>/knowledge/<int:item_id>/fetch/", builder.knowledge_refetch, name="knowledge_refetch"),
]
