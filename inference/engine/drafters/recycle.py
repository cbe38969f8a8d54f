"""Token Recycling: drafts from the target's own earlier predictions (Luo et al., 2024).

    spec "recycle"          a draft tree (where the target verifies trees), else a chain
    spec "recycle:16"       at most 16 nodes a step
    spec "suffix+recycle"   the suffix drafter's proposal and a recycled tree, verified together

Every target forward computes, for each token it reads, a distribution over the next token; a
verify throws most of them away (the rejected rows, and all but the argmax of the accepted
ones). This drafter keeps them: per token t, the top `TOP` next tokens (and their
probabilities) of the latest row that read t, overwritten as the target reads t again
(`observe`, called by decode.py after the prefill and after every verify). It needs no training
and covers what a copy drafter cannot: a context seen nowhere before whose last token the
target has already predicted after.

Proposal (`propose_tree`): best-first from the last token; a node's children are its token's
stored successors, P(child) = P(node) x how often a successor stored with that probability
turned out right (`ShareCalibration`, learnt online from the target's tokens), so the nodes come
in order of falling P and any prefix is a tree. The tree is cut like the suffix drafter's
chains: to the n maximising (1 + P_1 + ... + P_n) / c(n), with c the target's measured verify
cost. On a GPU, where c stays near 1, trees of dozens of nodes verify for about the price of
one step; on a 2-core CPU the cut leaves a few nodes, often none. With sampling (no trees) it
drafts the top-1 chain.

In `suffix+recycle` (CombinedDrafter) the recycled tree is grafted onto the winning proposal
(`graft`): the two trees merged as a trie, so a recycled path the suffix chain already holds
costs nothing, and the recycled nodes cut against the whole tree's cost.

The table is per namespace (a bot: `RecycleMemory`, bounded in tokens and namespaces, least
recently used go); a request without a namespace gets a table of its own. What the target
predicted in one bot's conversations never drafts another's.
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict

import torch

from ..errors import EngineError
from .base import Drafter
from .suffix import ShareCalibration, best_prefix

TOP = 8  # successors kept per token


class RecycleTable:
    """token -> (its TOP successors, their probabilities), from the latest forward that read it,
    and the namespace's calibration of those probabilities. At most `max_tokens` tokens: past it
    the least recently written quarter goes."""

    def __init__(self, max_tokens: int = 4096):
        self.max_tokens = max_tokens
        self.rows: dict[int, tuple[tuple[int, ...], tuple[float, ...]]] = {}
        # a stored probability -> how often such successors were right, learnt in this namespace too
        self.calibration = ShareCalibration()

    def __len__(self) -> int:
        return len(self.rows)

    def get(self, token: int) -> tuple[tuple[int, ...], tuple[float, ...]] | None:
        return self.rows.get(token)

    def put(self, token: int, successors: tuple[int, ...], probs: tuple[float, ...]) -> None:
        self.rows.pop(token, None)  # re-inserted last: dict order is write order
        self.rows[token] = (successors, probs)
        if len(self.rows) > self.max_tokens:
            for old in list(itertools.islice(self.rows, len(self.rows) - self.max_tokens * 3 // 4)):
                del self.rows[old]

    def observe(self, tokens: list[int], logits: torch.Tensor) -> None:
        """tokens [n]: the tokens a forward read; logits [n, V]: what it predicted after each."""
        logits = logits.float()
        top = logits.topk(min(TOP, logits.shape[-1]), dim=-1)
        probs = (top.values - logits.logsumexp(dim=-1, keepdim=True)).exp()
        for token, successors, p in zip(tokens, top.indices.tolist(), probs.tolist()):
            self.put(token, tuple(successors), tuple(p))


class RecycleMemory:
    """namespace -> its RecycleTable; at most `max_namespaces`, least recently used evicted (a
    bot's table refills from its next reply's forwards)."""

    def __init__(self, max_tokens: int = 4096, max_namespaces: int = 32):
        self.max_tokens = max_tokens
        self.max_namespaces = max_namespaces
        self.tables: OrderedDict[str, RecycleTable] = OrderedDict()

    def table(self, namespace: str | None) -> RecycleTable:
        """The namespace's table (created empty); None: a table for one request, kept nowhere."""
        if namespace is None:
            return RecycleTable(self.max_tokens)
        table = self.tables.pop(namespace, None) or RecycleTable(self.max_tokens)
        self.tables[namespace] = table
        while len(self.tables) > self.max_namespaces:
            self.tables.popitem(last=False)
        return table

    def forget(self, namespace: str) -> None:
        self.tables.pop(namespace, None)


class RecycleDrafter(Drafter):
    name = "recycle"
    max_draft_length = 32  # self-paced: nodes per step, cut by the verify cost
    wants_logits = True  # decode.py hands it every forward's logits (`observe`)
    drafts_trees = True  # where the target verifies trees (greedy); else the top-1 chain
    min_prob = 0.01  # nodes less likely than this are never considered

    def __init__(self, max_draft_length: int = 32):
        self.max_draft_length = max_draft_length
        self.table = RecycleTable()  # the engine sets the namespace's (set_table)
        self.cost = None  # c_verify(n), or None: no cut
        self.last_score = 0.0  # expected accepted tokens of the last proposal (for `combined`)

    @classmethod
    def from_spec(cls, arg: str, target_model, tokenizer, device: torch.device, dtype: torch.dtype):
        """"recycle" or "recycle:N" (at most N nodes a step)."""
        if not arg:
            return cls()
        if arg.isdigit() and int(arg) > 0:
            return cls(max_draft_length=int(arg))
        raise EngineError(f"recycle drafter option {arg!r}: use a node budget (e.g. 'recycle:16')")

    def set_cost(self, cost) -> None:
        self.cost = cost

    def set_table(self, table: RecycleTable) -> None:
        """The namespace's table for the next request."""
        self.table = table

    def begin(self, prompt_ids, sampling=None, generator=None) -> None:
        self.table.calibration.pending = None

    def observe(self, tokens: torch.Tensor, logits: torch.Tensor) -> None:
        """tokens [n] a forward read, logits [n, V] it returned."""
        self.table.observe(tokens.tolist(), logits)

    def _tree(self, last: int, limit: int) -> tuple[list[int], list[int], list[float], list[float]]:
        """Best-first from `last`: (tokens, parents, P, stored probability of each node)."""
        heap: list[tuple[float, int, int, int, int, float]] = []  # (-P, tie, token, parent, depth, stored p)
        tokens, parents, probs, stored = [], [], [], []
        tie = itertools.count()

        def push_children(token: int, node: int, prob: float, depth: int) -> None:
            row = self.table.get(token)
            if row is None or depth >= limit:
                return
            for child, p in zip(*row):
                q = prob * self.table.calibration.estimate(p)
                if q >= self.min_prob:
                    heapq.heappush(heap, (-q, next(tie), child, node, depth + 1, p))

        push_children(last, -1, 1.0, 0)
        while heap and len(tokens) < limit:
            neg_q, _, token, parent, depth, p = heapq.heappop(heap)
            tokens.append(token)
            parents.append(parent)
            probs.append(-neg_q)
            stored.append(p)
            push_children(token, len(tokens) - 1, -neg_q, depth)
        return tokens, parents, probs, stored

    def _drafted(self, ids: torch.Tensor, k: int) -> tuple[list[int], list[int], list[float]]:
        """The uncut tree after ids [1, N], remembered for `update` to score."""
        tokens, parents, probs, stored = self._tree(int(ids[0, -1]), min(k, self.max_draft_length))
        self.table.calibration.drafted(ids.shape[1], tokens, parents, stored)
        return tokens, parents, probs

    def propose_tree(self, ids: torch.Tensor, k: int) -> tuple[torch.Tensor, list[int]]:
        tokens, parents, probs = self._drafted(ids, k)
        n = best_prefix(probs, self.cost)
        self.last_score = sum(probs[:n])
        return torch.tensor(tokens[:n], dtype=torch.long, device=ids.device), parents[:n]

    def propose(self, ids: torch.Tensor, k: int) -> tuple[torch.Tensor, None]:
        """The top-1 chain (sampling; targets that cannot verify trees)."""
        token, prob = int(ids[0, -1]), 1.0
        chain, probs, stored = [], [], []
        while len(chain) < min(k, self.max_draft_length):
            row = self.table.get(token)
            if row is None:
                break
            token, p = row[0][0], row[1][0]
            prob *= self.table.calibration.estimate(p)
            if prob < self.min_prob:
                break
            chain.append(token)
            probs.append(prob)
            stored.append(p)
        self.table.calibration.drafted(ids.shape[1], chain, list(range(-1, len(chain) - 1)), stored)
        n = best_prefix(probs, self.cost)
        self.last_score = sum(probs[:n])
        return torch.tensor(chain[:n], dtype=torch.long, device=ids.device), None

    def graft(self, ids: torch.Tensor, k: int, base: torch.Tensor, base_parents: list[int],
              base_score: float) -> tuple[torch.Tensor, list[int]]:
        """Another drafter's tree (base, base_parents; expected accepted tokens base_score) with
        the recycled tree merged in: recycled nodes whose path the base holds are the base's own,
        the others are appended in best-first order and cut against the whole tree's cost."""
        tokens, parents, probs = self._drafted(ids, k)
        merged, merged_parents = base.tolist(), list(base_parents)
        children = {(parent, token): i for i, (token, parent) in enumerate(zip(merged, merged_parents))}
        where: list[int] = []  # recycled node -> its index in the merged tree, or -2: not placed
        new: list[tuple[int, int, float]] = []  # appended nodes: (token, merged parent, P)
        for token, parent, p in zip(tokens, parents, probs):
            at = -1 if parent < 0 else where[parent]
            if at == -2:
                where.append(-2)
                continue
            node = children.get((at, token))
            if node is None:
                if len(merged) + len(new) >= k:
                    where.append(-2)
                    continue
                node = len(merged) + len(new)
                children[(at, token)] = node
                new.append((token, at, p))
            where.append(node)
        # the appended nodes' P fall (best-first), so a prefix of them keeps the tree whole
        n = best_prefix([p for _, _, p in new], self.cost, start=len(merged), expected=1.0 + base_score)
        merged += [token for token, _, _ in new[:n]]
        merged_parents += [parent for _, parent, _ in new[:n]]
        self.last_score = base_score + sum(p for _, _, p in new[:n])
        return torch.tensor(merged, dtype=torch.long, device=ids.device), merged_parents

    def update(self, num_accepted: int, ids_after: torch.Tensor) -> None:
        self.table.calibration.learn(ids_after)
