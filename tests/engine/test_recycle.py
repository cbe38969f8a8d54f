"""Token Recycling (recycle.py): drafts from the target's own earlier predictions.

Lossless whatever it drafts (greedy output == the target's alone, chains and trees, alone and
grafted onto suffix drafts), useful where the target has predicted after a token before, bounded,
and never drafting from another namespace's forwards."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inference.engine.drafters import CombinedDrafter, RecycleDrafter, RecycleMemory, RecycleTable, make_drafter
from inference.engine.forward import tree_supported
from inference.engine.headroom import replayable
from inference.engine.stats import GenerationStats

EOS = [2]
_namespaces = itertools.count()


def logits_for(rows: list[list[int]], vocab: int = 20) -> torch.Tensor:
    """[n, vocab]: row i ranks rows[i] first, second, ... (falling logits), the rest below."""
    logits = torch.full((len(rows), vocab), -5.0)
    for i, ranked in enumerate(rows):
        for rank, token in enumerate(ranked):
            logits[i, token] = 4.0 - rank
    return logits


def test_the_table_keeps_each_tokens_latest_top_successors_with_their_probabilities():
    table = RecycleTable()
    table.observe([5, 6], logits_for([[7, 8], [9]]))
    successors, probs = table.get(5)
    assert successors[:2] == (7, 8) and len(successors) == 8
    assert probs[0] > probs[1] > probs[2] and sum(probs) < 1.0
    assert probs[0] == pytest.approx(torch.softmax(logits_for([[7, 8]])[0], -1)[7].item())
    table.observe([5], logits_for([[3]]))  # read again: the newer prediction replaces the older
    assert table.get(5)[0][0] == 3 and table.get(6)[0][0] == 9
    assert table.get(4) is None


def test_the_drafter_walks_the_stored_predictions_best_first_and_cuts_them_by_the_verify_cost():
    drafter = RecycleDrafter()
    drafter.table.observe([1, 2, 3, 4], logits_for([[2, 9], [3], [4], [5]]))
    ids = torch.tensor([[0, 1]])
    tokens, parents = drafter.propose_tree(ids, 6)
    assert tokens.tolist()[:4] == [2, 3, 4, 5] and parents[:4] == [-1, 0, 1, 2]  # the chain of top-1s first
    assert len(tokens) == 6 and all(p < i for i, p in enumerate(parents))
    chain, _ = drafter.propose(ids, 6)
    assert chain.tolist() == [2, 3, 4, 5]  # 5's successors are unknown: the chain ends there
    drafter.set_cost(lambda n: 1.0 + 10.0 * n)  # each node dearer than a whole step
    assert drafter.propose_tree(ids, 6)[0].numel() == 0 and drafter.propose(ids, 6)[0].numel() == 0
    drafter.set_cost(lambda n: 1.0)  # free: everything drafted
    assert len(drafter.propose_tree(ids, 32)[0]) > 6


def test_grafting_merges_a_recycled_tree_onto_another_drafters_tree_as_a_trie():
    drafter = RecycleDrafter()
    drafter.table.observe([1, 2, 3], logits_for([[2, 7], [3], [4]]))
    base, base_parents = torch.tensor([2, 3, 6]), [-1, 0, 1]  # the suffix drafter's chain: 2 3 6
    tokens, parents = drafter.graft(torch.tensor([[0, 1]]), 8, base, base_parents, base_score=2.0)
    tokens = tokens.tolist()
    assert tokens[:3] == [2, 3, 6] and parents[:3] == [-1, 0, 1]  # the base, untouched
    paths = set()
    for i, (token, parent) in enumerate(zip(tokens, parents)):
        assert parent < i
        path = (paths_of(tokens, parents, parent) if parent >= 0 else ()) + (token,)
        assert path not in paths  # no node twice: a recycled path the base holds is the base's
        paths.add(path)
    assert (2, 3, 4) in paths and (7,) in paths  # the recycled 3 -> 4 hangs under the base's 3; 7 a new branch
    assert len(tokens) <= 8


def paths_of(tokens, parents, node):
    path = []
    while node >= 0:
        path.append(tokens[node])
        node = parents[node]
    return tuple(reversed(path))


def test_the_memory_is_bounded_in_tokens_and_namespaces_and_forgets():
    memory = RecycleMemory(max_tokens=40, max_namespaces=3)
    table = memory.table("bot-1")
    table.observe(list(range(100)), torch.randn(100, 120))
    assert 0 < len(table) <= 40 and table.get(99) is not None and table.get(0) is None  # the oldest went
    for n in range(2, 6):
        memory.table(f"bot-{n}")
    assert len(memory.tables) == 3 and "bot-1" not in memory.tables
    memory.forget("bot-5")
    assert "bot-5" not in memory.tables
    assert memory.table(None) is not memory.table(None)  # no namespace: a table per request


def test_specs_parse_and_the_headroom_skips_recycling():
    assert isinstance(make_drafter("recycle", None, None, "cpu", torch.float32), RecycleDrafter)
    assert make_drafter("recycle:12", None, None, "cpu", torch.float32).max_draft_length == 12
    combined = make_drafter("suffix+recycle", None, None, "cpu", torch.float32)
    assert isinstance(combined, CombinedDrafter) and combined.wants_logits
    assert not make_drafter("suffix+lookup", None, None, "cpu", torch.float32).wants_logits
    with pytest.raises(Exception, match="recycle drafter option"):
        make_drafter("recycle:wide", None, None, "cpu", torch.float32)
    assert not replayable("suffix+recycle") and not replayable("recycle:16") and replayable("suffix+lookup")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(question=st.lists(st.integers(3, 258), min_size=1, max_size=12),
       earlier=st.lists(st.lists(st.integers(3, 258), min_size=1, max_size=12), max_size=3),
       spec=st.sampled_from(["recycle", "suffix+recycle", "suffix+lookup+recycle", "recycle:5", "suffix+recycle+model"]),
       trees=st.booleans(), max_new_tokens=st.integers(1, 40))
def test_it_matches_hf_greedy_over_random_histories(tiny_engine, hf_greedy, question, earlier, spec, trees,
                                                    max_new_tokens):
    """Earlier requests of the namespace fill its table (a repeated question's predictions among
    them); drafts cut by nothing (the widest trees); chains as where a target cannot verify trees."""
    namespace = f"recycle-{next(_namespaces)}"
    spec = spec.replace("model", tiny_engine.drafter_spec)  # the tiny draft model
    input_ids = torch.tensor([[1] + question + [2, 1, 50]])
    reference = hf_greedy(tiny_engine.model, input_ids, max_new_tokens, EOS)
    model = tiny_engine.model
    before = model.config._attn_implementation
    model.set_attn_implementation("sdpa")
    assert tree_supported(model)
    drafter = tiny_engine.get_drafter(spec)
    recyclers = [m for m in getattr(drafter, "members", [drafter]) if isinstance(m, RecycleDrafter)]
    for recycler in recyclers:
        recycler.drafts_trees = trees
    assert drafter.drafts_trees == trees
    tiny_engine.cost_aware_draft_length = False
    try:
        for asked in earlier + [question]:
            earlier_ids = torch.tensor([[1] + asked + [2, 1, 50]])
            tiny_engine.generate_ids(earlier_ids, max_new_tokens=16, eos_token_ids=EOS, drafter=spec,
                                     namespace=namespace)
        ours, stats = tiny_engine.generate_ids(input_ids, max_new_tokens=max_new_tokens, eos_token_ids=EOS,
                                               drafter=spec, namespace=namespace)
    finally:
        model.set_attn_implementation(before)
        tiny_engine.cost_aware_draft_length = True
        tiny_engine.recycled.forget(namespace)
        for recycler in recyclers:
            del recycler.drafts_trees
    assert ours == reference
    assert stats.new_tokens == len(ours) <= max_new_tokens


def test_a_repeated_question_is_drafted_from_the_first_answers_forwards(tree_attention, hf_greedy):
    """Guards the property test against passing vacuously: the second time, the target's own
    predictions from the first answer are accepted, in far fewer forwards."""
    engine = tree_attention
    input_ids = torch.tensor([[1, 70, 71, 72, 73, 74, 2, 1, 50]])
    reference = hf_greedy(engine.model, input_ids, 40, EOS)
    engine.cost_aware_draft_length = False
    try:
        first, cold = engine.generate_ids(input_ids, max_new_tokens=40, eos_token_ids=EOS, drafter="recycle",
                                          namespace="recycle-repeat")
        again, warm = engine.generate_ids(input_ids, max_new_tokens=40, eos_token_ids=EOS, drafter="recycle",
                                          namespace="recycle-repeat")
    finally:
        engine.cost_aware_draft_length = True
        engine.recycled.forget("recycle-repeat")
    assert first == again == reference and len(reference) >= 20
    assert warm.accepted > cold.accepted and warm.target_forwards < cold.target_forwards
    assert warm.target_forwards <= len(reference) // 2


def test_what_one_namespace_taught_never_drafts_anothers(tree_attention):
    """A request in bot-b drafts exactly the same whether or not bot-a's requests ran before it."""
    engine = tree_attention
    a_prompt = torch.tensor([[1, 80, 81, 82, 83, 2, 1, 50]])
    b_prompt = torch.tensor([[1, 90, 91, 92, 93, 2, 1, 50]])

    def drafted_in_b() -> list[list[int]]:
        steps = list(engine.decode_steps(b_prompt, 30, 0.0, 0, 1.0, None, "suffix+recycle", EOS, GenerationStats(),
                                         "bot-b"))
        engine.recycled.forget("bot-b")
        engine.memory.forget("bot-b")
        return steps

    engine.cost_aware_draft_length = False
    drafter = engine.get_drafter("suffix+recycle")
    recycler = next(m for m in drafter.members if isinstance(m, RecycleDrafter))
    seen: list[list[int]] = []
    observe = recycler.observe
    recycler.observe = lambda tokens, logits: (seen.append(tokens.tolist()), observe(tokens, logits))
    try:
        alone = drafted_in_b()
        b_tokens = [t for step in seen for t in step]
        for _ in range(2):
            engine.generate_ids(a_prompt, max_new_tokens=30, eos_token_ids=EOS, drafter="suffix+recycle",
                                namespace="bot-a")
        seen.clear()
        after_a = drafted_in_b()
        assert [t for step in seen for t in step] == b_tokens  # the same forwards, row for row
        assert engine.recycled.table("bot-a") is not engine.recycled.table("bot-b")
    finally:
        recycler.observe = observe
        engine.cost_aware_draft_length = True
        engine.recycled.forget("bot-a")
    assert after_a == alone


def test_in_a_combination_a_member_is_told_only_what_it_drafted_and_the_draft_model_waits_for_need(
        tree_attention, hf_greedy):
    """recycle+model: the recycled tree is grafted onto the draft model's chain. A draft model told
    that the target took tokens a recycled branch drafted would keep its own rejected drafts in its
    cache; and the model runs only where the recycled tree expects less than a token."""
    engine = tree_attention
    spec = f"recycle+{engine.drafter_spec}"
    model = next(m for m in engine.get_drafter(spec).members if m.name.startswith("model:"))
    input_ids = torch.tensor([[1, 60, 61, 62, 63, 64, 2, 1, 50]])
    reference = hf_greedy(engine.model, input_ids, 40, EOS)
    last, told, asked = {}, [], []
    propose, update = model.propose, model.update

    def spy_propose(ids, k):
        out = propose(ids, k)
        last["draft"] = (ids.shape[1], out[0].tolist())
        asked.append(ids.shape[1])
        return out

    def spy_update(num_accepted, ids_after):
        if num_accepted:
            start, own = last["draft"]
            told.append(own[:num_accepted] == ids_after[0, start:start + num_accepted].tolist())
        update(num_accepted, ids_after)

    model.propose, model.update = spy_propose, spy_update
    engine.cost_aware_draft_length = False
    steps = 0
    try:
        for _ in range(3):  # the namespace's table warms up: the same question again
            ours, stats = engine.generate_ids(input_ids, max_new_tokens=40, eos_token_ids=EOS, drafter=spec,
                                              namespace="recycle-model")
            assert ours == reference
            steps += stats.target_forwards - 1  # (the prefill drafts nothing)
    finally:
        del model.propose, model.update
        engine.cost_aware_draft_length = True
        engine.recycled.forget("recycle-model")
    assert told and all(told)
    assert len(asked) < steps


def test_no_table_is_made_for_drafters_that_do_not_recycle(tiny_engine):
    tiny_engine.generate_ids(torch.tensor([[1, 70, 71, 2, 1, 50]]), max_new_tokens=4, eos_token_ids=EOS,
                             drafter="suffix+lookup", namespace="no-recycling")
    tiny_engine.memory.forget("no-recycling")
    assert "no-recycling" not in tiny_engine.recycled.tables
