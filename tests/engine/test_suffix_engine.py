"""The engine with suffix and combined drafters: token-identical to the target alone, and useful."""

from __future__ import annotations

import itertools

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inference.engine.drafters import CombinedDrafter, PromptLookupDrafter, SuffixDrafter, make_drafter

EOS = [2]
_namespaces = itertools.count()


def drafter_spec(name: str, engine) -> str:
    return name.replace("model", engine.drafter_spec)


@st.composite
def histories(draw):
    """A question, and a bot's earlier replies: random ones, and maybe the target's own reply to
    this very question, perhaps with a token changed (so drafts are accepted, then rejected)."""
    question = draw(st.lists(st.integers(3, 258), min_size=1, max_size=12))
    earlier = draw(st.lists(st.tuples(st.lists(st.integers(3, 258), max_size=30),
                                      st.lists(st.integers(3, 258), max_size=8)), max_size=4))
    repeat = draw(st.sampled_from(["no", "same", "changed", "both"]))  # both: changed, then the real one (trees branch)
    change_at = draw(st.integers(0, 30))
    return question, earlier, repeat, change_at


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=histories(), drafter=st.sampled_from(["suffix", "suffix+lookup", "suffix+lookup+model", "suffix:tree",
                                                  "suffix:tree+lookup+model", "suffix:wide"]),
       k=st.sampled_from([None, None, 3]), max_new_tokens=st.integers(1, 40))
def test_it_matches_hf_greedy_over_random_histories(tiny_engine, hf_greedy, history, drafter, k, max_new_tokens):
    question, earlier, repeat, change_at = history
    namespace = f"random-{next(_namespaces)}"
    input_ids = torch.tensor([[1] + question + [2, 1, 50]])
    reference = hf_greedy(tiny_engine.model, input_ids, max_new_tokens, EOS)
    for reply, asked in earlier:
        tiny_engine.remember(namespace, reply, asked)
    if repeat != "no":
        reply = list(reference)
        if repeat in ("changed", "both") and reply:
            reply[change_at % len(reply)] = 3 + (reply[change_at % len(reply)] + 1) % 250
        tiny_engine.remember(namespace, reply, question + [2, 1, 50])
        if repeat == "both":
            tiny_engine.remember(namespace, reference, question + [2, 1, 50])
    tiny_engine.draft_length = k
    try:
        ours, stats = tiny_engine.generate_ids(input_ids, max_new_tokens=max_new_tokens, eos_token_ids=EOS,
                                               drafter=drafter_spec(drafter, tiny_engine), namespace=namespace)
    finally:
        tiny_engine.draft_length = None
        tiny_engine.memory.forget(namespace)
    assert ours == reference
    assert stats.new_tokens == len(ours) <= max_new_tokens


def test_it_drafts_a_repeated_answer_in_few_forwards(tiny_engine, hf_greedy):
    """Guards the property test against passing vacuously: a remembered reply is accepted whole.

    Drafts are taken as drafted: the cost cut (suffix.py) shortens them by c_verify(n) measured on
    this machine at this moment, which a busy full run makes dearer (CI once saw 5 forwards)."""
    tiny_engine.cost_aware_draft_length = False
    try:
        _drafts_a_repeated_answer(tiny_engine, hf_greedy)
    finally:
        tiny_engine.cost_aware_draft_length = True


def _drafts_a_repeated_answer(tiny_engine, hf_greedy):
    messages = [{"role": "user", "content": "When are you open on Sunday?"}]
    input_ids = tiny_engine.encode(messages)
    reference = hf_greedy(tiny_engine.model, input_ids, 48, EOS)
    first, _ = tiny_engine.generate_ids(input_ids, max_new_tokens=48, eos_token_ids=EOS, drafter="suffix",
                                        namespace="bot-open")
    tiny_engine.remember("bot-open", first, "When are you open on Sunday?")
    for drafter in ("suffix", "suffix+lookup"):
        ours, stats = tiny_engine.generate_ids(input_ids, max_new_tokens=48, eos_token_ids=EOS, drafter=drafter,
                                               namespace="bot-open")
        assert ours == first == reference
        assert stats.accepted >= len(ours) - 4, drafter
        assert stats.target_forwards <= 4, drafter  # 48 tokens, a handful of forwards
    other, stats = tiny_engine.generate_ids(input_ids, max_new_tokens=48, eos_token_ids=EOS, drafter="suffix",
                                            namespace="bot-closed")
    assert other == reference and stats.target_forwards > 8  # another bot learnt nothing from it
    tiny_engine.memory.forget("bot-open")


def test_it_learns_from_text_and_keeps_old_call_signatures(tiny_engine):
    messages = [{"role": "user", "content": "How much is a tune-up?"}]
    reply = tiny_engine.generate(messages, max_new_tokens=24, drafter="suffix")  # no namespace: conversation only
    tiny_engine.remember("bot-text", reply.token_ids, "How much is a tune-up?")
    tiny_engine.remember("bot-text", "Our tune-up is $79.", "And a tune-up?")
    assert tiny_engine.memory.get("bot-text").replies == 2
    again = tiny_engine.generate(messages, max_new_tokens=24, drafter="suffix", namespace="bot-text")
    assert again.token_ids == reply.token_ids and again.stats.accepted > 0
    streamed = "".join(tiny_engine.stream(messages, 24, 0.0, 0, 1.0, None, None, "suffix+lookup"))
    assert streamed == reply.text
    tiny_engine.memory.forget("bot-text")


def test_it_builds_combined_drafters_from_specs(tiny_engine):
    combined = make_drafter(f"suffix+lookup+{tiny_engine.drafter_spec}", tiny_engine.model, tiny_engine.tokenizer,
                            "cpu", None)
    assert isinstance(combined, CombinedDrafter)
    kinds = [type(m) for m in combined.members]
    assert kinds[:2] == [SuffixDrafter, PromptLookupDrafter] and combined.members[2].name.startswith("model:")


def test_combined_takes_the_longest_expected_proposal_and_asks_the_model_only_when_short(tiny_engine):
    combined = make_drafter(f"suffix+lookup+{tiny_engine.drafter_spec}", tiny_engine.model, tiny_engine.tokenizer,
                            "cpu", None)
    suffix, lookup, model = combined.members
    combined.set_index(None)
    repetitive = torch.tensor([[9, 20, 21, 22, 23, 24, 25, 26, 27, 28, 8, 20, 21, 22, 23, 24]])
    combined.begin(repetitive)
    draft, _ = combined.propose(repetitive, 16)
    assert combined.chosen is suffix and draft.tolist() == [25, 26, 27, 28, 8, 20, 21, 22, 23, 24][:len(draft)]
    assert model not in combined.asked  # cheap drafters were confident enough
    fresh = torch.tensor([[30, 31, 32, 33]])
    combined.begin(fresh)
    draft, _ = combined.propose(fresh, 16)
    assert model in combined.asked and combined.chosen is model and len(draft) > 0
    combined.update(0, fresh)


def test_the_engine_hands_the_suffix_drafter_the_targets_verify_cost(tiny_engine):
    from inference.engine.verify_cost import verify_cost

    messages = [{"role": "user", "content": "abcabcabc"}]
    suffix = tiny_engine.get_drafter("suffix")
    tiny_engine.generate(messages, max_new_tokens=8, drafter="suffix")
    assert suffix.cost is verify_cost(tiny_engine.model)  # adaptive: drafts are cut by c_verify
    combined = tiny_engine.get_drafter("suffix+lookup")
    tiny_engine.generate(messages, max_new_tokens=8, drafter="suffix+lookup")
    assert combined.members[0].cost is verify_cost(tiny_engine.model)
    tiny_engine.draft_length = 8
    try:
        tiny_engine.generate(messages, max_new_tokens=8, drafter="suffix")
    finally:
        tiny_engine.draft_length = None
    assert suffix.cost is None  # a pinned draft length: no cut
