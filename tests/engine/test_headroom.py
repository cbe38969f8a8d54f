"""The drafting headroom: drafters replayed offline against recorded greedy replies, and the copy bound."""

from __future__ import annotations

import json

import pytest

from inference.engine.engine import Engine
from inference.engine.headroom import (FREE_DRAFT, copy_bound, format_headroom, free_tokens_per_forward, headroom,
                                       replayable)
from inference.engine.replay import format_replay_table, load_replay, run_replay
from inference.engine.verify import accepted_length

EOS = 99


def test_a_draft_is_accepted_up_to_its_deepest_matching_path():
    truth = [5, 6, 7, 8]
    assert accepted_length([5, 6, 9], [-1, 0, 1], truth) == 2  # a chain, wrong third token
    assert accepted_length([4, 6], [-1, 0], truth) == 0  # wrong first token: nothing under it counts
    # a tree: 5 -> {9, 6 -> 7}; the deepest right path is 5 6 7
    assert accepted_length([5, 9, 6, 7], [-1, 0, 0, 2], truth) == 3
    assert accepted_length([5, 6, 7, 8, 1], [-1, 0, 1, 2, 3], truth) == 4  # the reply ends: no deeper


def test_the_copy_bound_copies_the_longest_run_its_sources_hold():
    reply = [10, 11, 12, 13, EOS]
    messages = [{"bot": "a", "prompt": [1, 2, 3], "reply": reply, "question": [5]},
                {"bot": "a", "prompt": [1, 2, 3], "reply": reply, "question": [5]},
                {"bot": "b", "prompt": [1, 2, 3], "reply": reply, "question": [5]}]
    # the conversation never holds 11, 12, 13 before they are said: one token per forward
    assert copy_bound(messages, "conversation", 64) == pytest.approx(15 / 15)
    # bot a's second reply copies its first after the prefill's token: 2 forwards; bot b has no memory
    assert copy_bound(messages, "memory", 64) == pytest.approx(15 / (5 + 2 + 5))
    # the token budget caps a step: 64 new tokens at most, so a draft of at most 62 after the first
    long = list(range(100, 170))
    again = [{"bot": "a", "prompt": [1], "reply": long, "question": []}] * 2
    assert copy_bound(again, "memory", 70) == pytest.approx(140 / (70 + 4))  # 1 + 33 + 33 + 3 tokens


@pytest.mark.parametrize("spec", ["lookup", "suffix", "suffix:wide", "suffix+lookup"])
def test_the_offline_replay_counts_the_forwards_the_engine_makes(tiny_target_dir, spec):
    """With drafts of up to 32 and no cost cut, the engine's forwards are the replay's, exactly."""
    engine = Engine(target=tiny_target_dir, drafter=spec, device="cpu", draft_length=FREE_DRAFT, prefix_cache=False)
    turns = [("a", "When are you open?"), ("b", "Hi"), ("a", "When are you open?"), ("a", "When are you open today?"),
             ("b", "Hi"), ("a", "When are you open?")]
    messages, tokens, forwards = [], 0, 0
    for bot, turn in turns:
        prompt = engine.encode([{"role": "system", "content": f"You are {bot}."}, {"role": "user", "content": turn}])
        new_ids, stats = engine.generate_ids(prompt, max_new_tokens=24, namespace=f"bot-{bot}")
        engine.remember(f"bot-{bot}", new_ids, question=turn)
        messages.append({"bot": bot, "prompt": prompt[0].tolist(), "reply": new_ids,
                         "question": engine.question_ids(turn)})
        tokens, forwards = tokens + len(new_ids), forwards + stats.target_forwards
    assert free_tokens_per_forward(spec, messages, 24) == pytest.approx(tokens / forwards)
    assert forwards < tokens  # something was accepted: the comparison is not between two plain loops


def test_the_replay_reports_its_headroom(tiny_target_dir, tmp_path):
    workload = tmp_path / "replay.jsonl"
    rows = [{"id": f"c{i}", "bot": "a", "system": "Be brief.", "turns": ["When are you open?"]} for i in range(3)]
    workload.write_text("".join(json.dumps(r) + "\n" for r in rows))
    methods = ["none", "lookup", "suffix", "suffix+lookup+recycle"]
    results = run_replay(load_replay(workload), target=tiny_target_dir, methods=methods,
                         max_new_tokens=16, device="cpu", out_dir=tmp_path / "out", progress=False)
    room = results["headroom"]
    # `none` drafts nothing to replay; recycling needs the target's logits
    assert set(room["free"]) == {"lookup", "suffix"}
    assert all(m["identical"] == m["prompts"] == 3 for m in results["methods"])
    assert room["bounds"]["memory"] >= room["bounds"]["conversation"] >= room["free"]["lookup"]
    assert room["bounds"]["memory"] >= room["free"]["suffix"]
    table = format_replay_table(results)
    assert "drafting headroom" in table and "copy bound" in table
    lines = table.splitlines()
    header = next(line for line in lines if line.startswith("method"))
    rows = [line for line in lines if line.split() and line.split()[0] in methods and not line.startswith(" ")]
    assert len(rows) == len(methods) and {len(row) for row in rows} == {len(header)}  # columns line up
    assert json.loads((tmp_path / "out" / "results.json").read_text())["headroom"] == room


def test_only_drafters_that_need_no_model_are_replayed():
    assert replayable("suffix+lookup") and replayable("lookup/fresh") and replayable("suffix:wide")
    assert not any(map(replayable, ["none", "hf_plain", "draft", "suffix+lookup+draft", "model:/x", "none/fresh"]))
    text = format_headroom({"free": {"lookup": 1.5, "suffix": 2.0}, "bounds": {"conversation": 2.5, "memory": 4.0},
                            "max_draft": 32}, {"lookup": 1.4})
    assert "1.33x (suffix)" in text and "2.67x" in text
