"""``manage.py serve``: the whole platform in one process (the embedded default).

Starts Celery workers for both queues as threads inside this process (in-memory
broker), then the ASGI server (uvicorn) for pages, API and websockets. With
``REDIS_URL`` set, run the workers separately instead (see docker-compose.yml);
this command then serves the web app only.
"""
import logging
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

log = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Run the platform: ASGI server, plus in-process workers in the embedded mode."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--no-preload", action="store_true", help="load the model on the first message")

    def handle(self, *args, host, port, no_preload, **options):
        import uvicorn

        workers = None
        if settings.EMBEDDED:
            workers = self.start_embedded_workers(preload=not no_preload)
        self.stdout.write(self.style.SUCCESS(f"ChatNexus is up: http://{host}:{port}/"))
        try:
            uvicorn.run("chatnexus.asgi:application", host=host, port=port, log_level="info",
                        ws_max_size=ws_max_size())
        finally:
            if workers is not None:
                workers.__exit__(None, None, None)

    def start_embedded_workers(self, preload):
        from celery.contrib.testing.worker import start_worker

        from chatnexus.celery import app

        if preload:
            from inference import runtime
            from inference.engine.errors import EngineError

            self.stdout.write("Loading the model. The first start on a machine converts the bundled GGUF (~15 s) and\n"
                              "measures which weight precision is fastest and faithful here (about a minute, once; cached).")
            started = time.monotonic()
            try:
                engine = runtime.preload()
            except EngineError as e:  # a missing or unreadable model: say so, no traceback, do not start
                raise CommandError(f"cannot load the model ({settings.CHATNEXUS_TARGET}): {e}\n"
                                   "Set CHATNEXUS_TARGET to a GGUF file, a model folder or a Hugging Face id "
                                   "(unset: the bundled model).") from None
            self.stdout.write(f"Model ready in {time.monotonic() - started:.0f} s: {engine.target_spec}, "
                              f"{engine.precision.name} weights on {engine.device}.")
        worker = start_worker(
            app,
            pool="threads",
            concurrency=2,
            queues=["inference", "default"],
            perform_ping_check=False,
            loglevel="INFO",
            shutdown_timeout=10,
        )
        worker.__enter__()
        # The in-memory broker starts empty: queue again whatever the last run left unfinished.
        from bots.services import requeue_unfinished

        replies, deliveries = requeue_unfinished()
        if replies or deliveries:
            self.stdout.write(f"Re-queued {replies} pending replies and {deliveries} pending deliveries.")
        # Periodic jobs (settings.CELERY_BEAT_SCHEDULE: IMAP polling, the unfinished-work sweep)
        # from a beat thread in this process, as `celery worker -B` would run them.
        if settings.CELERY_BEAT_SCHEDULE:
            from celery.beat import EmbeddedService

            beat = EmbeddedService(app, thread=True, schedule_filename=str(settings.VAR_DIR / "celerybeat-schedule"))
            beat.start()
        return worker


def ws_max_size() -> int:
    """The largest websocket frame the server takes, in bytes: the longest a widget message can make
    (no stored message is longer than ``MAX_INBOUND_CHARS``; a character is at most 6 bytes however
    JSON writes it, 4 in UTF-8; the builder's preview takes 2,000 characters). uvicorn's default,
    16 MiB with 32 frames queued per socket, let one visitor make the server hold half a gigabyte per
    socket; a larger frame closes the socket (1009, message too big)."""
    from bots.services import MAX_INBOUND_CHARS
    from channels_app.widget.inbound import longest_frame

    return longest_frame(MAX_INBOUND_CHARS)
