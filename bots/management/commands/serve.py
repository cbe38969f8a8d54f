"""``manage.py serve``: the whole platform in one process (the embedded default).

Starts Celery workers for both queues as threads inside this process (in-memory
broker), then the ASGI server (uvicorn) for pages, API and websockets. With
``REDIS_URL`` set, run the workers separately instead (see docker-compose.yml);
this command then serves the web app only.

The port opens at once: the model loads in a thread meanwhile (minutes on a first start: the
GGUF conversion, the precision probe). Pages, sign-in, the builder and the inbox answer, and
deliveries and mail go out; messages that arrive are stored and queued, and the workers take the
model's queue only once it is loaded, so that waiting for the load spends none of a reply's time
limit (``inference.tasks``: it counts from the task's start). ``/readyz`` says ``"model":
"loading"`` until then (chatnexus/health.py).
"""
import logging
import os
import sys
import threading
import time
import traceback

from django.conf import settings
from django.core.management.base import BaseCommand

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
        workers, loading = None, None
        if settings.EMBEDDED:
            workers, worker = self.start_embedded_workers(preload=not no_preload)
        self.stdout.write(self.style.SUCCESS(f"ChatNexus is up: {address}/"))
        if workers is not None and not no_preload:
            loading = self.load_in_background(worker.consumer)
        code, failure = 1, None  # how uvicorn ended (a port taken: its SystemExit says the status)
        try:
            uvicorn.run("chatnexus.asgi:application", host=host, port=port, log_level="info",
                        ws_max_size=ws_max_size())
            code = 0  # stopped (Ctrl-C, SIGTERM): uvicorn returns
        except SystemExit as stopped:
            code = stopped.code if isinstance(stopped.code, int) else 1
            raise
        except BaseException as error:
            failure = error
            raise
        finally:
            if workers is not None:
                workers.__exit__(None, None, None)
            if loading is not None and loading.is_alive():
                # ended while the model loads: the interpreter's exit would stop the load thread inside
                # torch's C++ code ("terminate called without an active exception", SIGABRT and a core
                # dump). Nothing of it needs keeping: the model cache is renamed into place whole.
                if failure is not None:  # a fault of ours: its traceback, which os._exit would drop
                    traceback.print_exception(failure)
                elif code == 0:
                    self.stdout.write("Stopped while the model was loading.")
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)

    def start_embedded_workers(self, preload):
        """The worker threads (the context that stops them, and the worker), the re-queued work and beat."""
        from celery.contrib.testing.worker import start_worker

        from chatnexus.celery import app

        workers = start_worker(
            app,
            pool="threads",
            concurrency=2,
            # preloading, the model's queue waits for the model (load_model)
            queues=["default"] if preload else ["inference", "default"],
            perform_ping_check=False,
            loglevel="INFO",
            shutdown_timeout=10,
        )
        worker = workers.__enter__()
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
        return workers, worker

    def load_in_background(self, consumer):
        from chatnexus import health

        health.report_model("loading")  # before the port opens: /readyz's first answer says so
        self.stdout.write("Loading the model; the pages answer meanwhile, and messages wait for it. The first start\n"
                          "on a machine converts the bundled GGUF (~15 s) and measures which weight precision is\n"
                          "fastest and faithful here (about a minute, once; cached).")
        thread = threading.Thread(target=self.load_model, args=(consumer,), name="load-model", daemon=True)
        thread.start()
        return thread

    def load_model(self, consumer):
        """Load the model while the pages answer, then let the workers take the model's queue (the
        messages that came meanwhile first). A model that cannot load is said in the console and
        /readyz; its queue is taken all the same, each reply then failing with the reason, stored,
        and the customer handed to the team (as a worker process that could not preload does)."""
        from chatnexus import health
        from inference import runtime
        from inference.engine.errors import EngineError

        started = time.monotonic()
        try:
            engine = runtime.preload()
        except Exception as e:  # noqa: BLE001 - whatever stops the load, the console and /readyz say so
            health.report_model("failing")
            if not isinstance(e, EngineError):  # not a model we refuse but a fault of ours: its traceback
                log.exception("loading the model failed")
            # a missing or unreadable model: said in words, no traceback
            self.stderr.write(f"cannot load the model ({settings.CHATNEXUS_TARGET}): {e}\n"
                              "Set CHATNEXUS_TARGET to a GGUF file, a model folder or a Hugging Face id "
                              "(unset: the bundled model), then start serve again. Until then the pages answer, "
                              "and each message goes to the team with the bot's handoff message.")
        else:
            health.report_model("ok")
            self.stdout.write(self.style.SUCCESS(
                f"Model ready in {time.monotonic() - started:.0f} s: {engine.target_spec}, "
                f"{engine.precision.name} weights on {engine.device}. Messages are answered now."))
        # as Celery's add_consumer command does: the worker's own loop adds the queue
        consumer.call_soon(consumer.add_task_queue, "inference")


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
