from django.apps import AppConfig


class BotsConfig(AppConfig):
    name = "bots"
    verbose_name = "Bots and conversations"

    def ready(self):
        from . import signals  # noqa: F401 - connects the receivers
        from chatnexus import checks  # noqa: F401 - registers the start-up checks of the settings
