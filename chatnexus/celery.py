"""The Celery app.

Two queues: ``inference`` (the GPU/CPU box that runs the engine) and ``default``
(delivery through channels, mail, periodic jobs). Run a worker with

    celery -A chatnexus worker -Q default            # CPU boxes
    celery -A chatnexus worker -Q inference -c 1     # the model box

In the embedded mode (no REDIS_URL) the broker is in-process memory and
``manage.py serve`` runs the worker threads inside the web process.
"""
import os
import sys

from celery import Celery
from celery.signals import worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatnexus.settings")

app = Celery("chatnexus")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_configure.connect
def _settings_in_one_line(sender, **kwargs):
    """`celery worker` and `beat` load the settings here, while reading their command line: a value
    the settings refuse is said in one line, as manage.py says it, not in a traceback through Celery."""
    from chatnexus.checks import settings_or_exit

    settings_or_exit()


@worker_init.connect
def _refuse_what_checks_refuse(sender=None, **kwargs):
    """A worker runs chatnexus/checks.py as `manage.py check` does (Celery runs Django's checks but
    ignores what they find): an error stops it, one line each, exit status 2. A worker of the
    inference queue runs the model, so a device this machine lacks is an error there."""
    if sender is None:
        return
    from chatnexus import checks

    queues = sender.app.amqp.queues.consume_from or sender.app.amqp.queues
    errors = [problem for problem in checks.problems(runs_engine="inference" in queues) if problem.is_serious()]
    for error in errors:
        sys.stderr.write(f"ChatNexus: {error.msg}\n")
    if errors:
        sys.exit(2)
