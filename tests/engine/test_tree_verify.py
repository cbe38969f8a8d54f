"""Draft trees: several continuations verified in one target forward (greedy).

The suffix drafter branches where a bot's earlier replies went different ways after the
matched text; the target sees the tree flattened after the last token, each node at the
position of its depth and attending only to the cache and its own ancestors. The accepted
path's keys/values then move into place, so the cache reads as if the path alone had been
verified. Output stays token-identical to the target alone.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inference.engine.drafters import SuffixDrafter, SuffixIndex, make_drafter
from inference.engine.drafters.suffix import ShareCalibration
from inference.engine.forward import (cache_argument, crop, extend, extend_tree, keep_path, new_cache, prefill,
                                      tree_layout, tree_supported)
from inference.engine.kernels import missing_cpu_flags
from inference.engine.verify import verify_greedy_tree

needs_kernels = pytest.mark.skipif(bool(missing_cpu_flags()), reason=f"this CPU lacks {missing_cpu_flags()}")

EOS = [2]
_namespaces = itertools.count()


def one_hot_logits(tokens, vocab=10):
    logits = torch.full((len(tokens), vocab), -1.0)
    logits[torch.arange(len(tokens)), torch.tensor(tokens)] = 1.0
    return logits


def test_verify_follows_the_branch_the_target_takes():
    # root -> 5 (node 0) -> 6 (node 1); root -> 7 (node 2) -> 8 (node 3) -> 9 (node 4)
    drafts, parents = torch.tensor([5, 6, 7, 8, 9]), [-1, 0, -1, 2, 3]
    # the target says 7 after the root, 8 after node 2, 1 after node 3 (rows of nodes 0, 1, 4: unused)
    logits = one_hot_logits([7, 0, 0, 8, 1, 0])
    assert verify_greedy_tree(drafts, parents, logits) == ([7, 8, 1], [2, 3])
    # nothing matches: just the target's own token
    assert verify_greedy_tree(drafts, parents, one_hot_logits([4, 0, 0, 0, 0, 0])) == ([4], [])
    # the whole second branch, plus a bonus token after its leaf
    assert verify_greedy_tree(drafts, parents, one_hot_logits([7, 0, 0, 8, 9, 3])) == ([7, 8, 9, 3], [2, 3, 4])


def test_the_layout_puts_each_node_at_its_depth_seeing_only_its_ancestors():
    positions, allowed = tree_layout([-1, 0, -1, 2], start=3, device="cpu")
    assert positions.tolist() == [[3, 4, 5, 4, 5]]
    block = allowed[:, 3:].int().tolist()
    assert block == [[1, 0, 0, 0, 0],
                     [1, 1, 0, 0, 0],
                     [1, 1, 1, 0, 0],
                     [1, 0, 0, 1, 0],
                     [1, 0, 0, 1, 1]]
    assert allowed[:, :3].all()  # every row sees the whole cache


def _chain_logits(model, prompt, path_tokens):
    """Logits after each prefix of `path_tokens` (given the prompt), by plain causal forwards."""
    cache_arg, cache = cache_argument(model), new_cache(model, 64)
    with torch.inference_mode():
        first = prefill(model, cache_arg, cache, prompt)
        rest = extend(model, cache_arg, cache, torch.tensor([path_tokens]), prompt.shape[1], len(path_tokens))
    return first[0, -1], rest[0], cache


# A prompt, the last token, and a tree of drafts after it: node i's parent is PARENTS[i] (-1: the
# last token); PATHS maps each node to the drafts on its path (-1: none, the last token's row).
PROMPT, LAST = torch.tensor([[1, 40, 41, 42, 43, 44, 2, 1, 50]]), 60
DRAFTS, PARENTS = [61, 62, 63, 71, 72, 81], [-1, 0, 1, -1, 3, 3]
PATHS = {-1: [], 0: [61], 1: [61, 62], 2: [61, 62, 63], 3: [71], 4: [71, 72], 5: [71, 81]}


def _tree_forward(model):
    """(logits [T, V] of the tree forward after PROMPT, the cache it left, where the block starts)."""
    cache_arg, cache = cache_argument(model), new_cache(model, 64)
    with torch.inference_mode():
        prefill(model, cache_arg, cache, PROMPT)
        start = PROMPT.shape[1]
        logits = extend_tree(model, cache, torch.tensor([[LAST] + DRAFTS]), start, PARENTS)[0]
    return logits, cache, start


def test_a_tree_forward_gives_each_path_its_own_chain_logits_and_cache(tiny_engine):
    model = tiny_engine.model
    before = model.config._attn_implementation  # put back below: engines of other tests share the model
    for implementation in ("sdpa", "eager"):
        model.set_attn_implementation(implementation)
        assert tree_supported(model)
        tree_logits, cache, start = _tree_forward(model)
        # row of each node == the chain forward of its path (within float noise)
        for node, path in PATHS.items():
            _, chain, _ = _chain_logits(model, PROMPT, [LAST] + path)
            torch.testing.assert_close(tree_logits[node + 1], chain[-1], atol=1e-5, rtol=1e-5)
        # accept 71 -> 81: the cache then equals the cache of the chain [LAST, 71, 81]
        with torch.inference_mode():
            keep_path(cache, start, [3, 5])
        crop(cache, start + 3)
        _, _, chain_cache = _chain_logits(model, PROMPT, [LAST, 71, 81])
        for ours, theirs in zip(cache.layers, chain_cache.layers):
            torch.testing.assert_close(ours.keys, theirs.keys, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(ours.values, theirs.values, atol=1e-5, rtol=1e-5)
    model.set_attn_implementation(before)


def _paths(drafts: list[int], parents: list[int]) -> set[tuple[int, ...]]:
    """Every root-to-node path of a drafted tree."""
    paths = set()
    for i in range(len(drafts)):
        path, node = [], i
        while node != -1:
            path.insert(0, drafts[node])
            node = parents[node]
        paths.add(tuple(path))
    return paths


def test_the_suffix_drafter_branches_where_earlier_replies_differ():
    index = SuffixIndex()
    question = [10, 11, 12, 13, 14, 15, 16, 17]
    index.add([20, 21, 22, 23, 24, 25], question)
    index.add([20, 21, 30, 31, 32, 33], question)  # went another way after "20 21"
    drafter = SuffixDrafter(tree_width=4)
    drafter.set_index(index)
    drafter.begin(None)
    ids = torch.tensor([[1] + question + [20]])
    drafts, parents = drafter.propose_tree(ids, 16)
    drafts = drafts.tolist()
    assert drafts[0] == 21 and all(-1 <= p < i for i, p in enumerate(parents))
    paths = _paths(drafts, parents)
    assert (21, 22, 23) in paths and (21, 30, 31) in paths  # both earlier continuations
    # the default drafts chains: one continuation
    chain = SuffixDrafter()
    chain.set_index(index)
    chain.begin(None)
    chain_drafts, chain_parents = chain.propose_tree(ids, 16)
    assert chain_parents == list(range(-1, len(chain_parents) - 1))
    assert not (22 in chain_drafts.tolist() and 30 in chain_drafts.tolist())
    assert not chain.drafts_trees and make_drafter("suffix:16,tree", None, None, "cpu", torch.float32).tree_width == 4


def test_wide_trees_also_draft_what_followed_shorter_contexts():
    """After "5 6" the bot said "7 8 9"; after another "6" it said "60 61 62". A tree over the
    longest match only drafts the first; a wide tree drafts both, and what the conversation
    itself said after "6" (a local copy) too."""
    index = SuffixIndex()
    index.add([5, 6, 7, 8, 9])
    index.add([50, 6, 60, 61, 62])
    ids = torch.tensor([[1, 2, 6, 70, 71, 3, 5, 6]])  # the conversation: "6 70 71" earlier
    trees = {}
    for name, drafter in (("tree", SuffixDrafter(tree_width=4)), ("wide", SuffixDrafter(wide=True))):
        drafter.set_index(index)
        drafter.begin(None)
        drafts, parents = drafter.propose_tree(ids, 16)
        assert all(-1 <= p < i for i, p in enumerate(parents))
        trees[name] = _paths(drafts.tolist(), parents)
    assert (7, 8, 9) in trees["tree"] and not any(60 in path or 70 in path for path in trees["tree"])
    assert {(7, 8, 9), (60, 61, 62), (70, 71)} <= trees["wide"]
    assert make_drafter("suffix:wide", None, None, "cpu", torch.float32).drafts_trees


def test_wide_tree_calibration_scores_only_what_the_target_decided():
    """Each node is scored given its parent: right or wrong where the target's tokens reach its
    depth, nothing under a wrong parent or past what the target said."""
    def scored(truth):
        calibration = ShareCalibration(prior_trials=0.0, decay=1.0)
        # 5 -> 6 -> 8 and 5 -> 7, after 3 tokens; shares 0.95, 0.55, 0.35, 0.15 (one bucket each)
        calibration.drafted(3, [5, 6, 7, 8], [-1, 0, 0, 1], [0.95, 0.55, 0.35, 0.15])
        calibration.learn(torch.tensor([[1, 2, 3] + truth]))
        return {b: (calibration.hits[b], calibration.trials[b]) for b in range(10) if calibration.trials[b]}

    assert scored([5, 6, 9]) == {9: (1, 1), 5: (1, 1), 3: (0, 1), 1: (0, 1)}  # 8 is wrong: the target said 9
    assert scored([5]) == {9: (1, 1)}  # the target stopped after 5: 6, 7, 8 unknown
    assert scored([4, 6]) == {9: (0, 1)}  # 5 wrong: its subtree is not scored
    calibration = ShareCalibration()
    assert calibration.estimate(0.95) > calibration.estimate(0.5) > calibration.estimate(0.05)


def test_the_engine_takes_the_second_branch_in_one_forward_and_stays_identical(tree_attention, tiny_engine, hf_greedy):
    """A bot gave a changed reply, then the real one: a chain drafts the first and is cut at the
    change; a tree drafts both, and its first verify step gets past the change."""
    from inference.engine.stats import GenerationStats

    question = [1, 70, 71, 72, 73, 74, 75, 2, 1, 50]
    input_ids = torch.tensor([question])
    reference = hf_greedy(tiny_engine.model, input_ids, 40, EOS)
    assert len(reference) >= 20
    changed = list(reference)
    changed[3] = next(t for t in range(3, 250) if t != reference[3])
    first_step = {}
    tiny_engine.cost_aware_draft_length = False  # the drafts as drafted: a verify costs ~nothing (a GPU)
    for spec in ("suffix:tree", "suffix", "suffix:tree+lookup", "suffix:wide"):
        namespace = f"tree-{spec}"
        for reply in (changed, reference):
            tiny_engine.remember(namespace, reply, question[1:])
        try:
            steps = list(tiny_engine.decode_steps(input_ids, 40, 0.0, 0, 1.0, None, spec, EOS, GenerationStats(),
                                                  namespace))
        finally:
            tiny_engine.memory.forget(namespace)
        assert [t for step in steps for t in step] == reference, spec
        first_step[spec] = len(steps[1])  # steps[0]: the prompt's token
    tiny_engine.cost_aware_draft_length = True
    assert first_step["suffix"] <= 3 < first_step["suffix:tree"], first_step  # the chain stops at the change
    assert first_step["suffix:tree+lookup"] > 3 and first_step["suffix:wide"] > 3, first_step


@pytest.mark.parametrize("dtype", ["int8", "int4", pytest.param("int4a8", marks=needs_kernels)])
def test_row_invariant_trees_give_each_path_its_chains_logits_and_cache_bit_for_bit(tiny_target_dir, dtype):
    """Where speculation is lossless by construction (row-invariant attention: packed fp32, int8,
    int4), a tree forward gives each node exactly the logits of its path's chain, and the block's
    keys/values are left as the forward wrote them."""
    from inference.engine import Engine

    engine = Engine(target=tiny_target_dir, drafter="suffix:wide", device="cpu", dtype=dtype, prefix_cache=False)
    model = engine.model
    assert model.config._attn_implementation == "row_invariant" and tree_supported(model)
    tree_logits, cache, start = _tree_forward(model)
    for node, path in PATHS.items():
        _, chain, chain_cache = _chain_logits(model, PROMPT, [LAST] + path)
        assert torch.equal(tree_logits[node + 1], chain[-1]), node
        if node in (-1, 5):  # the block after the forward: row 0 and node 5 where the forward put them
            at = start + node + 1
            for ours, theirs in zip(cache.layers, chain_cache.layers):
                assert torch.equal(ours.keys[..., at, :], theirs.keys[..., start + len(path), :])
    with torch.inference_mode():
        keep_path(cache, start, [3, 5])
    crop(cache, start + 3)
    _, _, chain_cache = _chain_logits(model, PROMPT, [LAST, 71, 81])
    for ours, theirs in zip(cache.layers, chain_cache.layers):
        assert torch.equal(ours.keys, theirs.keys) and torch.equal(ours.values, theirs.values)


@pytest.mark.parametrize("dtype", ["int8", "int4", pytest.param("int4a8", marks=needs_kernels)])
def test_row_invariant_trees_stay_lossless_in_the_engine(tiny_target_dir, dtype):
    from inference.engine import Engine
    from inference.engine.stats import GenerationStats

    engine = Engine(target=tiny_target_dir, drafter="suffix:wide", device="cpu", dtype=dtype)
    engine.cost_aware_draft_length = False  # the widest trees
    question = [1, 70, 71, 72, 73, 74, 75, 2, 1, 50]
    input_ids = torch.tensor([question])
    plain, _ = engine.generate_ids(input_ids, max_new_tokens=30, eos_token_ids=EOS, drafter="none")
    changed = list(plain)
    changed[3] = next(t for t in range(3, 250) if t != plain[3])
    for reply in (changed, plain):
        engine.remember("rows", reply, question[1:])
    steps = list(engine.decode_steps(input_ids, 30, 0.0, 0, 1.0, None, "suffix:wide", EOS, GenerationStats(), "rows"))
    assert [t for step in steps for t in step] == plain
    assert len(steps[1]) > 3  # the tree got past the changed token in its first step: really a tree
    for _ in range(2):  # recycled trees too (the second time from the first time's forwards), grafted
        recycled, stats = engine.generate_ids(input_ids, max_new_tokens=30, eos_token_ids=EOS,
                                              drafter="suffix+recycle", namespace="rows")
        assert recycled == plain
    assert stats.accepted > 0


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(question=st.lists(st.integers(3, 258), min_size=1, max_size=10),
       variants=st.lists(st.tuples(st.integers(0, 39), st.integers(3, 258)), min_size=1, max_size=4),
       order=st.randoms(use_true_random=False), max_new_tokens=st.integers(2, 40))
def test_trees_match_hf_greedy_over_branching_histories(tree_attention, tiny_engine, hf_greedy, question, variants,
                                                        order, max_new_tokens):
    """The bot said the reply and variants of it (one token changed each), in random order: the
    suffix index branches at every change, and the output is still the target's alone."""
    input_ids = torch.tensor([[1] + question + [2, 1, 50]])
    reference = hf_greedy(tiny_engine.model, input_ids, max_new_tokens, EOS)
    replies = [list(reference)]
    for at, token in variants:
        reply = list(reference)
        if reply:
            reply[at % len(reply)] = token
        replies.append(reply)
    order.shuffle(replies)
    namespace = f"trees-{next(_namespaces)}"
    for reply in replies:
        tiny_engine.remember(namespace, reply, question + [2, 1, 50])
    tiny_engine.cost_aware_draft_length = False  # no cost cut and no probability floor: the widest trees
    tiny_engine.get_drafter("suffix:tree").min_prob = 0.0
    tiny_engine.get_drafter("suffix:wide").min_wide_share = 0.0
    try:
        for spec in ("suffix:tree", "suffix:wide"):
            ours, stats = tiny_engine.generate_ids(input_ids, max_new_tokens=max_new_tokens, eos_token_ids=EOS,
                                                   drafter=spec, namespace=namespace)
            assert ours == reference, spec
            assert stats.new_tokens == len(ours)
    finally:
        tiny_engine.cost_aware_draft_length = True
        tiny_engine.get_drafter("suffix:tree").min_prob = SuffixDrafter().min_prob
        tiny_engine.get_drafter("suffix:wide").min_wide_share = SuffixDrafter().min_wide_share
        tiny_engine.memory.forget(namespace)
