"""The ASGI application imports the reply task (and with it the engine) as it loads, not when the first
message is stored: that import, seconds of torch and transformers, ran inside the one thread all
consumers' and views' database work shares, and stalled every socket and page of the server meanwhile."""
import subprocess
import sys

from django.conf import settings

PROBE = ("import sys; import chatnexus.asgi; "
         "print(sorted(m for m in ('inference.tasks', 'torch', 'transformers') if m in sys.modules))")


def test_loading_the_asgi_application_imports_the_reply_task_and_the_engine():
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=settings.BASE_DIR, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "['inference.tasks', 'torch', 'transformers']"
