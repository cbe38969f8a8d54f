"""Every number the settings read has a range, and every URL the form its users need: a value out of
it stops the start naming the variable. Before, they passed and broke later: a limit of 0 sign-ins
locked everyone out, 99999999 invitation days made the team page a 500, a timeout of 0 failed every
send, REDIS_URL=localhost:6379 was an AMQP host and a login a 500, PUBLIC_URL without https:// left
the site refusing its own name. The boundaries (0 where it means off) are still taken.

All cases run in one process, which imports chatnexus.settings afresh for each environment: the way
a process reads them (tests/platform/test_ops_settings_start.py: what manage.py and Celery say).
"""
import json
import subprocess
import sys

import pytest

from tests.platform.test_settings_env import ROOT, environment

# name -> (values refused, values taken); a dict is an environment of several variables
NUMBERS = {
    "CHATNEXUS_MAX_REPLY_TOKENS": (["0", "-1"], ["1"]),  # 0: every reply was the fallback
    "CHATNEXUS_AUTH_POSTS_PER_IP": (["0", "-5"], ["1"]),  # 0 or less: everyone locked out (429)
    "CHATNEXUS_LOGIN_FAILURES_PER_ACCOUNT": (["0"], ["1"]),
    "CHATNEXUS_PASSWORD_RESETS_PER_EMAIL": (["0"], ["1"]),
    "CHATNEXUS_INVITE_DAYS": (["0", "-1", "99999999"], ["1", "36500"]),  # expired at birth; a 500 (OverflowError)
    "CHATNEXUS_ACTIVITY_RETENTION_DAYS": (["-1", "99999999"], ["0", "36500"]),  # 0: kept for good
    "CHATNEXUS_WIDGET_HELLO_TIMEOUT_S": (["0"], ["1"]),  # 0: every widget socket closed
    "CHATNEXUS_VERIFY_COST_REFRESH_S": (["-1"], ["0"]),  # -1: timed again before every reply; 0: once
    "CHATNEXUS_DELIVERY_LEASE_S": (["0"], ["1"]),  # 0: sweeps re-sent messages being sent
    "CHATNEXUS_MAX_REQUEST_BYTES": (["0", "-1", "1023"], ["1024"]),  # every POST refused
    "DATA_UPLOAD_MAX_MEMORY_SIZE": (["0", "-1"], ["1024"]),
    "CHATNEXUS_EMAIL_MAX_BYTES": (["0"], ["1024"]),
    "TWILIO_TIMEOUT_S": (["0"], ["1"]),  # a timeout of 0: every send failed
    "CHATNEXUS_WEBHOOK_TIMEOUT_S": (["0"], ["1"]),
    "CHATNEXUS_FETCH_TIMEOUT_S": (["0"], ["1"]),
    "CHATNEXUS_PUSH_TIMEOUT_S": (["0", "0.09", "61", "nan"], ["0.1", "60"]),  # 0: every live event dropped
    "CHATNEXUS_SMTP_TIMEOUT_S": (["0"], ["1"]),
    "CHATNEXUS_SMTP_DEADLINE_S": (["0"], ["1"]),
    "CHATNEXUS_IMAP_DEADLINE_S": (["0", "300"], ["1", "299"]),  # under the poll's 300 s mailbox lock
    "CHATNEXUS_SWEEP_SECONDS": (["-1"], ["0"]),  # 0: never
    "CHATNEXUS_SWEEP_AFTER_S": (["-1"], ["0"]),
    "CHATNEXUS_IMAP_POLL_SECONDS": (["-1"], ["0"]),  # 0: never
    "CHATNEXUS_PURGE_BATCH": (["0"], ["1"]),
    "CHATNEXUS_PREFIX_CACHE_MB": (["0"], ["1"]),  # off is CHATNEXUS_PREFIX_CACHE=0
    "CHATNEXUS_EMAIL_MAX_REPLIES_PER_DAY": (["-1", "1001"], ["0", "1000"]),  # the channel form's range
    "EMAIL_PORT": (["0", "65536"], ["1", "65535"]),
    "SECURE_HSTS_SECONDS": (["-1"], ["0"]),  # 0: off
    "CELERY_WORKER_PROC_ALIVE_TIMEOUT": (["0"], ["1"]),
    "CELERY_VISIBILITY_TIMEOUT": (["0"], ["1"]),  # embedded: no broker to outlast
    "CHATNEXUS_TASK_TIME_LIMIT": (["0", "-1", "99999999999"],
                                  [{"CHATNEXUS_TASK_TIME_LIMIT": "1", "CHATNEXUS_TASK_TIME_MARGIN_S": "0.5"}]),
}

REDIS = "redis://127.0.0.1:6379/0"  # only read here: nothing connects
# Redis hands an unacknowledged task to a second worker after the visibility timeout: it must
# outlast a reply task (killed at the limit + 30 s) and a delivery waiting out its lease
CROSS_CHECKS = {
    "CELERY_VISIBILITY_TIMEOUT against the tasks": (
        [{"REDIS_URL": REDIS, "CELERY_VISIBILITY_TIMEOUT": "330"},
         {"REDIS_URL": REDIS, "CHATNEXUS_DELIVERY_LEASE_S": "4000"},
         {"REDIS_URL": REDIS, "CHATNEXUS_TASK_TIME_LIMIT": "3600"}],
        [{"REDIS_URL": REDIS, "CELERY_VISIBILITY_TIMEOUT": "331"},
         {"REDIS_URL": REDIS, "CHATNEXUS_TASK_TIME_LIMIT": "3600", "CELERY_VISIBILITY_TIMEOUT": "7200"}]),
}

URLS = {
    "REDIS_URL": (["localhost:6379", "127.0.0.1:6379", "redis://", "redis://h:99999/0", "redis://h:6379/x",
                   "unix:///tmp/redis.sock", "http://h:6379/0"],
                  [REDIS, "rediss://:pw@h:6380/1", "redis://h"]),
    "PUBLIC_URL": (["chat.example.com", "https://example.com:99999", "https://example.com:0", "ftp://example.com",
                    "https:///accounts/", "https://chat.example.com/support", "https://chat.example.com/?a=1",
                    "https://user:pw@chat.example.com", "https://chat example.com"],
                   ["https://chat.example.com", "http://127.0.0.1:8000/", "https://[::1]:8443",
                    "https://Chat.Example.com:8443/"]),
    "DATABASE_URL": (["localhost:5432", "postgres://u:secret@h:99999/db", "postgres://u:secret@h:port/db"],
                     ["postgres://u:secret@h:5432/db", "sqlite:////tmp/chatnexus-test.sqlite3"]),
    "TWILIO_API_BASE_URL": (["api.twilio.com", "https://api.twilio.com:123456"], ["http://127.0.0.1:8080/proxy"]),
}

# For each environment: import chatnexus.settings afresh, and what it refused (None: nothing).
READ_EACH = """
import importlib, json, os, sys
from django.core.exceptions import ImproperlyConfigured
base = dict(os.environ)
said = []
for env in json.loads(sys.stdin.read()):
    os.environ.clear()
    os.environ.update(base, **env)
    sys.modules.pop("chatnexus.settings", None)
    try:
        importlib.import_module("chatnexus.settings")
        said.append(None)
    except ImproperlyConfigured as error:
        said.append(str(error))
    except Exception as error:  # what a start said before: a traceback ending so
        said.append(f"{type(error).__name__}: {error}")
print(json.dumps(said))
"""


def environments(name, values):
    return [value if isinstance(value, dict) else {name: value} for value in values]


TABLE = {**NUMBERS, **CROSS_CHECKS, **URLS}


@pytest.fixture(scope="module")
def said(tmp_path_factory):
    """What the settings said of an environment (None: nothing), read for every case in one process."""
    envs = [env for name, (refused, taken) in TABLE.items() for env in environments(name, refused + taken)]
    done = subprocess.run([sys.executable, "-c", READ_EACH], cwd=ROOT, input=json.dumps(envs), capture_output=True,
                          text=True, timeout=120, env=environment(tmp_path_factory.mktemp("settings")))
    assert done.returncode == 0, done.stderr
    messages = dict(zip(map(json.dumps, envs), json.loads(done.stdout.strip().splitlines()[-1])))
    return lambda env: messages[json.dumps(env)]


@pytest.mark.parametrize("name", TABLE)
def test_a_value_out_of_its_range_stops_the_start_naming_the_variable(said, name):
    refused, taken = TABLE[name]
    variable = name.split()[0]
    unnamed = {json.dumps(env): said(env) for env in environments(name, refused)
               if not (said(env) or "").startswith(f"{variable}=")}
    assert unnamed == {}  # each refused, naming the variable
    assert not any("secret" in said(env) or "pw@" in said(env) for env in environments(name, refused))  # no passwords
    # the control: the range's ends (0 where it means off) are taken
    assert {json.dumps(env): said(env) for env in environments(name, taken) if said(env) is not None} == {}
