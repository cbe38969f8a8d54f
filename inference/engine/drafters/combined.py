"""Combined drafting: per step, the best proposal of several drafters ("suffix+lookup", ...).

    spec "suffix+lookup"                      suffix index and prompt lookup
    spec "suffix+lookup+model:<model spec>"   ... and a draft model, only when both come up short

Each step every cheap member (suffix, lookup) proposes; the proposal with the most expected
accepted tokens wins. Expected accepted tokens: the suffix drafter's own estimate (path
probabilities from its counts); for the others sum_i a^i over the draft, with a the
member's measured acceptance rate (running average, per engine). A draft model costs a
forward per token, so it is asked only when the cheap members expect less than
`model_below` accepted tokens.

With a `recycle` member and a target that verifies trees, the recycled tree is not a rival
but an addition: the best proposal of the others is drafted with the recycled tree grafted on
(recycle.py, `graft`), one forward verifying both.

Members that proposed are all told the outcome: the chosen one its accepted count, the
others 0 (so a draft model crops its cache back to the accepted tokens).
"""

from __future__ import annotations

import torch

from ..draft_length import DraftLength
from ..verify import accepted_length
from .base import Drafter


class CombinedDrafter(Drafter):
    max_draft_length = 32  # self-paced; members without their own pace get an adaptive k

    def __init__(self, members: list[Drafter], model_below: float = 1.0):
        self.members = members
        self.name = "+".join(m.name for m in members)
        self.model_below = model_below  # ask draft models only below this expected length
        self.max_draft_length = max(getattr(m, "max_draft_length", 16) for m in members)
        self.lengths: dict[int, DraftLength] = {}  # adaptive k per member that does not pace itself
        self.acceptance = {id(m): 0.5 for m in members}  # running acceptance rate per member
        self.chosen: Drafter | None = None  # whose proposal went to the target this step
        # its own draft (tokens, tree parents) where the verified tree held more (a recycled tree grafted
        # onto it), else None: what the target accepted of the verified tree was all its own
        self.own: tuple[list[int], list[int]] | None = None
        self.drafted = 0  # its length
        self.start = 0  # tokens before the draft
        self.asked: list[Drafter] = []

    def set_cost(self, cost) -> None:
        for m in self.members:
            if hasattr(m, "set_cost"):
                m.set_cost(cost)

    def set_index(self, index) -> None:
        for m in self.members:
            if hasattr(m, "set_index"):
                m.set_index(index)

    def set_table(self, table) -> None:
        for m in self.members:
            if hasattr(m, "set_table"):
                m.set_table(table)

    @property
    def wants_logits(self) -> bool:
        return any(m.wants_logits for m in self.members)

    def observe(self, tokens: torch.Tensor, logits: torch.Tensor) -> None:
        for m in self.members:
            if m.wants_logits:
                m.observe(tokens, logits)

    def begin(self, prompt_ids, sampling=None, generator=None) -> None:
        for m in self.members:
            m.begin(prompt_ids, *(() if sampling is None else (sampling, generator)))
        self.lengths = {id(m): DraftLength() for m in self.members if not getattr(m, "max_draft_length", None)}
        self.chosen, self.asked = None, []

    def _k(self, member: Drafter, k: int) -> int:
        length = self.lengths.get(id(member))
        return k if length is None else min(k, length.next())

    def _score(self, member: Drafter, n: int) -> float:
        if n == 0:
            return 0.0
        if hasattr(member, "last_score"):
            return member.last_score
        a = self.acceptance[id(member)]
        return sum(a ** (i + 1) for i in range(n))

    @property
    def drafts_trees(self) -> bool:
        return any(m.drafts_trees for m in self.members)

    def propose(self, ids: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self._best(ids, k, tree=False)

    def propose_tree(self, ids: torch.Tensor, k: int) -> tuple[torch.Tensor, list[int]]:
        """The best member proposal, a tree where that member drafts trees (greedy only)."""
        return self._best(ids, k, tree=True)

    def _best(self, ids: torch.Tensor, k: int, tree: bool):
        best, best_score, best_member = (ids[0, :0], [] if tree else None), 0.0, None
        self.asked, self.start = [], ids.shape[1]
        graft = next((m for m in self.members if tree and hasattr(m, "graft")), None)  # recycle: grafted on
        cheap = [m for m in self.members if not m.name.startswith("model:") and m is not graft]
        models = [m for m in self.members if m.name.startswith("model:")]
        expected = 0.0  # accepted tokens the proposal so far expects (with the grafted tree, if any)
        grafted_on: Drafter | bool | None = False  # whose proposal the recycled tree was grafted onto
        for group in (cheap, models):
            if group is models and expected >= self.model_below:
                break  # the cheap members (and the recycled tree) expect enough: no draft model forward
            for m in group:
                proposal = (m.propose_tree if tree else m.propose)(ids, self._k(m, k))
                self.asked.append(m)
                score = self._score(m, len(proposal[0]))
                if score > best_score:
                    best, best_score, best_member = proposal, score, m
            expected = best_score
            if graft is not None and best_member is not grafted_on:  # (a draft model may have won)
                merged, grafted_on = graft.graft(ids, k, best[0], best[1], best_score), best_member
                expected = graft.last_score
        # what the chosen member drafted itself: it is told how much of that the target accepted
        self.chosen, self.drafted, self.own = best_member, len(best[0]), None
        if graft is not None:
            self.asked.append(graft)
            if best_member is None:  # the recycled tree alone: the verified tree is its own
                self.chosen, self.drafted = graft, len(merged[0])
            else:  # grafted onto the member's tree: the accepted path may leave its own draft
                self.own = (best[0].tolist(), list(best[1]))
            best = merged
        return best

    def update(self, num_accepted: int, ids_after: torch.Tensor) -> None:
        if self.own is not None:
            # a grafted tree: the accepted path may leave the chosen member's own draft (a draft model
            # must keep only its own tokens the target took, and rates count only what it drafted)
            truth = ids_after[0, self.start:self.start + num_accepted].tolist()
            num_accepted = accepted_length(*self.own, truth)
        for m in self.asked:
            m.update(num_accepted if m is self.chosen else 0, ids_after)
        m = self.chosen
        if m is not None and self.drafted:
            length = self.lengths.get(id(m))
            if length is not None:
                length.update(self.drafted, num_accepted)
            self.acceptance[id(m)] = 0.8 * self.acceptance[id(m)] + 0.2 * num_accepted / self.drafted
