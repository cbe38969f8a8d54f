"""Start-up checks of what the settings module cannot read alone: values that mean a plug-in
(a drafter spec, a device, a mail backend). Each passed `manage.py check` before and failed later:
a misspelt drafter at the model's load (serve then blamed CHATNEXUS_TARGET), CUDA on a machine
without it likewise, an unimportable mail backend at every mail (the password-reset page said
"sent"). Django runs them in `check`, `serve` and `migrate`; Celery workers here too, at their
start (chatnexus/celery.py). Registered by bots/apps.py.

``settings_or_exit`` is the other half: a value settings.py refuses (ImproperlyConfigured) is said
in one line, not a traceback through Django's or Celery's command line.
"""
import ipaddress
import sys

from django.conf import settings
from django.core.checks import Error, Warning, register
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

TAG = "chatnexus"


def settings_or_exit():
    """Load the settings now; one they refuse: "ChatNexus: <why>" on stderr and exit status 2."""
    try:
        settings.INSTALLED_APPS  # noqa: B018 - reading one loads them all
    except ImproperlyConfigured as error:
        sys.stderr.write(f"ChatNexus: {error}\n")
        sys.exit(2)


@register(TAG)
def chatnexus_settings(app_configs=None, **kwargs):
    # In the embedded mode this process runs the model (serve's worker threads); distributed, only
    # the inference queue's workers do, and they check again at their start with runs_engine=True.
    return problems(runs_engine=settings.EMBEDDED)


def problems(runs_engine: bool) -> list:
    return [*drafter_problems(), *device_problems(runs_engine), *email_backend_problems(), *from_address_problems()]


# ---------------------------------------------------------------------------
# Drafters


def drafter_problems() -> list:
    """The default drafter and those bots may choose, read by the engine's own registry and option
    parsers (inference/engine/drafters), without loading a model: a draft model ("model:<spec>")
    is checked when it loads."""
    from bots.models.bots import BUILTIN_DRAFTERS

    specs = [("CHATNEXUS_DRAFTER", settings.CHATNEXUS_DRAFTER),
             *(("CHATNEXUS_BOT_DRAFTERS", spec) for spec in settings.CHATNEXUS_BOT_DRAFTERS)]
    # the built-in ones need no reading: this keeps torch's import (seconds) out of a default start
    specs = [(name, spec) for name, spec in specs if spec not in BUILTIN_DRAFTERS]
    if not specs:
        return []
    from inference.engine.drafters import make_drafter, split_combined
    from inference.engine.errors import EngineError

    found = []
    for name, spec in specs:
        try:
            for part in split_combined(spec) or [spec]:
                kind, _, model = part.partition(":")
                if not (kind == "model" and model):
                    make_drafter(part, None, None, "cpu", "fp32")  # no model: what the spec says is all it reads
        except EngineError as error:
            found.append(Error(f"{name}: drafter {spec!r}: {error}", id="chatnexus.E001"))
    return found


# ---------------------------------------------------------------------------
# The device


def device_problems(runs_engine: bool) -> list:
    """CHATNEXUS_DEVICE as the engine reads it (inference/engine/loading.py: a name it takes, cpu, cuda,
    cuda:N or mps, and a device this machine has; unset: CUDA if present). A device missing here is an
    error where this process runs the model; elsewhere (the web app, the default queue's workers,
    which share the environment) a warning only."""
    if settings.CHATNEXUS_DEVICE is None:
        return []
    from inference.engine.errors import EngineError
    from inference.engine.loading import parse_device, resolve_device

    name = f"CHATNEXUS_DEVICE={settings.CHATNEXUS_DEVICE!r}"
    try:
        parse_device(settings.CHATNEXUS_DEVICE)  # "gpu", "meta", "xpu": a name the engine never runs on
    except EngineError as error:
        return [Error(f"{name}: {error}", id="chatnexus.E002")]
    try:
        resolve_device(settings.CHATNEXUS_DEVICE)
        return []
    except EngineError as error:
        missing = str(error)
    if runs_engine:
        return [Error(f"{name}: {missing}; unset, the engine takes CUDA where present, else the CPU",
                      id="chatnexus.E003")]
    return [Warning(f"{name}: {missing}; fine where this process never runs the model (the web app, workers of "
                    "the default queue), but a worker of the inference queue here would refuse to start",
                    id="chatnexus.W003")]


# ---------------------------------------------------------------------------
# Mail


def email_backend_problems() -> list:
    try:
        import_string(settings.EMAIL_BACKEND)
    except ImportError as error:
        return [Error(f"EMAIL_BACKEND={settings.EMAIL_BACKEND!r}: cannot be imported ({error}); unset, the "
                      "platform sends through EMAIL_HOST by SMTP, or writes mail to the log", id="chatnexus.E004")]
    return []


def from_address_problems() -> list:
    """DEFAULT_FROM_EMAIL where mail leaves this server: every email channel not confirmed nor on an
    SMTP server of its own sends From it (channels_app/email/sender.py), and the default,
    noreply@localhost, is a sender domain many receiving servers refuse. A warning: the mail server
    may still take it, and it was fine before channels sent from it."""
    from bots.membership import mail_leaves_the_server
    from channels_app.email.sender import platform_address

    if not mail_leaves_the_server():
        return []
    domain = platform_address().rpartition("@")[2].strip("[]").rstrip(".").lower()
    try:
        ipaddress.ip_address(domain.removeprefix("ipv6:"))
        literal = True
    except ValueError:
        literal = False
    if "." in domain and not literal and not domain.endswith(".localhost"):  # "localhost" has no dot
        return []
    return [Warning(f"DEFAULT_FROM_EMAIL={settings.DEFAULT_FROM_EMAIL!r}: mail goes out through EMAIL_HOST from a "
                    f"domain ({domain or 'none'}) many receiving servers refuse; email channels not confirmed nor on "
                    "an SMTP server of their own send from it too. Set DEFAULT_FROM_EMAIL to an address of the "
                    "platform's own domain that the mail server may send as (SPF, DKIM)", id="chatnexus.W005")]
