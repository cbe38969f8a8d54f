"""Settings for the test suite: the distributed shape on real PostgreSQL and Redis.

``DATABASE_URL`` / ``REDIS_URL`` may point elsewhere; by default the machine's
local services. pytest-django creates ``test_<name>`` and the suite's worker and
ASGI server subprocesses are pointed at that same test database.
"""
import os
import tempfile
import uuid

# the password scripts/services.sh gives the postgres role where PostgreSQL asks for one on
# 127.0.0.1 (Debian's default, scram-sha-256); ignored where it trusts loopback
os.environ.setdefault("DATABASE_URL", "postgres://postgres:postgres@127.0.0.1:5432/chatnexus")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/9")
os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production-0123456789abcdef")
os.environ.setdefault("PUBLIC_URL", "http://127.0.0.1:8000")
os.environ.setdefault("CHATNEXUS_MAX_REPLY_TOKENS", "48")
# the suite signs in often from 127.0.0.1; tests of the limit set it low themselves
os.environ.setdefault("CHATNEXUS_AUTH_POSTS_PER_IP", "100000")
# customers' files of this run (the worker and server subprocesses inherit the variable)
os.environ.setdefault("CHATNEXUS_ATTACHMENTS_DIR", tempfile.mkdtemp(prefix="chatnexus-test-attachments-"))
# fp32 on CPU: the engine's packed oneDNN kernel always, rather than where a timing says it pays
# (packed.wanted), so every run tests the same path; tests/engine/test_packed_fp32.py covers both
os.environ.setdefault("CHATNEXUS_FP32_KERNEL", "packed")
# the SMTP sink and the IMAP stub listen on loopback (the guard itself is tested with it off)
os.environ.setdefault("CHATNEXUS_MAIL_ALLOW_PRIVATE", "1")
# Playwright's sync API keeps an event loop in the test thread; Django's guard would
# then refuse ORM calls made by the test itself between browser steps.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

from chatnexus.settings import *  # noqa: E402,F401,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast test users
# Counters (rate limits) of this run only: Redis outlives runs, and a limit per hour must not
# see the last run's sign-ins. The subprocesses inherit the variable, so they share the prefix.
CACHES["default"]["KEY_PREFIX"] = os.environ.setdefault("CHATNEXUS_TEST_CACHE_PREFIX", f"run-{uuid.uuid4().hex[:12]}")
