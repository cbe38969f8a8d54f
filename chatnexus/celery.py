"""The Celery app.

Two queues: ``inference`` (the GPU/CPU box that runs the engine) and ``default``
(delivery through channels, mail, periodic jobs). Run a worker with

    celery -A chatnexus worker -Q default            # CPU boxes
    celery -A chatnexus worker -Q inference -c 1     # the model box

In the embedded mode (no REDIS_URL) the broker is in-process memory and
``manage.py serve`` runs the worker threads inside the web process.
"""
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatnexus.settings")

app = Celery("chatnexus")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
