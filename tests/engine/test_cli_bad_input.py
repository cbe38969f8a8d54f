"""`python -m inference` given a bad option, file or machine: exit 2 with one error line, never a
traceback, never a false success (the tiny 2-layer target of conftest.py; each run loads it in well
under a second, and option errors stop before torch is even imported)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from inference.cli import build_parser, fit_context, model_spec
from inference.engine import Engine
from inference.engine.sampling import SamplingParams, probs_from_logits

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return run_all([args])[0]


def run_all(commands: list[tuple[str, ...]]) -> list[subprocess.CompletedProcess]:
    """Several `python -m inference` runs at once (each pays torch's import, a few seconds)."""
    procs = [subprocess.Popen([sys.executable, "-m", "inference", *args], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for args in commands]
    done = []
    for args, proc in zip(commands, procs):
        stdout, stderr = proc.communicate(timeout=300)
        done.append(subprocess.CompletedProcess(args, proc.returncode, stdout, stderr))
    return done


def assert_refused(proc: subprocess.CompletedProcess, says: str, only_line: bool = False) -> None:
    """Exit 2, no traceback, one error line saying `says` (argparse prints its usage above it;
    `only_line`: nothing else on stderr at all)."""
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(errors) == 1 and says in errors[0], proc.stderr[-2000:]
    if only_line:
        assert proc.stderr.strip() == errors[0], proc.stderr[-2000:]


def test_out_of_range_sampling_seed_and_thread_options_are_refused_before_loading(tiny_target_dir):
    for option, value in (("--top-p", "0"), ("--top-p", "-3"), ("--top-p", "1.5"), ("--temperature", "nan"),
                          ("--temperature", "-1"), ("--temperature", "inf"), ("--top-k", "-3"),
                          ("--seed", "99999999999999999999999"), ("--seed", "-1"), ("--threads", "100000"),
                          ("--target", "")):
        proc = run_cli("generate", "--target", tiny_target_dir, "--prompt", "hi", "--max-new-tokens", "2",
                       option, value)
        assert_refused(proc, f"argument {option}: ")


def test_every_numeric_option_of_every_command_refuses_infinity_and_nan(capsys):
    """inf passed distill's --lr and --minutes: --lr inf trained the draft into nan, --minutes inf was
    no budget, and distill.json stored either as Infinity, which is no JSON."""
    commands = build_parser()._subparsers._group_actions[0].choices
    checked = []
    for command, parser in commands.items():
        numeric = [a for a in parser._actions if a.type is not None and a.type not in (Path, model_spec)]
        for action, value in ((a, v) for a in numeric for v in ("inf", "-inf", "nan", "NaN", "1e999")):
            option = action.option_strings[0]
            with pytest.raises(SystemExit) as refused:
                parser.parse_args([f"{option}={value}"])  # "-inf" alone reads as an option
            said = capsys.readouterr().err.splitlines()[-1]
            assert refused.value.code == 2 and f"argument {option}: " in said and repr(value) in said, said
            checked.append(f"{command} {option}")
    assert {"distill --lr", "distill --minutes", "distill --batch", "generate --temperature"} <= set(checked)


def test_a_distill_batch_no_step_could_finish_is_refused_before_loading(tmp_path):
    """The --minutes budget is read between steps: a batch of 10**22 sequences was a first step that never ended."""
    missing_model = tmp_path / "no-model"  # loading it would fail: the option must be refused first
    procs = run_all([("distill", "--target", str(missing_model), "--out", str(tmp_path / "d"), "--batch", value)
                     for value in ("1025", str(10 ** 22))])
    for proc in procs:
        assert_refused(proc, "argument --batch: expected at most 1024 sequences per step")
    assert not (tmp_path / "d").exists()


def test_a_distill_top_k_beyond_the_vocabulary_is_refused_before_any_generation(tiny_target_dir, tmp_path):
    """--top-k 10**22 overflowed torch's topk with a traceback after the data was generated."""
    outs = [tmp_path / "k-over", tmp_path / "k-huge"]
    procs = run_all([("distill", "--target", tiny_target_dir, "--out", str(out), "--layers", "1", "--steps", "1",
                      "--limit", "3", "--max-new-tokens", "4", "--no-progress", "--threads", "1", "--top-k", k)
                     for out, k in zip(outs, ("260", str(10 ** 22)))])  # the byte tokenizer has 259 tokens
    for out, proc in zip(outs, procs):
        assert_refused(proc, f"--top-k must be between 1 and 259 for {tiny_target_dir} (259 tokens)", only_line=True)
        assert not out.exists()
    proc = run_cli("distill", "--target", tiny_target_dir, "--out", str(tmp_path / "k-all"), "--layers", "1",
                   "--steps", "1", "--limit", "3", "--max-new-tokens", "4", "--no-progress", "--threads", "1",
                   "--top-k", "259")  # the control: the whole vocabulary is a top-k
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_a_device_torch_knows_but_the_engine_does_not_run_on_is_refused_in_one_line(tiny_target_dir, tmp_path):
    """meta, xpu, hpu: torch.device takes them, and every command failed deep inside the load with a traceback."""
    commands = [("meta", ("generate", "--prompt", "hi")),
                ("xpu", ("shrink", "--layers", "1", "--out", str(tmp_path / "xpu" / "shrunk"))),
                ("hpu", ("distill", "--layers", "1", "--steps", "1", "--out", str(tmp_path / "hpu" / "distilled")))]
    procs = run_all([(*command, "--target", tiny_target_dir, "--threads", "1", "--device", device)
                     for device, command in commands])
    for (device, command), proc in zip(commands, procs):
        assert_refused(proc, f"unknown device {device!r}: the engine runs on cpu, cuda, cuda:N or mps", only_line=True)
        assert not (tmp_path / device).exists() and proc.stdout == "", command


def test_shrink_refuses_an_out_that_is_a_file_and_writes_nothing(tiny_target_dir, tmp_path):
    out = tmp_path / "notes.txt"
    out.write_text("mine")
    proc = run_cli("shrink", "--target", tiny_target_dir, "--layers", "1", "--out", str(out), "--threads", "1")
    assert_refused(proc, f"{str(out)!r} exists and is not a folder", only_line=True)
    assert out.read_text() == "mine" and proc.stdout == ""


def test_shrink_with_a_quantised_dtype_saves_fp32_weights_the_engine_quantises_itself(tiny_target_dir, tmp_path):
    out = tmp_path / "draft"
    proc = run_cli("shrink", "--target", tiny_target_dir, "--layers", "1", "--out", str(out), "--dtype", "int8",
                   "--threads", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert f.get_tensor("model.layers.0.mlp.down_proj.weight").dtype == torch.float32
    engine = Engine(target=tiny_target_dir, drafter=f"model:{out}", device="cpu", dtype="int8")
    assert engine.generate([{"role": "user", "content": "hello"}], max_new_tokens=6).stats.new_tokens > 0


def test_replay_history_that_is_no_message_list_is_refused_with_its_line_before_the_model_loads(tmp_path):
    missing_model = tmp_path / "no-model"  # loading it would fail: the file must be refused first
    good = {"id": "c0", "bot": "b", "system": "", "turns": ["hi"]}
    workloads = [tmp_path / "string.jsonl", tmp_path / "no-content.jsonl"]
    for workload, history in zip(workloads, ("x", [{"role": "user"}])):
        workload.write_text(json.dumps(good) + "\n" + json.dumps({**good, "id": "c1", "history": history}) + "\n")
    procs = run_all([("bench", "--target", str(missing_model), "--replay", str(w), "--out", str(tmp_path / "r"))
                     for w in workloads])
    for workload, proc in zip(workloads, procs):
        assert_refused(proc, f'{workload}:2: "history" must be', only_line=True)
    assert not (tmp_path / "r").exists()


def test_a_device_this_machine_lacks_is_named_with_what_is_available(tiny_target_dir):
    lacking = [d for d, there in (("cuda", torch.cuda.is_available()), ("mps", torch.backends.mps.is_available()))
               if not there]
    if not lacking:
        pytest.skip("this machine has both CUDA and MPS")
    procs = run_all([("generate", "--target", tiny_target_dir, "--prompt", "hi", "--device", d) for d in lacking])
    for device, proc in zip(lacking, procs):
        assert_refused(proc, f"device {device!r} is not available", only_line=True)
        assert "available: cpu" in proc.stderr


def test_a_config_json_that_is_no_json_is_reported_as_such(tiny_target_dir, tmp_path):
    broken = shutil.copytree(tiny_target_dir, tmp_path / "broken")
    (broken / "config.json").write_text("{bad")
    proc = run_cli("generate", "--target", str(broken), "--prompt", "hi")
    assert_refused(proc, "config.json is not valid JSON", only_line=True)
    assert "huggingface-cli download" not in proc.stderr


def test_a_distill_run_that_ends_before_training_keeps_nothing_that_blocks_the_next(tiny_target_dir, tmp_path):
    out = tmp_path / "draft"
    common = ("distill", "--target", tiny_target_dir, "--out", str(out), "--layers", "1", "--steps", "1",
              "--max-new-tokens", "4", "--no-progress", "--threads", "1")
    assert_refused(run_cli(*common, "--limit", "1"), "only 1 reply generated")
    # a plain second run with a higher --limit now works (the largest seed torch takes trains too)
    proc = run_cli(*common, "--limit", "3", "--seed", str(2 ** 64 - 1))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((out / "distill.json").read_text())["data"]["sequences"] == 3


def test_chat_with_max_new_tokens_beyond_the_context_still_keeps_the_conversation(tiny_engine):
    history = [{"role": "system", "content": "Be brief."}]
    for i in range(3):
        history += [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": f"answer {i}"}]
    history.append({"role": "user", "content": "and now?"})
    for max_new_tokens in (tiny_engine.context_length, 10 * tiny_engine.context_length):
        assert fit_context(tiny_engine, history, max_new_tokens) == history


def test_top_p_at_or_below_zero_still_keeps_the_most_likely_token():
    logits = torch.tensor([[0.5, 3.0, 1.0]])
    for top_p in (0.0, -3.0):
        probs = probs_from_logits(logits, SamplingParams(temperature=1.0, top_p=top_p))
        assert probs.tolist() == [[0.0, 1.0, 0.0]]
