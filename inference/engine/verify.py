"""Verification of k draft tokens against one target forward — both rules are lossless.

Greedy: accept the longest prefix of the draft equal to the target's argmax, then append
the target's own argmax at the first disagreement (correction) or after the last draft
token (bonus). The output is exactly what plain greedy decoding would produce.

Sampling: speculative sampling, Leviathan et al. 2023 ("Fast Inference from Transformers
via Speculative Decoding"), Algorithm 1:
    for i in 1..k:  accept x_i with probability min(1, p_i(x_i) / q_i(x_i))
    first rejection at i: emit x ~ norm(max(0, p_i - q_i)) and stop
    all accepted:         emit a bonus x ~ p_{k+1}
Each emitted token is then distributed exactly as the target's p. A deterministic
drafter (prompt lookup) has q_i = one-hot(x_i), so acceptance is p_i(x_i) and the residual
is p_i with x_i removed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .sampling import sample


def verify_greedy(draft_ids: torch.Tensor, target_logits: torch.Tensor) -> list[int]:
    """draft_ids: [k], target_logits: [k+1, V] -> emitted tokens (accepted prefix + 1), len n+1."""
    target_ids = target_logits.argmax(dim=-1).tolist()  # [k+1], one device sync
    drafted = draft_ids.tolist()
    n = 0
    while n < len(drafted) and drafted[n] == target_ids[n]:
        n += 1
    return drafted[:n] + [target_ids[n]]


def verify_greedy_tree(draft_ids: torch.Tensor, parents: list[int], target_logits: torch.Tensor) -> tuple[list[int], list[int]]:
    """A draft tree (node i: draft_ids[i] after node parents[i], -1 = the last token) against
    target_logits [n+1, V] (row 0: after the last token, row i+1: after node i). From the root,
    follow the child whose token is the target's argmax while there is one. Returns (emitted
    tokens: the accepted path's tokens + the target's next one, the accepted node indices)."""
    target_ids = target_logits.argmax(dim=-1).tolist()  # [n+1], one device sync
    drafted = draft_ids.tolist()
    children: dict[tuple[int, int], int] = {}
    for node, (parent, token) in enumerate(zip(parents, drafted)):
        children.setdefault((parent, token), node)
    path, row = [], 0
    while (node := children.get((row - 1, target_ids[row]))) is not None:
        path.append(node)
        row = node + 1
    return [drafted[node] for node in path] + [target_ids[row]], path


def accept_probability(p_draft: torch.Tensor, q_draft: torch.Tensor) -> torch.Tensor:
    """min(1, p(x)/q(x)) for each drafted x: [k] -> [k] (Algorithm 1, line 'r < p/q')."""
    return (p_draft / q_draft).clamp(max=1.0)


def verify_sampling(
    draft_ids: torch.Tensor,
    draft_probs: torch.Tensor | None,
    target_probs: torch.Tensor,
    generator: torch.Generator | None,
    accept_rule: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = accept_probability,
) -> list[int]:
    """Speculative sampling (Leviathan et al. 2023, Algorithm 1).

    draft_ids: [k]; draft_probs: [k, V] or None (deterministic drafter, q = one-hot);
    target_probs: [k+1, V] already shaped by temperature/top-k/top-p.
    Returns the emitted tokens: the accepted draft prefix plus one resampled/bonus token.
    `accept_rule` is a seam for tests that show a broken rule is caught.
    """
    k = draft_ids.shape[0]
    if k == 0:
        return sample(target_probs[:1], generator).tolist()
    positions = torch.arange(k, device=draft_ids.device)
    p_draft = target_probs[positions, draft_ids]  # [k]
    if draft_probs is None:
        q_draft = torch.ones_like(p_draft)
    else:
        q_draft = draft_probs[positions, draft_ids]  # [k]
    r = torch.rand(k, generator=generator, device=target_probs.device)  # [k]
    accepted = (r < accept_rule(p_draft, q_draft)).tolist()
    n = accepted.index(False) if False in accepted else k
    if n == k:
        bonus = sample(target_probs[k:], generator)  # [1] ~ p_{k+1}
        return draft_ids.tolist() + bonus.tolist()
    residual = residual_distribution(target_probs[n], None if draft_probs is None else draft_probs[n], draft_ids[n])
    fix = sample(residual[None], generator)  # [1] ~ norm(max(0, p - q))
    return draft_ids[:n].tolist() + fix.tolist()


def residual_distribution(p: torch.Tensor, q: torch.Tensor | None, drafted: torch.Tensor) -> torch.Tensor:
    """norm(max(0, p - q)): [V]; q None means one-hot at the drafted token."""
    if q is None:
        residual = p.clone()
        residual[drafted] = 0.0
    else:
        residual = (p - q).clamp(min=0.0)
    total = residual.sum()
    if total <= 0:  # p == q numerically: rejection had probability ~0; p itself is the right law
        return p
    return residual / total


def accepted_length(draft: list[int], parents: list[int], truth: list[int]) -> int:
    """Draft tokens the target accepts when it goes on with `truth`: the depth of the deepest
    node whose whole path matches (parents[i] < i, -1: the last token; a chain: i - 1)."""
    depth, matches, best = [0] * len(draft), [False] * len(draft), 0
    for i, (token, parent) in enumerate(zip(draft, parents)):
        depth[i] = 1 if parent < 0 else depth[parent] + 1
        matches[i] = (parent < 0 or matches[parent]) and depth[i] <= len(truth) and truth[depth[i] - 1] == token
        if matches[i]:
            best = max(best, depth[i])
    return best
