"""What a start says of a value it refuses, in a fresh process as an operator starts it: one line
naming the variable, exit status 2 (manage.py, Celery's worker and beat), not a 55-line traceback
with the reason on its last line; and values that name a plug-in (a drafter, a device, a mail
backend) are read by `manage.py check` and a worker's start, not at the first reply or mail."""
import os
import subprocess
import sys

import pytest

from tests.platform.test_settings_env import ROOT, environment


def run(tmp_path, *command, timeout=120, **env):
    try:
        return subprocess.run([sys.executable, *command], cwd=ROOT, env=environment(tmp_path, **env),
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{' '.join(command)} with {env} still ran after {timeout} s: it started")


def check(tmp_path, **env):
    return run(tmp_path, "manage.py", "check", **env)


@pytest.mark.parametrize("name, value", [
    ("REDIS_URL", "localhost:6379"), ("PUBLIC_URL", "chat.example.com"), ("PUBLIC_URL", "https://example.com:99999"),
    ("CHATNEXUS_INVITE_DAYS", "99999999"), ("DATABASE_URL", "postgres://chatnexus:secret@db:99999/chatnexus")])
def test_manage_py_says_a_refused_value_in_one_line(tmp_path, name, value):
    done = check(tmp_path, **{name: value})
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"ChatNexus: {name}=") and done.stderr.count("\n") == 1, done.stderr
    assert "secret" not in done.stderr and done.stdout == ""


def test_a_bug_in_the_settings_keeps_its_traceback(tmp_path):
    """Only a value the settings refuse is said in one line: anything else is a bug, shown in full."""
    (tmp_path / "broken_settings.py").write_text("from chatnexus.settings import *\nDEBUG = 1 / 0\n")
    done = run(tmp_path, "manage.py", "check", DJANGO_SETTINGS_MODULE="broken_settings", PYTHONPATH=str(tmp_path))
    assert done.returncode != 0 and "Traceback" in done.stderr and "ZeroDivisionError" in done.stderr
    refused = run(tmp_path, "manage.py", "check", DJANGO_SETTINGS_MODULE="broken_settings", PYTHONPATH=str(tmp_path),
                  EMAIL_PORT="0")  # the control: refused before the bug is reached
    assert refused.returncode == 2 and refused.stderr.startswith("ChatNexus: EMAIL_PORT='0'"), refused.stderr


def test_check_reads_drafters_the_device_and_the_mail_backend(tmp_path):
    """A misspelt drafter passed `check`, then serve blamed CHATNEXUS_TARGET; a mail backend that does
    not import failed every mail while the password-reset page said "sent"."""
    done = check(tmp_path, CHATNEXUS_DRAFTER="sufix", CHATNEXUS_BOT_DRAFTERS="suffix:wide, lookup:99",
                 CHATNEXUS_DEVICE="gpu", EMAIL_BACKEND="nope.Backend")
    assert done.returncode != 0 and "no issues" not in done.stdout
    said = {line.split(") ", 1)[1].split("=")[0].split(":")[0]: line
            for line in done.stderr.splitlines() if "(chatnexus.E" in line}  # one line each, by the variable
    assert sorted(said) == ["CHATNEXUS_BOT_DRAFTERS", "CHATNEXUS_DEVICE", "CHATNEXUS_DRAFTER", "EMAIL_BACKEND"], \
        done.stderr
    assert "'sufix'" in said["CHATNEXUS_DRAFTER"] and "'gpu'" in said["CHATNEXUS_DEVICE"]
    assert "'lookup:99'" in said["CHATNEXUS_BOT_DRAFTERS"] and "suffix:wide" not in said["CHATNEXUS_BOT_DRAFTERS"]
    # the control: specs the engine takes (a draft model is read when it loads), a device, a backend
    fine = check(tmp_path, CHATNEXUS_DRAFTER="suffix:16,tree+lookup:4", CHATNEXUS_BOT_DRAFTERS="suffix:wide,model:/m",
                 CHATNEXUS_DEVICE="cpu", EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend")
    assert fine.returncode == 0 and "no issues" in fine.stdout, fine.stderr


def test_a_worker_says_a_refused_value_in_one_line(tmp_path):
    for command, env in ((["worker", "-Q", "default", "--pool", "solo"], {"CHATNEXUS_AUTH_POSTS_PER_IP": "0"}),
                         (["beat"], {"REDIS_URL": "localhost:6379"})):
        done = run(tmp_path, "-m", "celery", "-A", "chatnexus", *command, timeout=60, **env)
        [(name, value)] = env.items()
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith(f"ChatNexus: {name}={value!r}: ") and done.stderr.count("\n") == 1, done.stderr


def test_a_worker_stops_on_what_check_refuses(tmp_path):
    """Celery runs Django's checks at a worker's start but ignores what they find."""
    done = run(tmp_path, "-m", "celery", "-A", "chatnexus", "worker", "-Q", "default", "--pool", "solo", timeout=60,
               CHATNEXUS_DRAFTER="sufix")
    assert done.returncode == 2, done.stderr
    assert "ChatNexus: CHATNEXUS_DRAFTER: drafter 'sufix': unknown drafter" in done.stderr, done.stderr


def test_a_device_this_machine_lacks_stops_only_what_runs_the_model(tmp_path):
    """CHATNEXUS_DEVICE=cuda on a torch without CUDA: the embedded start (serve runs the model) and an
    inference worker stop; the web app and the default queue's workers, which share the environment
    in compose, only warn."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    embedded = check(tmp_path, CHATNEXUS_DEVICE="cuda")
    assert embedded.returncode != 0 and "(chatnexus.E003) CHATNEXUS_DEVICE='cuda'" in embedded.stderr, embedded.stderr
    redis = os.environ["REDIS_URL"]  # the suite's: read, never connected to (the worker stops first)
    web = check(tmp_path, CHATNEXUS_DEVICE="cuda", REDIS_URL=redis)
    assert web.returncode == 0 and "(chatnexus.W003) CHATNEXUS_DEVICE='cuda'" in web.stderr, web.stderr
    worker = run(tmp_path, "-m", "celery", "-A", "chatnexus", "worker", "-Q", "inference", "--pool", "solo", timeout=60,
                 CHATNEXUS_DEVICE="cuda", REDIS_URL=redis)
    assert worker.returncode == 2 and "ChatNexus: CHATNEXUS_DEVICE='cuda'" in worker.stderr, worker.stderr
