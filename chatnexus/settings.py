"""ChatNexus settings: one flat module configured by environment variables.

With no environment at all it runs embedded: SQLite, in-process broker and
channel layer, the bundled model. Set ``DATABASE_URL`` and ``REDIS_URL`` for the
distributed shape (PostgreSQL, Redis, separate Celery workers). Every variable is
listed in the README.
"""
import logging
import math
import os
import re
import socket
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


# Typed readers: an unset or empty variable means the default (compose passes "" for what the
# operator left out: every variable read here goes through one of them); a value they cannot
# read stops the start, naming the variable.
def envstr(name, default):
    """The value without surrounding spaces; spaces only are empty, so the default (REDIS_URL=" "
    used to mean distributed, with " " for the broker's address)."""
    return os.environ.get(name, "").strip() or default


_SWITCH_WORDS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def envbool(name, default=False):
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value not in _SWITCH_WORDS:
        raise ImproperlyConfigured(f"{name}={os.environ[name]!r}: expected one of {', '.join(_SWITCH_WORDS)}")
    return _SWITCH_WORDS[value]


# Every number declares the range its meaning needs (``low`` required, ``high`` None: no bound): a
# 0 or a negative used to pass, then lock everyone out (a limit of 0 sign-ins), time out every send
# or expire every invitation at birth. Where the meaning sets no upper bound, days and seconds stop
# at a hundred years, so that date arithmetic and socket timeouts cannot overflow (99999999 days
# made the team page a 500).
_DAYS_MAX = 36500
_SECONDS_MAX = _DAYS_MAX * 24 * 3600


def envint(name, default, *, low, high=None):
    return _envnumber(name, default, int, "a whole number", low, high)


def envfloat(name, default, *, low, high=None):
    return _envnumber(name, default, float, "a number", low, high)


def _envnumber(name, default, read, what, low, high):
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        number = read(value)
    except ValueError:
        number = None
    finite = number is not None and (read is int or math.isfinite(number))  # float("nan") compares False
    if not (finite and low <= number and (high is None or number <= high)):
        span = f"{low} or more" if high is None else f"from {low} to {high}"
        raise ImproperlyConfigured(f"{name}={os.environ[name]!r}: expected {what}, {span}, e.g. {default}")
    return number


def envlist(name, default=""):
    value = os.environ.get(name, "").strip() or default
    return [item.strip() for item in value.split(",") if item.strip()]


def envchoice(name, default, choices):
    """One of ``choices``, the variable written in any case, returned as ``choices`` spell it."""
    value = os.environ.get(name, "").strip().upper()
    if not value:
        return default
    spelt = {choice.upper(): choice for choice in choices}
    if value not in spelt:
        raise ImproperlyConfigured(f"{name}={os.environ[name]!r}: expected one of {', '.join(choices)}")
    return spelt[value]


def envfernet(name, many=False):
    """A Fernet key (channels_app/crypto.py: secrets at rest), "" when unset; with ``many``, a list
    of them, comma-separated. One Fernet cannot take (a hex string, a password) stops the start,
    naming the variable (never the key): it used to pass, then fail every page that stores or reads
    a secret."""
    from cryptography.fernet import Fernet

    keys = envlist(name) if many else [envstr(name, "")]
    for number, key in enumerate(keys, 1):
        if not key:
            continue
        try:
            Fernet(key)
        except ValueError:  # not base64 (binascii.Error), or not 32 bytes
            which = f"key number {number} (comma-separated)" if many else "the value"
            raise ImproperlyConfigured(
                f"{name}: {which} is not a Fernet key (32 bytes in URL-safe base64, 44 characters); make one with: "
                'python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"') from None
    return keys if many else "".join(keys)


# DRF's throttle rate, "N/period": DRF reads the period by its first letter (s, m, h, d) and fails
# every request on a rate it cannot read, so the usual words are taken here and written its way.
_RATE = re.compile(r"(\d+)\s*/\s*(s|sec|second|m|min|minute|h|hr|hour|d|day)s?", re.IGNORECASE)


def envrate(name, default):
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    match = _RATE.fullmatch(value)
    if not match:
        raise ImproperlyConfigured(f"{name}={os.environ[name]!r}: expected requests per period, e.g. {default} "
                                   "(the period: s, m, h, d or second, minute, hour, day)")
    return f"{int(match[1])}/{match[2].lower()}"


# A host as URLs name one: letters (any script), digits, dots and hyphens, or an IP address in brackets.
_HOST = re.compile(r"[\w-]+(\.[\w-]+)*\.?")


def envurl(name, default, schemes, example, check=None):
    """A URL with one of ``schemes``, a host and, if written, a port from 1 to 65535; ``check(parts)``
    says what else its use needs ("" when nothing). Unset: ``default``. One that would pass here and
    fail later (REDIS_URL=localhost:6379 was read as an AMQP host, a login a 500; a port out of range
    a traceback) stops the start, naming the variable; a password in it is not shown."""
    value = envstr(name, default)
    if not value:
        return value
    try:
        parts = urlsplit(value)
        port = parts.port  # a port that is no number, or out of range: ValueError
    except ValueError as error:
        problem = f"not a URL ({error})"
    else:
        if parts.scheme not in schemes:
            problem = f"expected a URL beginning {' or '.join(f'{scheme}://' for scheme in schemes)}"
        elif not parts.hostname or not (":" in parts.hostname or _HOST.fullmatch(parts.hostname)):
            problem = f"expected a host after {parts.scheme}://"
        elif port == 0:
            problem = "port 0: expected a port from 1 to 65535"
        else:
            problem = check(parts) if check else ""
    if problem:
        raise ImproperlyConfigured(f"{name}={hide_password(value)!r}: {problem}, e.g. {example}")
    return value


def hide_password(url: str) -> str:
    """``redis://:secret@host/0`` -> ``redis://***@host/0``: all between the scheme and the host's "@"."""
    login, at, host = url.rpartition("@")
    if not at:
        return url
    scheme, sep, _ = login.partition("://")
    return f"{scheme}{sep}***@{host}" if sep else f"***@{host}"


def envdatabase(name, default):
    """dj_database_url's reading of a database URL; one it refuses stops the start naming the variable
    (its password hidden) instead of a traceback from inside the settings."""
    url = envstr(name, default)
    try:
        urlsplit(url).port  # dj_database_url says only "not a valid url" of a port out of range
        return dj_database_url.parse(url, conn_max_age=0)
    except ValueError as error:  # UnknownSchemeError ("localhost://"), ParseError
        raise ImproperlyConfigured(f"{name}={hide_password(url)!r}: {error} "
                                   "(e.g. postgres://user:password@host:5432/chatnexus)") from None


# ---------------------------------------------------------------------------
# Core

DEBUG = envbool("DEBUG", False)
VAR_DIR = Path(envstr("CHATNEXUS_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def _secret_key():
    # Embedded installs get a stable random key kept in var/; production sets SECRET_KEY. Spaces
    # only are unset; any other key is kept as written: stripped, one with spaces around it would
    # change, signing everyone out and (no CHATNEXUS_ENCRYPTION_KEY) leaving stored secrets unreadable.
    if envstr("SECRET_KEY", ""):
        return os.environ["SECRET_KEY"]
    path = VAR_DIR / "secret_key"
    if not path.exists():
        import secrets

        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
# Key for secrets stored in the database (Twilio tokens, SMTP passwords): a
# Fernet key, or derived from SECRET_KEY when unset.
ENCRYPTION_KEY = envfernet("CHATNEXUS_ENCRYPTION_KEY")
# earlier encryption keys, still read (channels_app/crypto.py: rotation); with SECRET_KEY_FALLBACKS
ENCRYPTION_OLD_KEYS = envfernet("CHATNEXUS_ENCRYPTION_OLD_KEYS", many=True)
SECRET_KEY_FALLBACKS = envlist("SECRET_KEY_FALLBACKS")


def _site_root(parts):
    """PUBLIC_URL is where the site's root answers: links are PUBLIC_URL + a path from the root
    (/accounts/login/), a password-reset mail keeps only its host, the widget only its origin."""
    if parts.path.strip("/") or parts.query or parts.fragment:
        return "expected the site's address without a path: the platform answers at the root of its host"
    return "expected no user or password in it" if parts.username is not None else ""


# The platform's public base URL (used in snippets, Twilio signature checks, emails).
PUBLIC_URL = envurl("PUBLIC_URL", "http://127.0.0.1:8000", ("http", "https"), "https://chat.example.com",
                    _site_root).rstrip("/")
# Unless set, the site answers on PUBLIC_URL's host besides this machine's own names, and trusts
# forms posted from its origin (behind a TLS proxy the app sees http, the browser sends https).
def public_host_and_origin(url: str) -> tuple[str, str]:
    """A public URL's host as ALLOWED_HOSTS names it (``[::1]``) and its origin as browsers send it
    (also ``manage.py serve``'s, when it takes the address it listens at)."""
    parts = urlsplit(url)
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else (parts.hostname or "")
    port = "" if parts.port in (None, {"http": 80, "https": 443}.get(parts.scheme)) else f":{parts.port}"
    return host, (f"{parts.scheme}://{host.lower()}{port}" if host else "")


_public_host, _public_origin = public_host_and_origin(PUBLIC_URL)
ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", ",".join(dict.fromkeys(["localhost", "127.0.0.1", "[::1]", _public_host])))
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", _public_origin)

# HTTPS: a site published over https keeps its session and CSRF cookies off plain HTTP.
# The redirect to https, HSTS and trusting the proxy's X-Forwarded-Proto are opt-in: each
# needs the TLS-terminating proxy in front to be set up for it (else loops or lock-outs).
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = envbool("SECURE_COOKIES", PUBLIC_URL.startswith("https://"))
SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 0, low=0, high=_SECONDS_MAX)
if envbool("TRUST_X_FORWARDED_PROTO", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",  # naturaltime: "now", "3 minutes ago" in the inbox
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI assets served locally (no CDN)
    "channels",
    "bots",
    "channels_app",
    "inference",
]

MIDDLEWARE = [
    "chatnexus.health.ProbeMiddleware",  # /healthz, /readyz: before host checks and HTTPS redirects
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "chatnexus.nul.RefuseNulMiddleware",  # ?q=a%00b: a 400, not a database error
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "bots.tenancy.OrganizationMiddleware",
]

ROOT_URLCONF = "chatnexus.urls"
ASGI_APPLICATION = "chatnexus.asgi.application"
WSGI_APPLICATION = "chatnexus.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "bots.tenancy.organization_context",
            ],
        },
    },
]

DATABASES = {
    "default": envdatabase("DATABASE_URL", f"sqlite:///{VAR_DIR / 'chatnexus.sqlite3'}")
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # WAL + a busy timeout let the embedded worker threads write beside the web process. Transactions
    # begin IMMEDIATE (taking the write lock, or waiting for it): a deferred one that read before
    # another thread committed could not write at all ("database is locked" at once, timeout or not).
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "init_command": "PRAGMA journal_mode=WAL;", "transaction_mode": "IMMEDIATE"}
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"  # each role's start page (bots.views.accounts.home)
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)  # whitenoise warns on every request without it
WHITENOISE_USE_FINDERS = True  # serve straight from static/ without collectstatic
# With DEBUG on, static files are looked up on every request: one edited while the server runs is
# served whole (off, whitenoise keeps each file's size from startup and cuts an edited one short).
WHITENOISE_AUTOREFRESH = DEBUG

# Customers' files (email attachments, WhatsApp media): served only through the inbox's
# member-only view, never from a public URL. Any Django storage backend can replace this
# one (e.g. django-storages' S3 with the same alias); web and workers must share it.
ATTACHMENTS_DIR = Path(envstr("CHATNEXUS_ATTACHMENTS_DIR", VAR_DIR / "attachments"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    "attachments": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(ATTACHMENTS_DIR), "file_permissions_mode": 0o640,
                    "directory_permissions_mode": 0o750},
    },
}

# Uploads and request bodies: webhooks and mail are bounded (see channels_app). At least 1 KiB:
# less refuses a sign-in form (0 or below refused every POST).
DATA_UPLOAD_MAX_MEMORY_SIZE = envint("DATA_UPLOAD_MAX_MEMORY_SIZE", 5 * 1024 * 1024, low=1024)
# Any HTTP request body over this is refused (413) before Django reads it (chatnexus/bodylimit.py):
# above the largest legitimate one, a widget upload of up to 25 MB.
CHATNEXUS_MAX_REQUEST_BYTES = envint("CHATNEXUS_MAX_REQUEST_BYTES", 32 * 1024 * 1024, low=1024)

# ---------------------------------------------------------------------------
# Redis: Celery broker and Channels layer (distributed), or in-process (embedded)


def _redis_database(parts):
    """redis-py, channels-redis and kombu read the path as the database's number."""
    return "" if re.fullmatch(r"/?|/\d+", parts.path) else "expected the database's number after the host (/0)"


# redis:// or rediss:// only: a Unix socket has no URL all three read (redis-py's unix:// is no
# transport Celery knows, kombu's redis+socket:// none redis-py does).
REDIS_URL = envurl("REDIS_URL", "", ("redis", "rediss"), "redis://127.0.0.1:6379/0", _redis_database)
EMBEDDED = not REDIS_URL

# TCP keepalive on the channel layer's connections (with the options the platform has): idle 30 s,
# then a probe every 5 s, 3 unanswered and the connection is dead (redis-py 8's defaults, set here
# for the older redis-py requirements.txt allows, which kept keepalive off). With no socket timeout
# (below) it is what notices a Redis gone without a word (its host down, a network cut): a socket's
# blocking pop then fails instead of waiting for good.
_TCP_KEEPALIVE = {getattr(socket, name): value for name, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 5),
                                                                    ("TCP_KEEPCNT", 3)) if hasattr(socket, name)}
# Seconds a live event's push (bots/events.py) may wait for the channel layer: a Redis that takes
# connections and never answers held the web request or reply task pushing it for good (the layer
# has no socket timeout). Past it the event is dropped and logged, as a failed push is.
CHATNEXUS_PUSH_TIMEOUT_S = envfloat("CHATNEXUS_PUSH_TIMEOUT_S", 5, low=0.1, high=60)

if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # No socket_timeout, as before redis-py 8: its default of 5 s aborts channels-redis' idle 5 s
            # blocking pop (BZPOPMIN) and kills every idle websocket (django/channels_redis#422), and any
            # timeout sends each command through asyncio.wait_for, which on Python 3.11 drops a cancel
            # landing as the write ends (CPython gh-86296): a closed socket's receive then never ended.
            # Sends are bounded by CHATNEXUS_PUSH_TIMEOUT_S instead, dead connections found by keepalive.
            "CONFIG": {
                "hosts": [{"address": REDIS_URL, "socket_timeout": None, "socket_keepalive": True,
                           "socket_keepalive_options": _TCP_KEEPALIVE}],
                "prefix": envstr("CHANNELS_PREFIX", "asgi"),
            },
        }
    }
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CELERY_BROKER_URL = "memory://"
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {"inference.tasks.*": {"queue": "inference"}}
# Late acks + requeue when a worker dies: a task interrupted mid-way runs again;
# tasks are idempotent, so running twice is safe.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Redis hands a task nobody acknowledged to another worker after this many seconds, and a task
# retried with a countdown is held unacknowledged until it is due: a countdown (store_whatsapp_media
# waits up to 16 min, deliver up to its lease) or a run longer than this would run it twice. A
# worker machine lost outright has its tasks handed on after this long; the sweep (below) re-queues
# unfinished replies and deliveries sooner.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": envint("CELERY_VISIBILITY_TIMEOUT", 3600, low=1,
                                                                  high=_SECONDS_MAX)}
CELERY_TASK_ALWAYS_EAGER = envbool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_BEAT_SCHEDULE = {}

# ---------------------------------------------------------------------------
# Inference

CHATNEXUS_TARGET = envstr("CHATNEXUS_TARGET", "bundled:smollm2-135m-instruct")
# suffix: drafts from the bot's earlier replies and the conversation; fastest measured on the
# replay workload and on fresh prompts (docs/drafting.md). A bot's own setting overrides it.
CHATNEXUS_DRAFTER = envstr("CHATNEXUS_DRAFTER", "suffix")
# Drafter specs bots may choose besides the built-in ones (suffix, lookup, suffix+lookup, none),
# comma-separated, e.g. "suffix:wide,model:/models/my-draft": a spec is loaded in every worker,
# so tenants choose among what the operator allows, never any path or model id.
CHATNEXUS_BOT_DRAFTERS = envlist("CHATNEXUS_BOT_DRAFTERS")
CHATNEXUS_DEVICE = envstr("CHATNEXUS_DEVICE", None)
# auto: the fastest weight precision that stays faithful to fp32 on this machine, measured
# once per machine and cached (inference/engine/precision_probe.py); or one of inference.engine's
# precisions. Read here, a misspelt one stops the start; the engine refused it only at the model's
# load (a worker without preload: at every reply).
CHATNEXUS_DTYPE = envchoice("CHATNEXUS_DTYPE", "auto", ("auto", "fp32", "bf16", "fp16", "int8", "int4", "int4a8"))
# CPU kernels, each auto (measured once per machine) or a switch: fp32 linears on oneDNN's packed
# kernel (packed.py), bf16 copies of quantised weights for prompts (precision.py). The engine reads
# the variables itself (it runs without Django too, and refuses a misspelt one there); read here
# as well so that one stops the start instead of meaning auto.
CHATNEXUS_FP32_KERNEL = envchoice("CHATNEXUS_FP32_KERNEL", "auto", ("auto", "packed", "stock", *_SWITCH_WORDS))
CHATNEXUS_DENSE_PREFILL = envchoice("CHATNEXUS_DENSE_PREFILL", "auto", ("auto", *_SWITCH_WORDS))
# Reuse the KV of recent prompts (a bot's system prompt, a conversation's earlier turns):
# faster replies, the same replies (whole prefill chunks, bit for bit: prefix_cache.py).
CHATNEXUS_PREFIX_CACHE = envbool("CHATNEXUS_PREFIX_CACHE", True)
# Its bound per worker process, in MiB (128-token chunks, each shared prefix stored once).
CHATNEXUS_PREFIX_CACHE_MB = envint("CHATNEXUS_PREFIX_CACHE_MB", 256, low=1)  # off: CHATNEXUS_PREFIX_CACHE=0
# Seconds after which a worker times its model's verify cost again and refines the curve its
# draft lengths are cut by (inference/engine/verify_cost.py; ~0.3-0.6 s on a 2-core CPU); 0: never.
CHATNEXUS_VERIFY_COST_REFRESH_S = envint("CHATNEXUS_VERIFY_COST_REFRESH_S", 600, low=0, high=_SECONDS_MAX)
# Upper bound on reply tokens whatever a bot asks for.
CHATNEXUS_MAX_REPLY_TOKENS = envint("CHATNEXUS_MAX_REPLY_TOKENS", 512, low=1)
CHATNEXUS_TASK_TIME_LIMIT = envint("CHATNEXUS_TASK_TIME_LIMIT", 300, low=1, high=_SECONDS_MAX)
# Seconds of that limit kept for storing and handing over a reply: the engine starts no forward
# later than CHATNEXUS_TASK_TIME_LIMIT - this after the reply task started (inference/tasks.py),
# in worker processes and in `serve`'s worker threads alike.
# Fractions of a second are taken. At or past the limit no reply could ever start: refused.
CHATNEXUS_TASK_TIME_MARGIN_S = envfloat("CHATNEXUS_TASK_TIME_MARGIN_S", 5, low=0)
if not CHATNEXUS_TASK_TIME_MARGIN_S < CHATNEXUS_TASK_TIME_LIMIT:
    raise ImproperlyConfigured(
        f"CHATNEXUS_TASK_TIME_MARGIN_S={CHATNEXUS_TASK_TIME_MARGIN_S:g} with CHATNEXUS_TASK_TIME_LIMIT="
        f"{CHATNEXUS_TASK_TIME_LIMIT}: the margin must be less than the limit, or no reply could ever start")

# ---------------------------------------------------------------------------
# Mail

EMAIL_BACKEND = envstr("EMAIL_BACKEND", None) or (
    "django.core.mail.backends.smtp.EmailBackend"
    if envstr("EMAIL_HOST", "")
    else "django.core.mail.backends.console.EmailBackend"
)
EMAIL_HOST = envstr("EMAIL_HOST", "localhost")
EMAIL_PORT = envint("EMAIL_PORT", 25, low=1, high=65535)
EMAIL_HOST_USER = envstr("EMAIL_HOST_USER", "")
# as written, spaces included: a password may begin or end with one (compose's "" is still empty)
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = envbool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = envstr("DEFAULT_FROM_EMAIL", "ChatNexus <noreply@localhost>")
# Date headers in TIME_ZONE (UTC): "+0000". Django's default writes "-0000", which RFC 5322
# defines as "the local time zone is unknown".
EMAIL_USE_LOCALTIME = True

# ---------------------------------------------------------------------------
# REST API

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "bots.api.auth.HashedTokenAuthentication",  # only tokens' digests are stored
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "bots.api.schema.ChatNexusSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_THROTTLE_CLASSES": ["rest_framework.throttling.UserRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"user": envrate("API_RATE", "600/minute")},
}
SPECTACULAR_SETTINGS = {
    "TITLE": "ChatNexus API",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": envchoice("LOG_LEVEL", "INFO", logging.getLevelNamesMapping())},
}

# A worker process loads the model when it starts, before it takes work (inference/tasks.py);
# a prefork child needs time to report ready then, instead of Celery's default 4 s.
CHATNEXUS_PRELOAD_MODEL = envbool("CHATNEXUS_PRELOAD_MODEL", False)
CELERY_WORKER_PROC_ALIVE_TIMEOUT = envint("CELERY_WORKER_PROC_ALIVE_TIMEOUT", 300, low=1, high=_SECONDS_MAX)

# ---------------------------------------------------------------------------
# WhatsApp (Twilio) and email channels

# Point the twilio client somewhere else than https://api.twilio.com (tests: a stub on loopback).
TWILIO_API_BASE_URL = envurl("TWILIO_API_BASE_URL", None, ("http", "https"), "https://api.twilio.com")
TWILIO_TIMEOUT_S = envint("TWILIO_TIMEOUT_S", 15, low=1, high=_SECONDS_MAX)
# A delivery claimed longer ago than this (its worker died mid-send) may be claimed again and
# re-sent; a task finding a younger claim checks back when it expires. Longer than any send.
CHATNEXUS_DELIVERY_LEASE_S = envint("CHATNEXUS_DELIVERY_LEASE_S", 300, low=1, high=_SECONDS_MAX)
# Redis hands a reply task still running (Celery kills it 30 s past the limit: inference/tasks.py) or a
# delivery waiting out another worker's lease (channels_app/tasks.py) to a second worker once the
# visibility timeout passes: it must outlast both (README). The in-memory broker has none.
_VISIBILITY_NEEDED = max(CHATNEXUS_TASK_TIME_LIMIT + 30, CHATNEXUS_DELIVERY_LEASE_S + 1)
if REDIS_URL and CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"] <= _VISIBILITY_NEEDED:
    raise ImproperlyConfigured(
        f"CELERY_VISIBILITY_TIMEOUT={CELERY_BROKER_TRANSPORT_OPTIONS['visibility_timeout']} with "
        f"CHATNEXUS_TASK_TIME_LIMIT={CHATNEXUS_TASK_TIME_LIMIT} and CHATNEXUS_DELIVERY_LEASE_S="
        f"{CHATNEXUS_DELIVERY_LEASE_S}: Redis would give a reply task still running (up to the limit + 30 s) or a "
        f"delivery waiting out its lease to a second worker; set it above {_VISIBILITY_NEEDED} (default 3600)")

# The API channel's reply webhook may call addresses of this server's own network (loopback,
# private, link-local) only when this is on: a backend on the same LAN (bots/api/webhook.py).
CHATNEXUS_WEBHOOK_ALLOW_PRIVATE = envbool("CHATNEXUS_WEBHOOK_ALLOW_PRIVATE", False)
# ... and the most seconds one call to it may take in all (its answer's body, a slow trickle, included).
CHATNEXUS_WEBHOOK_TIMEOUT_S = envint("CHATNEXUS_WEBHOOK_TIMEOUT_S", 20, low=1, high=_SECONDS_MAX)
# The same for knowledge fetched from a web page (the builder's "fetch a web page": bots/webpages.py).
CHATNEXUS_FETCH_ALLOW_PRIVATE = envbool("CHATNEXUS_FETCH_ALLOW_PRIVATE", False)
# ... and for an email channel's SMTP and IMAP servers (a mail server on the LAN: set it).
CHATNEXUS_MAIL_ALLOW_PRIVATE = envbool("CHATNEXUS_MAIL_ALLOW_PRIVATE", False)
# ... and the most seconds reading one page may take in all (redirects and a slow trickle included).
CHATNEXUS_FETCH_TIMEOUT_S = envint("CHATNEXUS_FETCH_TIMEOUT_S", 20, low=1, high=_SECONDS_MAX)
# A widget socket must send its hello frame (visitor token) within this many seconds.
CHATNEXUS_WIDGET_HELLO_TIMEOUT_S = envint("CHATNEXUS_WIDGET_HELLO_TIMEOUT_S", 10, low=1, high=_SECONDS_MAX)

# Sign-in, sign-up and password reset limits (bots/views/accounts.py; counters on the cache)
CHATNEXUS_AUTH_POSTS_PER_IP = envint("CHATNEXUS_AUTH_POSTS_PER_IP", 30, low=1)  # per form, address and minute
CHATNEXUS_LOGIN_FAILURES_PER_ACCOUNT = envint("CHATNEXUS_LOGIN_FAILURES_PER_ACCOUNT", 10, low=1)  # per 15 minutes
CHATNEXUS_INVITE_DAYS = envint("CHATNEXUS_INVITE_DAYS", 14, low=1, high=_DAYS_MAX)  # how long an invitation works
CHATNEXUS_PASSWORD_RESETS_PER_EMAIL = envint("CHATNEXUS_PASSWORD_RESETS_PER_EMAIL", 3, low=1)  # per address an hour
# Largest inbound email accepted (webhook body or IMAP message); larger webhooks get 413.
CHATNEXUS_EMAIL_MAX_BYTES = envint("CHATNEXUS_EMAIL_MAX_BYTES", 4 * 1024 * 1024, low=1024)
# Default cap on auto-replies to one sender per day (a channel setting overrides it, within the
# same range: channels_app/forms.py).
CHATNEXUS_EMAIL_MAX_REPLIES_PER_DAY = envint("CHATNEXUS_EMAIL_MAX_REPLIES_PER_DAY", 5, low=0, high=1000)
CHATNEXUS_SMTP_TIMEOUT_S = envint("CHATNEXUS_SMTP_TIMEOUT_S", 20, low=1, high=_SECONDS_MAX)
# The most seconds one connection to a channel's SMTP server (a reply, the test email) or IMAP
# server (a poll, within its mailbox lock's 300 s) may last in all; the timeout above is per read.
CHATNEXUS_SMTP_DEADLINE_S = envint("CHATNEXUS_SMTP_DEADLINE_S", 120, low=1, high=_SECONDS_MAX)
# under the IMAP poll's 300 s mailbox lock (channels_app/email/imap.py), or two polls could read one mailbox
CHATNEXUS_IMAP_DEADLINE_S = envint("CHATNEXUS_IMAP_DEADLINE_S", 240, low=1, high=299)
# Every CHATNEXUS_SWEEP_SECONDS (0: never), re-queue replies and deliveries older than
# CHATNEXUS_SWEEP_AFTER_S that are still unfinished: tasks a restarted broker lost.
CHATNEXUS_SWEEP_SECONDS = envint("CHATNEXUS_SWEEP_SECONDS", 300, low=0, high=_SECONDS_MAX)
CHATNEXUS_SWEEP_AFTER_S = envint("CHATNEXUS_SWEEP_AFTER_S", 900, low=0, high=_SECONDS_MAX)
if CHATNEXUS_SWEEP_SECONDS > 0:
    CELERY_BEAT_SCHEDULE["sweep-unfinished"] = {
        "task": "bots.tasks.sweep_unfinished",
        "schedule": CHATNEXUS_SWEEP_SECONDS,
    }
# Activity log entries (Team page) are kept this many days; 0: for good.
CHATNEXUS_ACTIVITY_RETENTION_DAYS = envint("CHATNEXUS_ACTIVITY_RETENTION_DAYS", 365, low=0, high=_DAYS_MAX)
# The hourly job below deletes organisation by organisation, this many rows (conversations,
# messages, activity log entries) per transaction: a big backlog holds no lock for long.
CHATNEXUS_PURGE_BATCH = envint("CHATNEXUS_PURGE_BATCH", 500, low=1)
# Conversations past their organisation's retention period (set on the team page) go hourly,
# and activity log entries past CHATNEXUS_ACTIVITY_RETENTION_DAYS.
CELERY_BEAT_SCHEDULE["purge-expired-conversations"] = {
    "task": "bots.tasks.purge_expired_conversations",
    "schedule": 3600,
}
CHATNEXUS_IMAP_POLL_SECONDS = envint("CHATNEXUS_IMAP_POLL_SECONDS", 60, low=0, high=_SECONDS_MAX)
if CHATNEXUS_IMAP_POLL_SECONDS > 0:
    CELERY_BEAT_SCHEDULE["poll-imap-mailboxes"] = {
        "task": "channels_app.email.imap.poll_imap",
        "schedule": CHATNEXUS_IMAP_POLL_SECONDS,
    }
