"""Show a secret once, after POST/redirect/GET: the invitation links of the Team page
(views/org.py) and the API token (views/accounts.py), of which only a digest is stored.

The POST that makes the secret ``stash``es it and redirects to a page whose URL names it by a
random key (``?shown=<key>``); that page's GET ``pop``s it and shows it with ``no_store``.
Reloading the page, or going back to it, repeats the GET, which finds nothing: not the POST,
which would make a new secret and kill the one just copied.

The secret waits in the session — stored server-side, in the database (Django's default
SESSION_ENGINE) — not in the URL (browser history, proxy logs), and encrypted there as channel
credentials are (``channels_app/crypto.py``, its keys and rotation): a redirect never followed
leaves the session row for its 14 days, and a copy of ``django_session`` must not hold a working
link or token where only digests are stored. One key per POST, so two tabs do not swap secrets;
one not shown within ``MAX_AGE_S`` (a redirect not followed, a tab closed mid-way) is dropped, from
the session too, by the next ``stash`` or ``pop`` of its kind.
"""
import json
import secrets
import time

from channels_app import crypto

MAX_AGE_S = 10 * 60  # a redirect not followed by then is dropped
URL_PARAMETER = "shown"  # ?shown=<key> names what the page shows


def stash(request, kind, value):
    """Keep ``value`` (JSON-serialisable) in the session until the GET that shows it, under the
    session key ``kind`` ({key: {"value": value as JSON, encrypted, "at": epoch seconds}}); returns
    the key for the URL. Stale ones of the same kind are dropped on the way."""
    now, key = time.time(), secrets.token_urlsafe(9)
    waiting = _fresh(request.session.get(kind, {}), now)
    waiting[key] = {"value": crypto.encrypt(json.dumps(value)), "at": now}
    request.session[kind] = waiting
    return key


def pop(request, kind):
    """The value ``stash`` left under the request's ``?shown=`` key, taken out of the session (so
    shown once), or None: none there, older than ``MAX_AGE_S``, or no longer decrypting (written
    under a key since dropped from the rotation: nothing to show, the user makes a new one)."""
    if kind not in request.session:
        return None
    now, waiting = time.time(), request.session[kind]
    entry = waiting.pop(request.GET.get(URL_PARAMETER, ""), None)
    waiting = _fresh(waiting, now)  # stale ones leave the database too
    if waiting:
        request.session[kind] = waiting
    else:
        del request.session[kind]
    if entry is None or now - entry["at"] >= MAX_AGE_S or not isinstance(entry["value"], str):
        return None  # (not a str: stashed in clear before the encryption, so not shown)
    try:
        return json.loads(crypto.decrypt(entry["value"]))
    except ValueError:
        return None


def _fresh(waiting, now):
    """``waiting`` without the entries older than ``MAX_AGE_S``."""
    return {k: v for k, v in waiting.items() if now - v["at"] < MAX_AGE_S}


def no_store(response):
    """``response``, the one page that shows the secret, marked not to be kept by the browser
    (its cache, back/forward) or a proxy."""
    response["Cache-Control"] = "no-store"
    return response
