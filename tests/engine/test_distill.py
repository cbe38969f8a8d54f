"""`distill`: a draft trained on the tiny target's own replies loads like any draft and helps it.

Every run uses the tiny 2-layer random target of conftest.py and a 1-layer draft.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from inference.engine import Engine
from inference.engine.distill import DistillConfig, DistillError, distill

ROOT = Path(__file__).resolve().parents[2]
SMALL = dict(layers=1, limit=16, max_new_tokens=16, lr=3e-3, heldout=0.25, device="cpu", progress=False)


def run(target: str, out: Path, **settings) -> dict:
    return distill(DistillConfig(out=out, target=target, **(SMALL | settings)))


def checkpoint(out: Path) -> dict:
    return torch.load(out / "checkpoint" / "train.pt", weights_only=False)


@pytest.fixture(scope="module")
def distilled(tiny_target_dir, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("distilled") / "draft"
    return out, run(tiny_target_dir, out, steps=60, minutes=None)


def test_the_distilled_draft_loads_as_a_model_draft_and_greedy_output_is_unchanged(tiny_target_dir, distilled):
    out, _ = distilled
    engine = Engine(target=tiny_target_dir, drafter=f"model:{out}", device="cpu", dtype="fp32")
    for text in ("Where is my parcel?", "hello hello hello"):
        messages = [{"role": "user", "content": text}]
        drafted = engine.generate(messages, max_new_tokens=40)
        plain = engine.generate(messages, max_new_tokens=40, drafter="none")
        assert drafted.token_ids == plain.token_ids
        assert drafted.stats.drafted > 0 and drafted.stats.drafter == f"model:{out}"


def test_training_lowers_the_kl_and_raises_held_out_agreement(distilled):
    out, result = distilled
    assert result["steps"] == 60 and result["stopped"] == "steps"
    assert result["distilled"]["kl"] < 0.85 * result["initial"]["kl"]
    assert result["distilled"]["acceptance"] > result["initial"]["acceptance"] + 0.05
    assert result["loss"]["last"] < result["loss"]["first"]
    assert json.loads((out / "distill.json").read_text())["distilled"] == result["distilled"]


def test_the_teacher_is_stored_as_top_k_per_reply_position(distilled):
    out, result = distilled
    data = torch.load(out / "checkpoint" / "data.pt", weights_only=False)
    seq = data["sequences"][0]
    assert seq["top_logp"].shape == seq["top_ids"].shape == (seq["reply_len"], 32)
    assert seq["top_logp"].dtype == torch.float16 and seq["top_ids"].dtype == torch.int32
    assert result["data"]["sequences"] == len(data["sequences"]) >= 8


def test_resume_continues_from_the_saved_step_without_regenerating_the_data(tiny_target_dir, tmp_path):
    out = tmp_path / "draft"
    run(tiny_target_dir, out, steps=2, minutes=None)
    data_file = out / "checkpoint" / "data.pt"
    data_before = (data_file.stat().st_mtime_ns, data_file.read_bytes())
    losses_before = checkpoint(out)["losses"]
    # different data settings on resume are ignored: the checkpoint's data is reused
    result = run(tiny_target_dir, out, steps=4, minutes=None, resume=True, limit=3, max_new_tokens=4)
    assert checkpoint(out)["step"] == result["steps"] == 4
    assert checkpoint(out)["losses"][:2] == losses_before and len(checkpoint(out)["losses"]) == 4
    assert (data_file.stat().st_mtime_ns, data_file.read_bytes()) == data_before
    assert result["settings"]["max_new_tokens"] == 16


def test_the_minutes_budget_stops_training_then_saves_and_evaluates(tiny_target_dir, tmp_path):
    out = tmp_path / "draft"
    first = run(tiny_target_dir, out, steps=2, minutes=None)
    # the budget counts across resumes: allow a few seconds beyond what the first run used
    result = run(tiny_target_dir, out, steps=None, minutes=first["minutes"] + 0.08, resume=True)
    assert result["stopped"] == "budget" and result["steps"] > 2
    assert checkpoint(out)["step"] == result["steps"]
    assert json.loads((out / "distill.json").read_text())["stopped"] == "budget"
    Engine(target=tiny_target_dir, drafter=f"model:{out}", device="cpu", dtype="fp32")  # loads


def test_it_refuses_a_resume_without_checkpoint_and_an_overwrite(tiny_target_dir, distilled, tmp_path):
    with pytest.raises(DistillError, match="no checkpoint"):
        run(tiny_target_dir, tmp_path / "empty", steps=1, resume=True)
    with pytest.raises(DistillError, match="--resume"):
        run(tiny_target_dir, distilled[0], steps=1)


def test_the_cli_exits_2_with_one_line_for_a_bad_target(tmp_path):
    missing = tmp_path / "no-such-model"
    proc = subprocess.run([sys.executable, "-m", "inference", "distill", "--target", str(missing),
                           "--out", str(tmp_path / "out"), "--steps", "1", "--threads", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: ") and str(missing) in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_the_data_is_the_targets_own_greedy_replies_whatever_the_batch(tiny_target_dir, distilled):
    """Prompts of different lengths share a batch (left-padded): each stored reply must still be
    what the target alone answers to that prompt. (The engine's CPU model computes attention
    row by row without a padding mask, so generating the data with it gave padded rows other
    replies.)"""
    out, _ = distilled
    data = torch.load(out / "checkpoint" / "data.pt", weights_only=False)
    engine = Engine(target=tiny_target_dir, drafter="none", device="cpu", dtype="fp32", prefix_cache=False)
    lengths = set()
    for seq in data["sequences"]:
        reply_len = seq["reply_len"]
        prompt = seq["ids"][:-reply_len]
        lengths.add(len(prompt))
        reply, _ = engine.generate_ids(prompt[None], max_new_tokens=SMALL["max_new_tokens"])
        assert seq["ids"][-reply_len:].tolist() == reply, seq["id"]
    assert len(lengths) > 1  # the batches did hold prompts of different lengths
