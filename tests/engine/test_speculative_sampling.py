"""Speculative sampling (Leviathan et al. 2023, Alg. 1) reproduces the target distribution."""

from __future__ import annotations

import pytest
import torch

from inference.engine.sampling import SamplingParams, probs_from_logits
from inference.engine.verify import accept_probability, verify_sampling

P = torch.tensor([[0.50, 0.20, 0.15, 0.10, 0.05, 0.00],
                  [0.05, 0.05, 0.10, 0.20, 0.25, 0.35]])  # target p at positions 1, 2
Q = torch.tensor([[0.05, 0.10, 0.15, 0.20, 0.20, 0.30],
                  [0.30, 0.30, 0.20, 0.10, 0.05, 0.05]])  # draft q: far from p (TV 0.45, 0.55)
BONUS = torch.tensor([[1 / 6] * 6])


def tv(counts: torch.Tensor, p: torch.Tensor) -> float:
    return 0.5 * (counts / counts.sum() - p).abs().sum().item()


def run(accept_rule, trials: int = 6000) -> tuple[torch.Tensor, torch.Tensor]:
    """Counts of the 1st emitted token, and of the 2nd given the 1st draft was accepted."""
    generator = torch.Generator().manual_seed(1234)
    target = torch.cat([P, BONUS])  # [k+1, V], k = 2
    first, second = torch.zeros(6), torch.zeros(6)
    for _ in range(trials):
        draft = torch.multinomial(Q, 1, generator=generator).squeeze(-1)  # [2] ~ q
        emitted = verify_sampling(draft, Q, target, generator, accept_rule=accept_rule)
        first[emitted[0]] += 1
        if len(emitted) >= 2:
            second[emitted[1]] += 1
    return first, second


def test_it_reproduces_the_target_distribution_at_every_position():
    first, second = run(accept_probability)
    assert tv(first, P[0]) < 0.03
    assert tv(second, P[1]) < 0.04


def test_a_broken_acceptance_rule_is_detected():
    """Always accepting (or accepting only when p >= q) leaks the draft's q into the output."""
    always_first, _ = run(lambda p, q: torch.ones_like(p), trials=2000)
    assert tv(always_first, P[0]) > 0.3
    greedyish_first, _ = run(lambda p, q: (p >= q).float(), trials=2000)
    assert tv(greedyish_first, P[0]) > 0.1


def test_a_deterministic_drafter_uses_one_hot_q():
    """Lookup drafts (q=None) are accepted with probability p(x); the output still follows p."""
    generator = torch.Generator().manual_seed(7)
    counts = torch.zeros(6)
    for _ in range(4000):
        emitted = verify_sampling(torch.tensor([5]), None, torch.cat([P[:1], BONUS]), generator)
        counts[emitted[0]] += 1
    assert counts[5] == 0  # p(5) = 0: never accepted
    assert tv(counts, P[0]) < 0.03


def test_top_k_and_top_p_shape_p_and_q_alike():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0, -1.0]])
    top2 = probs_from_logits(logits, SamplingParams(temperature=1.0, top_k=2))
    assert (top2[0, 2:] == 0).all() and torch.isclose(top2.sum(), torch.tensor(1.0))
    nucleus = probs_from_logits(logits, SamplingParams(temperature=1.0, top_p=0.7))
    assert (nucleus[0] > 0).tolist() == [True, True, False, False, False]
    cold = probs_from_logits(logits, SamplingParams(temperature=0.1))
    assert cold[0, 0] > 0.99


@pytest.mark.parametrize("drafter", [None, "recycle"], ids=["model", "recycle"])
def test_the_engine_samples_from_the_target_with_a_drafter(tiny_engine, drafter):
    """Joint law of the first two tokens (the 2nd goes through draft + verify) equals the target's:
    with a draft model (q its distribution), and with recycled predictions (one namespace, so its
    table knows the first tokens after a few trials; q one-hot)."""
    prompt = torch.tensor([[5, 6, 7, 8, 9, 5, 6]])
    params = SamplingParams(temperature=1.0, top_k=3)
    with torch.inference_mode():
        p1 = probs_from_logits(tiny_engine.model(prompt).logits[0, -1], params)  # [V]
        candidates = p1.nonzero().squeeze(-1)  # [3]
        batch = torch.cat([prompt.repeat(len(candidates), 1), candidates[:, None]], dim=1)  # [3, S+1]
        p2 = probs_from_logits(tiny_engine.model(batch).logits[:, -1], params)  # [3, V]
    exact = {(int(a), int(b)): float(p1[a] * p2[i, b]) for i, a in enumerate(candidates) for b in p2[i].nonzero()}
    counts: dict[tuple[int, int], int] = {}
    drafted = 0
    trials = 300
    tiny_engine.draft_length = 2
    try:
        for seed in range(trials):
            ids, stats = tiny_engine.generate_ids(prompt, max_new_tokens=4, temperature=1.0, top_k=3, seed=seed,
                                                  eos_token_ids=[], drafter=drafter, namespace="sampling")
            counts[(ids[0], ids[1])] = counts.get((ids[0], ids[1]), 0) + 1
            drafted += stats.drafted
    finally:
        tiny_engine.draft_length = None
        tiny_engine.recycled.forget("sampling")
    assert drafted > 0
    distance = 0.5 * sum(abs(counts.get(key, 0) / trials - prob) for key, prob in exact.items())
    distance += 0.5 * sum(c / trials for key, c in counts.items() if key not in exact)
    assert distance < 0.1


def test_same_seed_same_reply_different_seed_different_reply(tiny_engine):
    prompt = torch.tensor([[5, 6, 7, 8, 9]])
    runs = [tiny_engine.generate_ids(prompt, max_new_tokens=12, temperature=1.0, seed=s, eos_token_ids=[])[0]
            for s in (1, 1, 2)]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
