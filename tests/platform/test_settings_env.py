"""Settings read from the environment, each case in a fresh process with the environment a
deployment sets: malformed numbers, booleans, API rates and log levels stop the start naming the
variable, an empty value means the default (for every variable the README documents), PUBLIC_URL's
host is served without listing it twice, and Redis does not hand a delayed task to a second worker
while the first still waits to run it."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import dj_database_url
import pytest

ROOT = Path(__file__).resolve().parents[2]

# What one process makes of its environment: a few settings, whether a request for PUBLIC_URL's
# host passes the host check, and whether a POST from PUBLIC_URL's origin passes the CSRF check
# as a TLS proxy forwards it (plain http to the app, the browser's https Origin).
PROBE = """
import json
import logging
import django
django.setup()
from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.middleware.csrf import CsrfViewMiddleware
from django.test import RequestFactory
from rest_framework.throttling import UserRateThrottle
from urllib.parse import urlsplit

public = urlsplit(settings.PUBLIC_URL.lower())  # as a browser writes the host and the origin
def host_ok(host):
    try:
        RequestFactory().get("/", HTTP_HOST=host).get_host()
        return True
    except DisallowedHost:
        return False
secret = "a" * 32
post = RequestFactory().post("/", HTTP_HOST=public.netloc, HTTP_ORIGIN=f"{public.scheme}://{public.netloc}",
                             HTTP_X_CSRFTOKEN=secret)
post.COOKIES[settings.CSRF_COOKIE_NAME] = secret
refused = CsrfViewMiddleware(lambda request: None).process_view(post, lambda request: None, (), {})
print(json.dumps({
    "ALLOWED_HOSTS": settings.ALLOWED_HOSTS,
    "CSRF_TRUSTED_ORIGINS": settings.CSRF_TRUSTED_ORIGINS,
    "SECURE_HSTS_SECONDS": settings.SECURE_HSTS_SECONDS,
    "CHATNEXUS_PREFIX_CACHE_MB": settings.CHATNEXUS_PREFIX_CACHE_MB,
    "SECURE_COOKIES": settings.SESSION_COOKIE_SECURE,
    "public_host_ok": host_ok(public.netloc),
    "public_origin_post_ok": refused is None,
    "api_rate": UserRateThrottle().parse_rate(settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["user"]),
    "root_level": logging.getLogger().level,
    "preload_model": getattr(settings, "CHATNEXUS_PRELOAD_MODEL", None),
}))
"""


def documented_variables():
    """The variables of the README's Configuration table, in its order."""
    section = (ROOT / "README.md").read_text().split("## Configuration (environment variables)")[1].split("\n#")[0]
    rows = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    return [name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]*)`", row)]


def environment(tmp_path, **env):
    """``env`` over a clean base: none of the README's variables set but a secret key and a var folder."""
    drop = {"DJANGO_SETTINGS_MODULE", *documented_variables()}
    base = {k: v for k, v in os.environ.items() if k not in drop}
    return {**base, "DJANGO_SETTINGS_MODULE": "chatnexus.settings", "SECRET_KEY": "x" * 60,
            "CHATNEXUS_VAR_DIR": str(tmp_path / "var"), **env}


def run_in(tmp_path, code, **env):
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=environment(tmp_path, **env), capture_output=True,
                          text=True, timeout=120)


def settings_in(tmp_path, **env):
    """The probe's result in a fresh process on chatnexus.settings with ``env`` over a clean base."""
    return run_in(tmp_path, PROBE, **env)


def values(tmp_path, **env):
    done = settings_in(tmp_path, **env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def refusal(tmp_path, **env):
    done = settings_in(tmp_path, **env)
    assert done.returncode != 0, done.stdout
    return done.stderr.strip().splitlines()[-1]  # the exception's line


# ---------------------------------------------------------------------------
# Numbers and booleans


@pytest.mark.parametrize("name, value", [("CHATNEXUS_PREFIX_CACHE_MB", "256M"), ("SECURE_HSTS_SECONDS", "1 year")])
def test_it_refuses_a_malformed_number_naming_the_variable(tmp_path, name, value):
    line = refusal(tmp_path, **{name: value})
    assert line.startswith("django.core.exceptions.ImproperlyConfigured:"), line
    assert name in line and repr(value) in line


def test_it_takes_an_empty_number_for_its_default(tmp_path):
    got = values(tmp_path, SECURE_HSTS_SECONDS="", CHATNEXUS_PREFIX_CACHE_MB=" ")
    assert got["SECURE_HSTS_SECONDS"] == 0 and got["CHATNEXUS_PREFIX_CACHE_MB"] == 256
    assert values(tmp_path, CHATNEXUS_PREFIX_CACHE_MB=" 64 ")["CHATNEXUS_PREFIX_CACHE_MB"] == 64


@pytest.mark.parametrize("value, meaning", [("1", True), ("TRUE", True), ("Yes", True), ("on", True),
                                            ("0", False), ("false", False), ("NO", False), ("Off", False)])
def test_it_reads_the_usual_words_for_a_boolean(tmp_path, value, meaning):
    assert values(tmp_path, PUBLIC_URL="http://127.0.0.1:8000", SECURE_COOKIES=value)["SECURE_COOKIES"] is meaning
    assert values(tmp_path, PUBLIC_URL="https://chat.example.com", SECURE_COOKIES=value)["SECURE_COOKIES"] is meaning


def test_it_refuses_a_misspelt_boolean_naming_the_variable(tmp_path):
    line = refusal(tmp_path, PUBLIC_URL="https://chat.example.com", SECURE_COOKIES="ture")
    assert line.startswith("django.core.exceptions.ImproperlyConfigured:"), line
    assert "SECURE_COOKIES" in line and "'ture'" in line


def test_it_takes_an_empty_boolean_for_its_default(tmp_path):
    assert values(tmp_path, PUBLIC_URL="https://chat.example.com", SECURE_COOKIES="")["SECURE_COOKIES"] is True
    assert values(tmp_path, PUBLIC_URL="http://127.0.0.1:8000", SECURE_COOKIES="")["SECURE_COOKIES"] is False


# An empty variable means its default: compose passes "" for every variable the operator left out.
# Every setting (not only the ones below) must then be what it is with the variable unset.
EVERY_SETTING = """
import django, json
django.setup()
from django.conf import settings
print(json.dumps({name: repr(getattr(settings, name)) for name in dir(settings) if name.isupper()}))
"""


@pytest.mark.parametrize("blank", ["", "  "])
def test_an_empty_variable_means_its_default_for_every_variable_documented(tmp_path, blank):
    """Spaces only are empty too (REDIS_URL=" " meant distributed, with Redis at " "), but for
    EMAIL_HOST_PASSWORD: a password is kept as written."""
    # both processes have a key and a folder of their own (empty, these are a generated key kept in ./var)
    kept = ("SECRET_KEY", "CHATNEXUS_VAR_DIR", *(("EMAIL_HOST_PASSWORD",) if blank else ()))
    names = [name for name in documented_variables() if name not in kept]
    assert {"API_RATE", "LOG_LEVEL", "EMAIL_BACKEND", "PUBLIC_URL", "DATABASE_URL", "REDIS_URL"} <= set(names)  # read
    unset, empty = (run_in(tmp_path, EVERY_SETTING, **env) for env in ({}, dict.fromkeys(names, blank)))
    assert unset.returncode == 0, unset.stderr
    assert empty.returncode == 0, empty.stderr
    unset, empty = (json.loads(done.stdout.strip().splitlines()[-1]) for done in (unset, empty))
    assert {name: (unset[name], empty.get(name)) for name in unset if empty.get(name) != unset[name]} == {}


def secrets_in(tmp_path, **env):
    code = PROBE.split("print(json.dumps(")[0] + "print(json.dumps([settings.SECRET_KEY, settings.EMAIL_HOST_PASSWORD]))"
    done = run_in(tmp_path, code, **env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_secret_key_of_spaces_only_means_the_generated_one(tmp_path):
    generated = secrets_in(tmp_path, SECRET_KEY="")[0]
    assert len(generated) > 50 and secrets_in(tmp_path, SECRET_KEY="  ")[0] == generated


def test_a_secret_key_and_the_mail_password_are_kept_as_written_spaces_included(tmp_path):
    """Stripped, a key with a space at either end would change: everyone signed out, and the secrets
    stored under a key derived from it unreadable. A password may begin or end with a space."""
    key = " k" * 30 + " "
    assert secrets_in(tmp_path, SECRET_KEY=key, EMAIL_HOST_PASSWORD=" pass word ") == [key, " pass word "]


# ---------------------------------------------------------------------------
# The REST API's rate, the log level


@pytest.mark.parametrize("value", ["lots", "600", "600/fortnight", "ten/minute", "600/minute/2", "-5/minute"])
def test_it_refuses_an_unreadable_api_rate_naming_the_variable(tmp_path, value):
    """DRF read these only at the first API request: a 500 for every request, `check` all clear."""
    line = refusal(tmp_path, API_RATE=value)
    assert line.startswith("django.core.exceptions.ImproperlyConfigured:"), line
    assert "API_RATE" in line and repr(value) in line


def test_manage_py_check_stops_on_an_unreadable_api_rate(tmp_path):
    done = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=environment(tmp_path, API_RATE="lots"),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "no issues" not in done.stdout
    assert done.stderr.startswith("ChatNexus: API_RATE='lots'"), done.stderr  # one line, no traceback (manage.py)


@pytest.mark.parametrize("value, parsed", [("", (600, 60)), ("100/s", (100, 1)), ("30/Minute", (30, 60)),
                                           ("1000/hours", (1000, 3600)), (" 20 / day ", (20, 86400)),
                                           ("5/min", (5, 60)), ("2/sec", (2, 1))])
def test_it_reads_an_api_rate_in_the_words_people_write(tmp_path, value, parsed):
    assert tuple(values(tmp_path, API_RATE=value)["api_rate"]) == parsed  # as DRF's throttle reads it


@pytest.mark.parametrize("value", ["verbose", "INF", "10"])
def test_it_refuses_an_unknown_log_level_naming_the_variable(tmp_path, value):
    line = refusal(tmp_path, LOG_LEVEL=value)
    assert line.startswith("django.core.exceptions.ImproperlyConfigured:"), line
    assert "LOG_LEVEL" in line and repr(value) in line and "WARNING" in line


@pytest.mark.parametrize("value, level", [("", 20), ("debug", 10), ("Warning", 30), ("ERROR", 40), (" critical ", 50)])
def test_it_reads_a_log_level_in_any_case(tmp_path, value, level):
    assert values(tmp_path, LOG_LEVEL=value)["root_level"] == level


# ---------------------------------------------------------------------------
# The engine's precision and CPU kernels: choices. Misspelt, they passed `check`; then the kernels
# meant auto, and the precision failed the model's load (a worker without preload: every reply).


@pytest.mark.parametrize("name, value, accepted", [
    ("CHATNEXUS_DTYPE", "int3", "auto, fp32, bf16, fp16, int8, int4, int4a8"),
    ("CHATNEXUS_FP32_KERNEL", "packd", "auto, packed, stock, 1, true, yes, on, 0, false, no, off"),
    ("CHATNEXUS_DENSE_PREFILL", "maybe", "auto, 1, true, yes, on, 0, false, no, off")])
def test_manage_py_check_stops_on_an_unknown_engine_choice_naming_the_variable_and_the_choices(tmp_path, name, value,
                                                                                                accepted):
    done = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=environment(tmp_path, **{name: value}),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "no issues" not in done.stdout
    assert done.stderr == f"ChatNexus: {name}={value!r}: expected one of {accepted}\n", done.stderr


def test_it_reads_the_engine_choices_in_any_case(tmp_path):
    code = PROBE.split("print(json.dumps(")[0] + (
        "print(json.dumps([settings.CHATNEXUS_DTYPE, settings.CHATNEXUS_FP32_KERNEL, settings.CHATNEXUS_DENSE_PREFILL]))")
    done = run_in(tmp_path, code, CHATNEXUS_DTYPE=" INT4a8 ", CHATNEXUS_FP32_KERNEL="Stock", CHATNEXUS_DENSE_PREFILL="OFF")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ["int4a8", "stock", "off"]  # as the engine spells them


# ---------------------------------------------------------------------------
# The worker's model preload: a switch like the others

# What a Celery worker process does when it starts (worker_process_init), with a model that
# cannot load: loading it is tried, and said, only when the switch is on.
WORKER_START = """
import django
django.setup()
from celery.signals import worker_process_init
import inference.tasks
worker_process_init.send(sender=None)
print("started")
"""


@pytest.mark.parametrize("value, loads", [("1", True), ("true", True), ("YES", True), ("on", True),
                                          ("0", False), ("off", False), ("", False)])
def test_a_worker_loads_the_model_at_start_when_the_switch_is_on(tmp_path, value, loads):
    done = run_in(tmp_path, WORKER_START, CHATNEXUS_PRELOAD_MODEL=value, CHATNEXUS_TARGET=str(tmp_path / "missing.gguf"))
    assert done.returncode == 0 and "started" in done.stdout, done.stderr
    assert ("cannot load the model" in done.stderr and "missing.gguf" in done.stderr) is loads, done.stderr
    assert values(tmp_path, CHATNEXUS_PRELOAD_MODEL=value)["preload_model"] is loads


def test_it_refuses_a_misspelt_preload_switch_naming_the_variable(tmp_path):
    line = refusal(tmp_path, CHATNEXUS_PRELOAD_MODEL="always")
    assert line.startswith("django.core.exceptions.ImproperlyConfigured:"), line
    assert "CHATNEXUS_PRELOAD_MODEL" in line and "'always'" in line


# ---------------------------------------------------------------------------
# Hosts and origins


@pytest.mark.parametrize("unset", [{}, {"ALLOWED_HOSTS": "", "CSRF_TRUSTED_ORIGINS": ""}])  # "": compose's default
def test_it_serves_public_url_when_hosts_and_origins_are_not_set(tmp_path, unset):
    got = values(tmp_path, PUBLIC_URL="https://chat.example.com", **unset)
    assert got["public_host_ok"] and got["public_origin_post_ok"]
    assert set(got["ALLOWED_HOSTS"]) == {"localhost", "127.0.0.1", "[::1]", "chat.example.com"}
    assert got["CSRF_TRUSTED_ORIGINS"] == ["https://chat.example.com"]


def test_it_keeps_public_urls_port_in_the_origin_only(tmp_path):
    got = values(tmp_path, PUBLIC_URL="https://Chat.Example.com:8443/")
    assert got["public_host_ok"] and got["public_origin_post_ok"]
    assert "chat.example.com" in got["ALLOWED_HOSTS"]
    assert got["CSRF_TRUSTED_ORIGINS"] == ["https://chat.example.com:8443"]


def test_a_default_port_written_in_public_url_is_left_out_of_the_origin_as_browsers_do(tmp_path):
    got = values(tmp_path, PUBLIC_URL="https://chat.example.com:443")
    assert got["CSRF_TRUSTED_ORIGINS"] == ["https://chat.example.com"]  # the Origin header a browser sends there


def test_it_keeps_hosts_and_origins_that_are_set(tmp_path):
    got = values(tmp_path, PUBLIC_URL="https://chat.example.com", ALLOWED_HOSTS="app.internal",
                 CSRF_TRUSTED_ORIGINS="https://app.internal")
    assert got["ALLOWED_HOSTS"] == ["app.internal"] and got["CSRF_TRUSTED_ORIGINS"] == ["https://app.internal"]
    assert not got["public_host_ok"] and not got["public_origin_post_ok"]  # the control: as set, nothing added


# ---------------------------------------------------------------------------
# Celery on Redis


def test_the_broker_waits_longer_than_any_task_is_delayed_or_runs(settings):
    """Redis hands an unacknowledged task to another worker after the visibility timeout; a task
    retried with a countdown (or running) longer than that would run twice."""
    from bots.tasks import notify_agents_of_handoff, notify_team_of_message
    from channels_app.tasks import MEDIA_ATTEMPTS
    from inference.tasks import generate_reply

    visibility = settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
    longest = max(
        30 * 2 ** (MEDIA_ATTEMPTS - 1),  # store_whatsapp_media's last countdown
        300,  # deliver's backoff cap (channels_app.tasks.deliver)
        settings.CHATNEXUS_DELIVERY_LEASE_S + 1,  # deliver waiting for another worker's claim
        *(getattr(task, "retry_backoff_max", 600)  # 600: Celery's default
          for task in (notify_agents_of_handoff, notify_team_of_message, generate_reply)),
        generate_reply.time_limit,
    )
    assert visibility >= 2 * longest, (visibility, longest)


# ---------------------------------------------------------------------------
# The suite's own subprocesses


def test_service_subprocesses_get_the_database_password(settings, monkeypatch):
    """A server whose PostgreSQL asks for a password (Debian's scram-sha-256 on 127.0.0.1): the
    worker and ASGI server subprocesses must connect as the suite does."""
    from tests.conftest import service_env

    db = settings.DATABASES["default"]
    monkeypatch.setitem(db, "PASSWORD", "p@ss:w/rd")
    url = dj_database_url.parse(service_env()["DATABASE_URL"])
    assert (url["USER"], url["PASSWORD"], url["HOST"], int(url["PORT"]), url["NAME"]) == (
        db["USER"] or "postgres", "p@ss:w/rd", db["HOST"] or "127.0.0.1", int(db["PORT"] or 5432), db["NAME"])


@pytest.mark.parametrize("limit, margin, named", [
    ("5", "5", "CHATNEXUS_TASK_TIME_MARGIN_S"), ("5", "30", "CHATNEXUS_TASK_TIME_MARGIN_S"),
    ("0", "0", "CHATNEXUS_TASK_TIME_LIMIT"),  # a limit of 0 is refused by its own range (at least 1)
    ("300", "-1", "CHATNEXUS_TASK_TIME_MARGIN_S"), ("300", "five", "CHATNEXUS_TASK_TIME_MARGIN_S")])
def test_it_refuses_a_time_margin_that_leaves_no_time_to_reply(tmp_path, limit, margin, named):
    """A margin at or past the limit put every reply's deadline before its start: the bot never answered."""
    line = refusal(tmp_path, CHATNEXUS_TASK_TIME_LIMIT=limit, CHATNEXUS_TASK_TIME_MARGIN_S=margin)
    assert line.startswith("django.core.exceptions.ImproperlyConfigured:"), line
    assert named in line


def test_it_takes_a_time_margin_in_fractions_of_a_second(tmp_path):
    code = PROBE.split("print(json.dumps(")[0] + "print(settings.CHATNEXUS_TASK_TIME_MARGIN_S)"
    done = run_in(tmp_path, code, CHATNEXUS_TASK_TIME_LIMIT="5", CHATNEXUS_TASK_TIME_MARGIN_S="4.5")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "4.5"


# ---------------------------------------------------------------------------
# Encryption keys: Fernet keys, or the start stops (one Fernet cannot take was accepted, then every
# page storing or reading a secret was a 500)

MAKE_A_KEY = re.compile(r'python -c "(from cryptography\.fernet import Fernet; print\(Fernet\.generate_key\(\)\.decode\(\)\))"')
HEX_KEY = "4f3c2b1a" * 8  # what `openssl rand -hex 32` gives: 32 bytes, but not in base64


@pytest.mark.parametrize("value", [HEX_KEY, "correct horse battery staple", "c2hvcnQ="])
def test_it_refuses_an_encryption_key_that_is_no_fernet_key_naming_the_variable_not_the_key(tmp_path, value):
    line = refusal(tmp_path, CHATNEXUS_ENCRYPTION_KEY=value)
    assert line.startswith("django.core.exceptions.ImproperlyConfigured: CHATNEXUS_ENCRYPTION_KEY:"), line
    assert value not in line and MAKE_A_KEY.search(line)


def test_it_refuses_a_malformed_earlier_encryption_key_saying_which(tmp_path):
    from cryptography.fernet import Fernet

    line = refusal(tmp_path, CHATNEXUS_ENCRYPTION_OLD_KEYS=f"{Fernet.generate_key().decode()}, {HEX_KEY}")
    assert line.startswith("django.core.exceptions.ImproperlyConfigured: CHATNEXUS_ENCRYPTION_OLD_KEYS:"), line
    assert "key number 2" in line and HEX_KEY not in line


def test_it_takes_the_keys_made_as_the_refusal_and_the_readme_say(tmp_path):
    make = MAKE_A_KEY.search(refusal(tmp_path, CHATNEXUS_ENCRYPTION_KEY=HEX_KEY)).group(1)
    assert MAKE_A_KEY.search((ROOT / "README.md").read_text()).group(1) == make
    key, old = (subprocess.run([sys.executable, "-c", make], capture_output=True, text=True, check=True).stdout.strip()
                for _ in range(2))
    code = PROBE.split("print(json.dumps(")[0] + "print(json.dumps([settings.ENCRYPTION_KEY, settings.ENCRYPTION_OLD_KEYS]))"
    done = run_in(tmp_path, code, CHATNEXUS_ENCRYPTION_KEY=key, CHATNEXUS_ENCRYPTION_OLD_KEYS=f" {old} ,")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [key, [old]]
