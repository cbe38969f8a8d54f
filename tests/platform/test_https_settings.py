"""Production settings as Django's deployment check sees them, from a fresh process with the
environment a deployment sets: an https PUBLIC_URL makes the cookies secure by itself."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def deploy_check(**env):
    environment = {k: v for k, v in os.environ.items() if k not in ("SECURE_COOKIES", "DJANGO_SETTINGS_MODULE")}
    environment.update(DJANGO_SETTINGS_MODULE="chatnexus.settings", SECRET_KEY="x" * 60, **env)
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy"], cwd=ROOT, env=environment,
                            capture_output=True, text=True, timeout=120)
    return result.stdout + result.stderr


def test_an_https_site_gets_secure_cookies_without_asking():
    report = deploy_check(PUBLIC_URL="https://chat.example.com")
    assert "security.W012" not in report and "security.W016" not in report  # session, CSRF cookies
    plain = deploy_check(PUBLIC_URL="http://127.0.0.1:8000")  # the control: a plain-HTTP site
    assert "security.W012" in plain and "security.W016" in plain


def test_redirect_and_hsts_follow_the_environment():
    report = deploy_check(PUBLIC_URL="https://chat.example.com", SECURE_SSL_REDIRECT="1", SECURE_HSTS_SECONDS="3600",
                          TRUST_X_FORWARDED_PROTO="1")
    assert "security.W008" not in report and "security.W004" not in report
    assert "security.W008" in deploy_check(PUBLIC_URL="https://chat.example.com")
