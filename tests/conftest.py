"""Shared fixtures: real services for the suite.

- ``smtp_server``: an aiosmtpd server on loopback that keeps what it receives.
- ``celery_workers``: real Celery workers (subprocesses) on Redis and the test
  database — ``inference`` (prefork, 1 child, model preloaded) and ``default``.
- ``live_server_url``: a real ASGI server (uvicorn subprocess) for HTTP + websockets.
- ``browser``: Debian's Chromium driven by Playwright.

Tests that use the subprocesses must commit their data: use ``transactional_db``.
"""
import os
import re
import socket
import subprocess
import sys
import time
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path
from urllib.parse import quote

import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening_socket():
    """A socket listening on loopback, on a port the system chose: a server handed it (a subprocess's
    ``pass_fds``) serves the port with no moment between choosing and binding it, where ``free_port``'s
    port may be taken by any other bind (a stub server, Chromium) before the server binds it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


def wait_for(predicate, timeout=60.0, interval=0.1, what="condition"):
    """Poll ``predicate`` until truthy; return its value or fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def clear_cache():
    """Empty the cache, and nothing else: ``cache.clear()`` is FLUSHDB on the Redis database the Celery
    broker (its queued tasks and bindings) and the channel layer (its groups) share with it. The cache's
    keys are ``<KEY_PREFIX>:<version>:<key>`` (tests/settings.py gives each run its prefix)."""
    import redis
    from django.conf import settings
    from django.core.cache import cache

    client = redis.Redis.from_url(settings.CACHES["default"]["LOCATION"])
    prefix = re.sub(r"([*?\[\]\\])", r"\\\1", cache.key_prefix)  # the prefix as a pattern matches only itself
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)


def as_worker(function, *args, **kwargs):
    """``function(*args, **kwargs)`` as the worker calls it, and what it returns: from a thread without
    Playwright's event loop (``events.push`` uses async_to_sync), on its own database connection, closed after."""
    import threading

    from django.db import connection

    results, errors = [], []

    def run():
        try:
            results.append(function(*args, **kwargs))
        except Exception as error:  # noqa: BLE001 - raised again below, in the test's thread
            errors.append(error)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return results[0]


# ---------------------------------------------------------------------------
# SMTP


class SMTPSink:
    """Collects messages delivered to the aiosmtpd server."""

    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        msg = message_from_bytes(envelope.content, policy=default_policy)
        self.messages.append({"from": envelope.mail_from, "to": list(envelope.rcpt_tos), "message": msg})
        return "250 OK"


@pytest.fixture(scope="session")
def smtp_server():
    from aiosmtpd.controller import Controller

    sink = SMTPSink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port())
    controller.start()
    sink.host, sink.port = controller.hostname, controller.port
    yield sink
    controller.stop()


@pytest.fixture
def mailbox(smtp_server):
    """The SMTP sink, emptied for this test."""
    smtp_server.messages.clear()
    return smtp_server


@pytest.fixture(scope="session", autouse=True)
def _flush_outlasts_deadlocks():
    """A transactional test's teardown empties the database (one TRUNCATE of every table) while a
    real worker may still be finishing the test's last task (a reply the bot was asked for). When
    the two lock tables in opposite orders, PostgreSQL breaks the deadlock by cancelling one; if
    it cancels the TRUNCATE, the worker's transaction is over a moment later: empty it again."""
    from django.test import TransactionTestCase

    original = TransactionTestCase._fixture_teardown

    def teardown(self):
        for attempt in range(10):
            try:
                return original(self)
            except Exception as error:  # flush's CommandError, caused by the OperationalError
                if "deadlock detected" not in f"{error} {error.__cause__}" or attempt == 9:
                    raise
                time.sleep(0.5)

    TransactionTestCase._fixture_teardown = teardown
    yield
    TransactionTestCase._fixture_teardown = original


# ---------------------------------------------------------------------------
# Subprocess services on the test database


def service_env(smtp_server=None, **extra):
    """Environment for a subprocess that must see the test database and Redis."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    login = quote(db["USER"] or "postgres", safe="") + (f":{quote(db['PASSWORD'], safe='')}" if db["PASSWORD"] else "")
    env["DATABASE_URL"] = f"postgres://{login}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("CHATNEXUS_DELIVERY_LEASE_S", "8")  # a dead worker's claim expires within a test's patience
    env.setdefault("CHATNEXUS_WIDGET_HELLO_TIMEOUT_S", "3")  # a silent widget socket is closed within a test's patience
    env.setdefault("CHATNEXUS_WEBHOOK_ALLOW_PRIVATE", "1")  # the API channel's webhook receiver is on loopback
    if smtp_server is not None:
        env["EMAIL_HOST"] = smtp_server.host
        env["EMAIL_PORT"] = str(smtp_server.port)
        env["EMAIL_BACKEND"] = "django.core.mail.backends.smtp.EmailBackend"
    env.update(extra)
    return env


def embedded_env(tmp_path, **extra):
    """Environment for `manage.py` on the embedded default, as scripts/run.sh runs it: SQLite
    under ``tmp_path``, no Redis (in-memory broker and channel layer), IMAP polling off."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(DJANGO_SETTINGS_MODULE="chatnexus.settings", CHATNEXUS_VAR_DIR=str(tmp_path / "var"),
               CHATNEXUS_IMAP_POLL_SECONDS="0", **extra)
    return env


def manage(env, *args, timeout=120):
    """Run ``manage.py *args`` in ``env``; its output, or the test fails with it."""
    done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


PRELOADED = "model preloaded in"  # a worker process's line once its model is loaded (inference/tasks.py)


class Service:
    def __init__(self, name, args, env, ready_marker, log_dir, pass_fds=()):
        self.name = name
        self.log_path = Path(log_dir) / f"{name}.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
                                     pass_fds=pass_fds)
        self.ready_marker = ready_marker

    def output(self):
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout=120):
        def ready():
            if self.proc.poll() is not None:
                pytest.fail(f"{self.name} exited early:\n{self.output()[-4000:]}")
            return self.ready_marker in self.output()

        wait_for(ready, timeout=timeout, what=f"{self.name} to start")

    def wait_model(self, said=PRELOADED, processes=1, timeout=600):
        """Wait until the log says the model is loaded, ``processes`` times (a line per worker process). A
        worker's "ready." and serve's "ChatNexus is up" come before the load: a first start on a busy
        machine (the precision probe, the kernel build) takes minutes, which the first reply's own wait
        would pay. A model that cannot load fails the test at once, with the log."""
        def loaded():
            output = self.output()
            if "cannot load the model" in output or self.proc.poll() is not None:
                pytest.fail(f"{self.name} did not load the model:\n{output[-4000:]}")
            return output.count(said) >= processes

        wait_for(loaded, timeout=timeout, interval=0.5, what=f"{self.name} to load the model")

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
        self.log.close()


def start_worker(name, queues, log_dir, env, pool="prefork", concurrency=1):
    args = [
        sys.executable, "-m", "celery", "-A", "chatnexus", "worker", "-n", f"{name}@%h", "-Q", queues,
        "-P", pool, "-c", str(concurrency), "--without-heartbeat", "--without-gossip", "--without-mingle",
        "-l", "info",
    ]  # fmt: skip
    service = Service(name, args, env, "ready.", log_dir)
    return service


@pytest.fixture(scope="session")
def _redis_clean():
    """Start from an empty Redis database: no tasks left over from an earlier run."""
    import redis

    url = os.environ["REDIS_URL"]
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture(scope="session")
def celery_workers(django_db_setup, django_db_blocker, smtp_server, _redis_clean, tmp_path_factory):
    """Real Celery workers: ``inference`` (its model loaded before the first test) and ``default`` (delivery, mail)."""
    log_dir = tmp_path_factory.mktemp("workers")
    env = service_env(smtp_server, CHATNEXUS_PRELOAD_MODEL="1")
    inference = start_worker("inference", "inference", log_dir, env)
    default = start_worker("default", "default", log_dir, service_env(smtp_server), pool="threads", concurrency=4)
    try:
        inference.wait_ready(timeout=240)
        default.wait_ready()
        inference.wait_model()
        yield {"inference": inference, "default": default}
    finally:
        inference.stop()
        default.stop()


@pytest.fixture(scope="session")
def live_server_url(django_db_setup, smtp_server, _redis_clean, tmp_path_factory):
    """A real ASGI server (uvicorn) on the test database: HTTP and websockets."""
    # uvicorn serves this socket (--fd): the port is the server's from the start. (With --port, a port taken
    # before uvicorn bound it went unnoticed: it says "Application startup complete" before it binds.)
    sock = listening_socket()
    port = sock.getsockname()[1]
    log_dir = tmp_path_factory.mktemp("asgi")
    args = [sys.executable, "-m", "uvicorn", "chatnexus.asgi:application", "--fd", str(sock.fileno())]
    with sock:  # the server's copy stays open
        server = Service("asgi", args, service_env(smtp_server, PUBLIC_URL=f"http://127.0.0.1:{port}"),
                         "Application startup complete", log_dir, pass_fds=(sock.fileno(),))
    try:
        server.wait_ready()
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


# ---------------------------------------------------------------------------
# Browser


CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


# Module scope, not session: Playwright's sync API keeps an event loop running in the
# test thread, and while it lives, async_to_sync() in later (non-browser) tests fails.
@pytest.fixture(scope="module")
def _playwright():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def chromium(_playwright):
    browser = _playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture
def page(chromium):
    context = chromium.new_context()
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()


# ---------------------------------------------------------------------------
# Tenants: named users. alice (owner) and bob (agent) are in Acme; charlie owns Globex.
# Nobody in Acme may see anything of Globex, and the other way round.


@pytest.fixture
def acme(db):
    from bots.models import Organization

    return Organization.objects.create(name="Acme", slug="acme")


@pytest.fixture
def globex(db):
    from bots.models import Organization

    return Organization.objects.create(name="Globex", slug="globex")


def make_member(org, username, role):
    from django.contrib.auth import get_user_model

    from bots.models import Membership

    user = get_user_model().objects.create_user(username, f"{username}@example.com", "correct-horse-battery")
    Membership.objects.create(user=user, organization=org, role=role)
    return user


@pytest.fixture
def alice(acme):
    return make_member(acme, "alice", "owner")  # Acme's owner: everything in Acme


@pytest.fixture
def bob(acme):
    return make_member(acme, "bob", "agent")  # Acme's agent: Acme's inbox only


@pytest.fixture
def charlie(globex):
    return make_member(globex, "charlie", "owner")  # Globex's owner: nothing of Acme


@pytest.fixture
def acme_bot(acme):
    from bots.models import Bot, KnowledgeItem

    bot = Bot.objects.create(organization=acme, name="Ava", company="Acme Bikes", role="support assistant")
    KnowledgeItem.objects.create(
        bot=bot, kind="faq", title="What are your opening hours?", body="We are open Monday to Friday, 9am to 6pm."
    )
    bot.publish()
    return bot


@pytest.fixture
def globex_bot(globex):
    from bots.models import Bot, KnowledgeItem

    bot = Bot.objects.create(organization=globex, name="Gus", company="Globex Dental")
    KnowledgeItem.objects.create(bot=bot, kind="faq", title="Do you take new patients?", body="Globex secret: yes, on Tuesdays.")
    bot.publish()
    return bot


@pytest.fixture
def fresh_channel_layer():
    """A new channel-layer instance per test: each test runs its own event loop, and
    channels-redis keeps per-instance receive state that must not outlive its loop."""
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()
