"""`manage.py serve` (what scripts/run.sh runs) with a model it cannot load: a clear error and
an exit status, not a traceback and not a platform that starts and then cannot answer."""
import subprocess
import sys

from tests.conftest import ROOT, embedded_env, free_port


def test_a_missing_model_file_stops_serve_with_a_clear_message(tmp_path):
    env = embedded_env(tmp_path, CHATNEXUS_TARGET=str(tmp_path / "missing.gguf"))
    done = subprocess.run([sys.executable, "manage.py", "serve", "--port", str(free_port())], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "cannot load the model" in output and "missing.gguf" in output and "CHATNEXUS_TARGET" in output
    assert "Traceback" not in output and "ChatNexus is up" not in output


def test_a_model_that_cannot_chat_stops_serve_with_a_clear_message(tmp_path):
    """A base model (no chat template) loaded fine and then failed every customer's message."""
    from tests.engine.conftest import byte_tokenizer, save, tiny_llama

    tokenizer = byte_tokenizer()
    tokenizer.chat_template = None
    folder = save(tiny_llama(len(tokenizer), layers=1, hidden=32, seed=0), tokenizer, tmp_path / "base-model")
    env = embedded_env(tmp_path, CHATNEXUS_TARGET=folder, CHATNEXUS_DTYPE="fp32")
    done = subprocess.run([sys.executable, "manage.py", "serve", "--port", str(free_port())], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-2000:]
    assert "cannot load the model" in output and "chat template" in output
    assert "Traceback" not in output and "ChatNexus is up" not in output


def test_a_model_file_cut_short_stops_serve_with_a_clear_message(tmp_path):
    """An interrupted download or copy: safetensors' own error ended serve in a traceback naming no file."""
    from tests.engine.conftest import byte_tokenizer, save, tiny_llama

    tokenizer = byte_tokenizer()
    folder = save(tiny_llama(len(tokenizer), layers=1, hidden=32, seed=0), tokenizer, tmp_path / "cut-model")
    weights = tmp_path / "cut-model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    env = embedded_env(tmp_path, CHATNEXUS_TARGET=folder, CHATNEXUS_DTYPE="fp32")
    done = subprocess.run([sys.executable, "manage.py", "serve", "--port", str(free_port())], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-2000:]
    assert "cannot load the model" in output and "cut-model" in output and "cut short" in output
    assert "Traceback" not in output and "ChatNexus is up" not in output
