"""`manage.py serve` (what scripts/run.sh runs) with a model it cannot load: a clear error and
an exit status, not a traceback and not a platform that starts and then cannot answer."""
import os
import subprocess
import sys

from tests.conftest import ROOT, free_port


def test_a_missing_model_file_stops_serve_with_a_clear_message(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(DJANGO_SETTINGS_MODULE="chatnexus.settings", CHATNEXUS_VAR_DIR=str(tmp_path / "var"),
               CHATNEXUS_TARGET=str(tmp_path / "missing.gguf"), CHATNEXUS_IMAP_POLL_SECONDS="0")
    done = subprocess.run([sys.executable, "manage.py", "serve", "--port", str(free_port())], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "cannot load the model" in output and "missing.gguf" in output and "CHATNEXUS_TARGET" in output
    assert "Traceback" not in output and "ChatNexus is up" not in output
