"""How many tokens to draft next: fixed, or adaptive to the recent acceptance.

Adaptive: start at 4; after a fully accepted draft grow by 2 (up to 16) — the drafter is
on a streak, a longer draft costs one forward all the same; after a rejection shrink to
accepted + 1, the length that would just have been fully accepted.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DraftLength:
    fixed: int | None = None  # an int pins k; None adapts
    k: int = 4  # current draft length (adaptive start)
    k_min: int = 1  # never draft fewer
    k_max: int = 16  # never draft more
    grow: int = 2  # added after a fully accepted draft

    def __post_init__(self) -> None:
        if self.fixed is not None:
            self.k = self.fixed

    def next(self) -> int:
        return self.k

    def update(self, drafted: int, accepted: int) -> None:
        if self.fixed is not None or drafted == 0:
            return
        if accepted == drafted:
            self.k = min(self.k_max, self.k + self.grow) if drafted >= self.k else self.k
        else:
            self.k = max(self.k_min, accepted + 1)
