"""Probes for load balancers, orchestrators and the compose file; public, and they say
nothing an outsider could use.

- ``/healthz``: the web process answers (liveness; touches nothing else).
- ``/readyz``: it can serve — the database answers a query and the cache (Redis in the
  distributed shape: rate limits, widget events) stores and returns a value. 200 with
  ``{"status": "ok", ...}``, else 503 naming the part that failed (no error details: they
  go to the log). In the embedded ``manage.py serve``, which answers pages while it loads the
  model in the background, also ``"model"``: ``"loading"`` (status ``"loading"``, still 200: the
  pages answer and messages wait for the model), ``"ok"``, or ``"failing"`` (503; the console
  says why).

``ProbeMiddleware``, first in ``MIDDLEWARE``, answers them before host validation and
HTTPS redirects: probes come from inside the network, by IP or ``localhost``, over HTTP.
"""
import logging
import secrets

from django.core.cache import cache
from django.db import connection
from django.http import HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

log = logging.getLogger(__name__)


@never_cache
@require_GET
def healthz(request):
    return HttpResponse("ok\n", content_type="text/plain; charset=utf-8")


def _database():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def _cache():
    key, value = f"cn:readyz:{secrets.token_hex(4)}", secrets.token_hex(8)
    cache.set(key, value, timeout=10)
    if cache.get(key) != value:
        raise RuntimeError("the cache did not return what was stored")
    cache.delete(key)


CHECKS = {"database": _database, "cache": _cache}

# Where this process's model load is ("loading", "ok", "failing"); None: it loads none before
# the first message (separate workers, ``serve --no-preload``). Set by ``manage.py serve``.
model_state = None


def report_model(state: str) -> None:
    global model_state
    model_state = state


@never_cache
@require_GET
def readyz(request):
    report = {}
    for name, check in CHECKS.items():
        try:
            check()
            report[name] = "ok"
        except Exception:  # any failure of a dependency means "not ready"; the log has why
            log.warning("readyz: %s check failed", name, exc_info=True)
            report[name] = "failing"
    if model_state is not None:
        report["model"] = model_state
    failing = "failing" in report.values()
    status = "failing" if failing else "ok" if all(state == "ok" for state in report.values()) else "loading"
    return JsonResponse({"status": status, **report}, status=503 if failing else 200)


class ProbeMiddleware:
    PROBES = {"/healthz": healthz, "/readyz": readyz}

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        probe = self.PROBES.get(request.path_info)
        return probe(request) if probe else self.get_response(request)
