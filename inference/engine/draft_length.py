"""How many tokens to draft next: fixed, or adaptive to the recent acceptance and the verify cost.

Adaptive: start at 4; after a fully accepted draft grow by 2 (up to 16) — the drafter is
on a streak; after a rejection shrink to accepted + 1, the length that would just have
been fully accepted.

With a cost model (`cost` = c_verify(k), verify_cost.py; `draft_cost` = one draft token
relative to one target step) the streak heuristic is capped by the k that maximises the
expected tokens per unit of cost (Leviathan et al. 2023, section 3.4, with c_verify(k) for
the constant target-forward cost):

    S(α, k) = (1 - α^(k+1)) / ((1 - α) · (c_verify(k) + k · draft_cost))

where α is a running estimate of the per-token acceptance rate. Where verifying 16 tokens
costs ~3 steps (int4 on CPU) the cap bites; where it is nearly free (bf16) it does not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class DraftLength:
    fixed: int | None = None  # an int pins k; None adapts
    k: int = 4  # current draft length (adaptive start)
    k_min: int = 1  # never draft fewer
    k_max: int = 16  # never draft more
    grow: int = 2  # added after a fully accepted draft
    cost: Callable[[int], float] | None = None  # c_verify(k); None: no cost cap
    draft_cost: float = 0.0  # cost of drafting one token / one target decode step
    accepted_ema: float = 3.0  # running sums behind α = accepted / (accepted + rejections)
    trials_ema: float = 4.0  # (prior: α = 0.75)
    decay: float = 0.8  # per step: the last ~5 steps dominate α

    def __post_init__(self) -> None:
        if self.fixed is not None:
            self.k = self.fixed

    @property
    def alpha(self) -> float:
        """Per-token acceptance estimate (geometric model: each step stops at its first rejection)."""
        return self.accepted_ema / self.trials_ema

    def next(self) -> int:
        if self.fixed is not None or self.cost is None:
            return self.k
        return max(self.k_min, min(self.k, best_length(self.alpha, self.cost, self.draft_cost, self.k_max)))

    def update(self, drafted: int, accepted: int) -> None:
        if self.fixed is not None or drafted == 0:
            return
        rejected = 1 if accepted < drafted else 0
        self.accepted_ema = self.decay * self.accepted_ema + accepted
        self.trials_ema = self.decay * self.trials_ema + accepted + rejected
        if accepted == drafted:
            self.k = min(self.k_max, self.k + self.grow) if drafted >= self.k else self.k
        else:
            self.k = max(self.k_min, accepted + 1)


def expected_tokens(alpha: float, k: int) -> float:
    """Tokens one step emits with k drafts, each accepted with prob α until the first rejection: Σ α^i, i=0..k."""
    if alpha >= 1.0:
        return k + 1.0
    return (1 - alpha ** (k + 1)) / (1 - alpha)


def best_length(alpha: float, cost: Callable[[int], float], draft_cost: float, k_max: int) -> int:
    """argmax over k in 0..k_max of expected_tokens(α, k) / (c_verify(k) + k · draft_cost)."""
    alpha = min(max(alpha, 0.0), 0.999)
    return max(range(k_max + 1), key=lambda k: expected_tokens(alpha, k) / (cost(k) + k * draft_cost))


def draft_costs(target_model, drafter, max_age: float | None = None) -> dict:
    """DraftLength(cost=..., draft_cost=...) for this target and drafter, measured once per model
    (and refined when older than `max_age` seconds: verify_cost.py).

    No drafts (the `none` drafter) need no cost model. A draft model's per-token cost is its
    decode step over the target's; other drafters (lookup) cost ~nothing per token."""
    from .verify_cost import verify_cost

    if getattr(drafter, "name", "none") == "none":
        return {}
    cost = verify_cost(target_model, max_age=max_age)
    draft_model = getattr(drafter, "model", None)
    draft_cost = verify_cost(draft_model, max_age=max_age).step_s / cost.step_s if draft_model is not None else 0.0
    return {"cost": cost, "draft_cost": draft_cost}
