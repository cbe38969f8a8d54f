"""`python -m inference` as a user runs it: JSON output for machines, clean errors for people."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "inference", *args], cwd=ROOT, input=stdin,
                          capture_output=True, text=True, timeout=120)


def test_chat_keeps_going_until_eof_and_prints_stats_per_reply(tiny_model_dir):
    proc = run_cli("chat", "--target", str(tiny_model_dir), "--max-new-tokens", "4", "--threads", "1",
                   stdin="hello\nand again\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("bot> ") == 2
    assert proc.stderr.count("tok/s") == 2
    assert "Traceback" not in proc.stderr


def test_it_prints_one_json_object_per_prompt(tiny_model_dir, prompt_file):
    proc = run_cli("generate", "--target", str(tiny_model_dir), "--prompts", str(prompt_file),
                   "--json", "--threads", "1", "--max-new-tokens", "8", "--drafter", "lookup", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["id"] for r in rows] == ["a", "b", "c"]
    for r in rows:
        assert isinstance(r["text"], str)
        assert 0 < r["stats"]["new_tokens"] <= 8


def test_a_missing_model_exits_2_with_a_message_and_no_traceback(tmp_path):
    missing = tmp_path / "no-such-model"
    proc = run_cli("generate", "--target", str(missing), "--prompt", "hi")
    assert proc.returncode == 2
    assert str(missing) in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_bad_prompt_file_exits_2_naming_the_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "a", "messages": [{"role": "user", "content": "hi"}]}\n{oops\n')
    proc = run_cli("generate", "--prompts", str(path))
    assert proc.returncode == 2
    assert f"{path}:2:" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_file_that_is_no_gguf_model_exits_2_saying_so(tmp_path):
    for name, content in (("page.gguf", b"<html>404 Not Found</html>"), ("empty.gguf", b""),
                          ("cut.gguf", b"GGUF\x03\x00\x00\x00\x10")):  # the magic, then cut short
        path = tmp_path / name
        path.write_bytes(content)
        proc = run_cli("generate", "--target", str(path), "--prompt", "hi")
        assert proc.returncode == 2, (name, proc.stderr[-2000:])
        assert str(path) in proc.stderr and "GGUF" in proc.stderr and "Traceback" not in proc.stderr, name


def test_bad_options_and_files_exit_2_without_a_traceback(tiny_model_dir, tmp_path):
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes('{"id": "a", "messages": [{"role": "user", "content": "caf\u00e9"}]}\n'.encode("latin-1"))
    for args, says in (
        (("--drafter", "lookup:abc"), "lookup drafter option 'abc'"),
        (("--device", "gpu"), "unknown device 'gpu'"),
        (("--prompts", str(latin1)), f"{latin1}:1: not UTF-8 text"),
        (("--prompts", str(tmp_path)), str(tmp_path)),  # a folder
    ):
        prompt = () if "--prompts" in args else ("--prompt", "hi")
        proc = run_cli("generate", "--target", str(tiny_model_dir), "--max-new-tokens", "2", *prompt, *args)
        assert proc.returncode == 2 and says in proc.stderr and "Traceback" not in proc.stderr, (args, proc.stderr[-1500:])


def test_a_long_chat_drops_its_oldest_exchanges_instead_of_ending(tiny_model_dir):
    """The tiny model's context is 1,024 tokens: twelve 300-character messages overflow it."""
    lines = "".join(f"message {i}: " + "tell me more about the weather " * 9 + "\n" for i in range(12))
    proc = run_cli("chat", "--target", str(tiny_model_dir), "--max-new-tokens", "4", "--threads", "1",
                   "--system", "You are terse.", stdin=lines)
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert proc.stdout.count("bot> ") == 12 and "Traceback" not in proc.stderr
