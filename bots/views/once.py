"""Show a secret once, after POST/redirect/GET: the invitation links of the Team page
(views/org.py) and the API token (views/accounts.py), of which only a digest is stored.

The POST that makes the secret ``stash``es it and redirects to a page whose URL names it by a
random key (``?shown=<key>``); that page's GET ``pop``s it and shows it with ``no_store``.
Reloading the page, or going back to it, repeats the GET, which finds nothing: not the POST,
which would make a new secret and kill the one just copied.

The secret waits in the session — stored server-side, in the database (Django's default
SESSION_ENGINE) — not in the URL (browser history, proxy logs). One key per POST, so two tabs do
not swap secrets; one not shown within ``MAX_AGE_S`` (a redirect not followed, a tab closed
mid-way) is dropped.
"""
import secrets
import time

MAX_AGE_S = 10 * 60  # a redirect not followed by then is dropped
URL_PARAMETER = "shown"  # ?shown=<key> names what the page shows


def stash(request, kind, value):
    """Keep ``value`` (JSON-serialisable) in the session until the GET that shows it, under the
    session key ``kind`` ({key: {"value": value, "at": epoch seconds}}); returns the key for the URL.
    Stale ones of the same kind are dropped on the way."""
    now, key = time.time(), secrets.token_urlsafe(9)
    waiting = {k: v for k, v in request.session.get(kind, {}).items() if now - v["at"] < MAX_AGE_S}
    waiting[key] = {"value": value, "at": now}
    request.session[kind] = waiting
    return key


def pop(request, kind):
    """The value ``stash`` left under the request's ``?shown=`` key, taken out of the session (so
    shown once), or None: none there, or older than ``MAX_AGE_S``."""
    if kind not in request.session:
        return None
    now, waiting = time.time(), request.session[kind]
    entry = waiting.pop(request.GET.get(URL_PARAMETER, ""), None)
    waiting = {k: v for k, v in waiting.items() if now - v["at"] < MAX_AGE_S}  # stale ones leave the database too
    if waiting:
        request.session[kind] = waiting
    else:
        del request.session[kind]
    return entry["value"] if entry is not None and now - entry["at"] < MAX_AGE_S else None


def no_store(response):
    """``response``, the one page that shows the secret, marked not to be kept by the browser
    (its cache, back/forward) or a proxy."""
    response["Cache-Control"] = "no-store"
    return response
