"""The traffic-replay benchmark and its shipped workload."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest

from inference.cli import main
from inference.data.make_replay import conversations
from inference.engine.replay import ReplayFileError, leviathan_bound, load_replay, run_replay

SHIPPED = Path(__file__).parents[2] / "inference" / "data" / "replay_support.jsonl"


def test_the_shipped_workload_is_the_seeded_generators_output_and_skewed():
    rows = [json.loads(line) for line in SHIPPED.read_text(encoding="utf-8").splitlines()]
    assert rows == list(conversations(seed=0, messages=160))
    messages = [turn for row in rows for turn in row["turns"]]
    assert len(messages) >= 150
    assert len({row["bot"] for row in rows}) >= 4
    assert len({row["user"] for row in rows}) > 30
    assert any(len(row["turns"]) > 1 for row in rows)
    top = collections.Counter(row["turns"][0].split(" ", 1)[-1] for row in rows if row["bot"] == "bikeshop")
    assert top.most_common(1)[0][1] >= 3  # a few questions make much of the traffic


def test_it_limits_to_the_first_messages_and_rejects_bad_lines(tmp_path):
    assert sum(len(c["turns"]) for c in load_replay(SHIPPED, limit=7)) == 7
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "c1", "bot": "x", "turns": "hello"}\n')
    with pytest.raises(ReplayFileError, match="bad.jsonl:1"):
        load_replay(bad)


def test_the_bound_is_leviathans_formula():
    assert leviathan_bound(0.0, 4, 0.0) == 1.0
    assert leviathan_bound(1.0, 4, 0.0) == 5.0
    assert abs(leviathan_bound(0.8, 4, 0.1) - (1 - 0.8 ** 5) / (0.2 * 1.4)) < 1e-9


def test_it_replays_in_order_with_identical_outputs_and_learning_per_bot(tiny_target_dir, tmp_path):
    workload = tmp_path / "replay.jsonl"
    rows = [{"id": f"c{i}", "bot": bot, "system": f"You are the {bot} bot.", "turns": turns}
            for i, (bot, turns) in enumerate([("a", ["When are you open?"]), ("b", ["Hi"]),
                                              ("a", ["When are you open?", "Thanks"]), ("a", ["When are you open?"])])]
    workload.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    results = run_replay(load_replay(workload), target=tiny_target_dir, methods=["hf_plain", "none", "suffix",
                                                                               "suffix+lookup"],
                         max_new_tokens=24, device="cpu", out_dir=out, progress=False)
    saved = json.loads((out / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    assert saved["messages"] == 5 and saved["bots"] == ["a", "b"]
    by_name = {m["name"]: m for m in saved["methods"]}
    for m in saved["methods"]:
        assert m["identical"] == 5, m["name"]
        assert {"tokens_per_s", "speedup", "acceptance_rate", "mean_tokens_per_forward", "gamma", "c",
                "leviathan_bound"} <= set(m)
    assert by_name["suffix"]["mean_tokens_per_forward"] > by_name["none"]["mean_tokens_per_forward"]
    assert by_name["suffix"]["leviathan_bound"] is not None
    assert by_name["hf_plain"]["ttft_ms"] is None and all(by_name[m]["ttft_ms"] > 0 for m in ("none", "suffix"))
    assert saved["by_history"]["buckets"][:2] == ["0", "1-2"]
    assert (out / "speedup_by_history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_cli_runs_a_replay(tiny_target_dir, tmp_path, capsys):
    workload = tmp_path / "replay.jsonl"  # the shipped system prompts overflow the tiny model's 512 bytes
    workload.write_text('{"id": "c1", "bot": "a", "system": "Be brief.", "turns": ["Hi", "Open?", "Bye"]}\n')
    code = main(["bench", "--replay", str(workload), "--limit", "2", "--target", tiny_target_dir, "--device", "cpu",
                 "--max-new-tokens", "8", "--methods", "hf_plain,suffix+lookup", "--out", str(tmp_path),
                 "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "suffix+lookup" in printed and "S bound" in printed and "2/2" in printed and "TTFT ms" in printed


def test_a_prompt_file_replays_as_fresh_conversations(tmp_path):
    prompts = Path(__file__).parents[2] / "inference" / "data" / "support_prompts.jsonl"
    conversations = load_replay(prompts, limit=3)
    assert [c["bot"] for c in conversations] == [c["id"] for c in conversations]  # each its own bot
    assert all(len(c["turns"]) == 1 and c["system"] for c in conversations)


def test_without_hf_plain_the_first_method_is_the_reference(tiny_target_dir, tmp_path, capsys):
    """An int4 replay measures drafts against our own plain loop: `--methods none,suffix`."""
    workload = tmp_path / "replay.jsonl"
    workload.write_text('{"id": "c1", "bot": "a", "system": "Be brief.", "turns": ["Hi", "Open?"]}\n'
                        '{"id": "c2", "bot": "a", "system": "Be brief.", "turns": ["Hi", "Open?"]}\n')
    code = main(["bench", "--replay", str(workload), "--target", tiny_target_dir, "--device", "cpu",
                 "--max-new-tokens", "12", "--methods", "none,suffix", "--out", str(tmp_path / "out"),
                 "--no-progress"])
    assert code == 0
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["reference"] == "none"
    by_name = {m["name"]: m for m in saved["methods"]}
    assert by_name["none"]["speedup"] == 1.0 and by_name["none"]["identical"] == 4
    assert by_name["suffix"]["identical"] == 4  # lossless against the plain loop
    # tokens/s are stored rounded to 3 places and the speedup from the unrounded rates: equal within the rounding
    assert by_name["suffix"]["speedup"] == pytest.approx(
        by_name["suffix"]["tokens_per_s"] / by_name["none"]["tokens_per_s"], abs=0.002)
    assert set(saved["by_history"]["speedup"]) == {"none", "suffix"}
    assert "speedup over none by the bot's earlier replies" in capsys.readouterr().out


def test_a_replay_cut_short_keeps_the_messages_it_finished(tiny_target_dir, tmp_path):
    from inference.engine.errors import EngineError

    workload = tmp_path / "replay.jsonl"
    rows = [{"id": "c0", "bot": "a", "system": "You are the a bot.", "turns": ["When are you open?", "x " * 2000]}]
    workload.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    with pytest.raises(EngineError):  # the second message is past the context
        run_replay(load_replay(workload), target=tiny_target_dir, methods=["none", "suffix"], max_new_tokens=8,
                   device="cpu", out_dir=out, progress=False)
    partial = json.loads((out / "results.partial.json").read_text())
    assert partial["done"] == 1 and partial["total"] == 2 and set(partial["rows"]) == {"none", "suffix"}
    assert not (out / "results.json").exists()
