"""``manage.py serve``: the whole platform in one process (the embedded default).

Starts Celery workers for both queues as threads inside this process (in-memory
broker), then the ASGI server (uvicorn) for pages, API and websockets. With
``REDIS_URL`` set, run the workers separately instead (see docker-compose.yml);
this command then serves the web app only.
"""
import logging
import os
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

        address = own_address(host, port)
        if not os.environ.get("PUBLIC_URL", "").strip():  # before the workers: their threads read it too
            adopt_public_url(address)
            self.stdout.write(f"PUBLIC_URL is unset: snippets and links use {address} (set it to the address "
                              "visitors and Twilio reach this server at).")
        workers = None
        if settings.EMBEDDED:
            workers = self.start_embedded_workers(preload=not no_preload)
        self.stdout.write(self.style.SUCCESS(f"ChatNexus is up: {address}/"))
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


def own_address(host: str, port: int) -> str:
    """The address a browser on this machine opens to reach this server: one listening on every
    interface (``0.0.0.0``, ``::``) is reached through loopback; an IPv6 address goes in brackets."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host).lower()
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}" + ("" if port == 80 else f":{port}")


def adopt_public_url(address: str):
    """PUBLIC_URL unset: the platform's address is where this server listens, not settings.py's
    default port 8000 (``serve --port 8123`` gave widget snippets, the Try page and mail links that
    reached nothing). Unless they are set themselves, the host and origin settings.py derives from
    PUBLIC_URL follow it, as had it been set to this address."""
    from chatnexus.settings import public_host_and_origin

    settings.PUBLIC_URL = address
    host, origin = public_host_and_origin(address)
    if host and not os.environ.get("ALLOWED_HOSTS", "").strip() and host not in settings.ALLOWED_HOSTS:
        settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, host]
    if not os.environ.get("CSRF_TRUSTED_ORIGINS", "").strip():
        settings.CSRF_TRUSTED_ORIGINS = [origin]


def ws_max_size() -> int:
    """The largest websocket frame the server takes, in bytes: the longest a widget message can make
    (no stored message is longer than ``MAX_INBOUND_CHARS``; a character is at most 6 bytes however
    JSON writes it, 4 in UTF-8; the builder's preview takes 2,000 characters). uvicorn's default,
    16 MiB with 32 frames queued per socket, let one visitor make the server hold half a gigabyte per
    socket; a larger frame closes the socket (1009, message too big)."""
    from bots.services import MAX_INBOUND_CHARS
    from channels_app.widget.inbound import longest_frame

    return longest_frame(MAX_INBOUND_CHARS)
