"""The drafter interface: propose k tokens cheaply; the target verifies them in one forward.

A simplified form of transformers' `candidate_generator` seam:
    begin(prompt_ids, sampling, generator)   at request start (reset per-request state)
    propose(ids [1, N], k) -> (draft_ids [k'], draft_probs [k', V] | None), k' <= k
    propose_tree(ids, k) -> (draft_ids [k'], parents [k'])   only where drafts_trees (greedy:
                                                              several continuations verified at once)
    update(num_accepted, ids_after [1, N'])  after verification (crop caches, catch up)
    observe(tokens [n], logits [n, V])       only where wants_logits: what each forward (the prefill's
                                              last row, every verify row) predicted after its tokens
`draft_probs=None` marks a deterministic drafter: verification then uses q = one-hot.
"""

from __future__ import annotations

import torch

from ..sampling import SamplingParams


class Drafter:
    """Base class; subclasses set `name` and override `propose` (and `begin`/`update` if stateful)."""

    name = "none"
    drafts_trees = False  # True: propose_tree() may branch (decode.py verifies trees in one forward)
    wants_logits = False  # True: decode.py calls observe() after every target forward

    def begin(self, prompt_ids: torch.Tensor, sampling: SamplingParams = SamplingParams(),
              generator: torch.Generator | None = None) -> None:
        """Start a request: prompt_ids [1, S]."""

    def propose(self, ids: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """ids: [1, N] every token so far -> draft_ids [k'] (k' <= k), draft_probs [k', V] or None."""
        raise NotImplementedError

    def propose_tree(self, ids: torch.Tensor, k: int) -> tuple[torch.Tensor, list[int]]:
        """A draft tree: draft_ids [k'] and parents [k'] (parents[i] < i: the node token i follows,
        -1: the last token). This default is the chain `propose` drafts."""
        draft_ids, _ = self.propose(ids, k)
        return draft_ids, list(range(-1, len(draft_ids) - 1))

    def observe(self, tokens: torch.Tensor, logits: torch.Tensor) -> None:
        """tokens [n] a target forward read; logits [n, V] what it predicted after each."""

    def update(self, num_accepted: int, ids_after: torch.Tensor) -> None:
        """num_accepted of the last proposal survived; ids_after: [1, N'] the accepted sequence."""
