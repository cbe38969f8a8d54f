"""Where mail leaves this server, `manage.py check` warns of a DEFAULT_FROM_EMAIL whose domain many
receiving servers refuse (localhost, a name without a dot, an IP literal): every email channel not
confirmed nor on an SMTP server of its own sends From it (channels_app/email/sender.py), and the
default is noreply@localhost."""
import pytest
from django.core.checks import run_checks

from tests.platform.test_ops_settings_start import check

SMTP = "django.core.mail.backends.smtp.EmailBackend"


def warnings(settings, backend, address):
    settings.EMAIL_BACKEND, settings.DEFAULT_FROM_EMAIL = backend, address
    return [problem for problem in run_checks(tags=["chatnexus"]) if problem.id == "chatnexus.W005"]


@pytest.mark.parametrize("address", ["ChatNexus <noreply@localhost>", "noreply@mail.localhost", "noreply@mailhost",
                                     "noreply@[192.0.2.7]", "noreply@[IPv6:2001:db8::1]", "noreply@192.0.2.7",
                                     "ChatNexus"])
def test_it_warns_of_a_from_domain_receiving_servers_refuse(settings, address):
    [warning] = warnings(settings, SMTP, address)
    assert warning.msg.startswith(f"DEFAULT_FROM_EMAIL={address!r}: ")
    assert "Set DEFAULT_FROM_EMAIL to an address of the platform's own domain that the mail server may send as" in \
        warning.msg


@pytest.mark.parametrize("backend, address", [
    (SMTP, "ChatNexus <noreply@chat.example.com>"), (SMTP, "noreply@Chat.Example.COM."),
    ("django.core.mail.backends.console.EmailBackend", "ChatNexus <noreply@localhost>"),  # mail stays in the log
])
def test_it_says_nothing_of_a_real_domain_or_mail_that_stays_here(settings, backend, address):
    assert warnings(settings, backend, address) == []


def test_manage_py_check_says_it_once_email_host_is_set(tmp_path):
    done = check(tmp_path, EMAIL_HOST="smtp.example.com")  # DEFAULT_FROM_EMAIL unset: noreply@localhost
    assert done.returncode == 0, done.stderr  # a warning: the mail server may still take it
    assert "(chatnexus.W005) DEFAULT_FROM_EMAIL='ChatNexus <noreply@localhost>': " in done.stderr, done.stderr
    assert "no issues" not in done.stdout
    assert "chatnexus.W005" not in check(tmp_path).stderr  # no EMAIL_HOST: mail is only written to the log
    fine = check(tmp_path, EMAIL_HOST="smtp.example.com", DEFAULT_FROM_EMAIL="ChatNexus <noreply@chat.example.com>")
    assert fine.returncode == 0 and "no issues" in fine.stdout, fine.stderr
