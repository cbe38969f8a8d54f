"""Suffix drafting: propose what this bot said before, after the longest matching suffix.

Support bots answer the same questions again and again, so a bot's earlier replies are the
best draft there is (SuffixDecoding, Oliaro et al., Snowflake 2024). Two suffix automata:

    global  one per namespace (one bot): its earlier replies, each preceded by the question
            it answered, entries separated by SEP. Bounded (`max_tokens` per namespace): the
            oldest entries are evicted and the automaton rebuilt. Occurrence counts per
            state give "the continuation seen most often". Namespaces never mix.
    local   one per request: the prompt (system prompt, knowledge, history) + the reply so
            far, built online as tokens are accepted.

Per step: the longest suffix of the tokens so far that occurs in each automaton is kept
incrementally (O(1) amortised per accepted token). From the global match we walk the most
frequent transitions while the running probability prod cnt(child)/cnt(state) stays >=
`min_prob`; from the local match we copy what followed its first occurrence. The longer
match wins. Either draft is capped at `factor x match length` (and `max_draft_length`):
a long, unambiguous match drafts far past a fixed k, a short or ambiguous one drafts a
little, no match (shorter than `min_match`) drafts nothing.

Cost-aware cut: each draft token i carries an estimate P_i that tokens 1..i are all accepted
(the product of the walk's probabilities above). Given the target's measured verify cost
c(n) (verify_cost.py, set by the engine), the draft is cut to the n that maximises the
expected tokens per unit of cost, (1 + P_1 + ... + P_n) / c(n) — n = 0 when no prefix beats
a plain step. Where verifying 32 tokens costs 5 steps (int4 on a 2-core CPU) an uncertain
tail is dropped; where verification is nearly free (a GPU) long drafts survive.

Trees (opt-in, `tree_width` > 1, spec "suffix:tree"): `propose_tree` drafts several of the
matched suffix's continuations at once, best-first by P, cut the same way; decode.py
verifies the tree in one target forward (forward.extend_tree) where the target allows it.
Wide trees (opt-in, spec "suffix:wide"): the continuations of every matching context — the
longest match and each shorter suffix of it, in the bot's index and in the conversation —
merged into one tree, ranked by their weighted share of occurrences; the cut uses how often
nodes of such a share turned out right (`ShareCalibration`, learnt online). Made for targets
whose verify is nearly free (a GPU): on this workload they draft ~2.4 tokens per forward
where a chain drafts ~1.9 (docs/drafting.md).

    memory = SuffixMemory(max_tokens=16384)
    memory.remember("bot-12", reply_ids, question_ids)     # after every stored reply
    drafter.set_index(memory.get("bot-12"))                # the engine does this per request
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict, deque
from dataclasses import dataclass

import torch

from ..errors import EngineError
from .base import Drafter

SEP = -1  # entry separator in a namespace's automaton; never a real token, so never matched


# ---------------------------------------------------------------------------- automaton


class SuffixAutomaton:
    """Suffix automaton of a token sequence (Blumer et al. 1985), built online.

    State v holds the substrings sharing one set of end positions; `length[v]` is the
    longest, `link[v]` the state of its longest suffix with more end positions. Every
    substring u of the text is one path from the root; `count(v)` = occurrences of u.
    At most 2n states and 3n transitions for n tokens.
    """

    def __init__(self, tokens: list[int] | None = None):
        self.next: list[dict[int, int]] = [{}]  # transitions per state: token -> state
        self.link: list[int] = [-1]  # suffix link (root: -1)
        self.length: list[int] = [0]  # longest string of the state
        self.first: list[int] = [-1]  # end position of its first occurrence
        self.own: list[int] = [0]  # 1 for states created for a new position (clones: 0)
        self.tokens: list[int] = []
        self.last = 0  # state of the whole text
        self._counts: list[int] | None = None
        self._counted = 0  # text length when _counts was computed
        for token in tokens or ():
            self.append(token)

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def states(self) -> int:
        return len(self.length)

    def append(self, token: int) -> None:
        nxt, link, length, first, own = self.next, self.link, self.length, self.first, self.own
        cur = len(length)
        nxt.append({})
        length.append(length[self.last] + 1)
        link.append(0)
        first.append(len(self.tokens))
        own.append(1)
        self.tokens.append(token)
        p = self.last
        while p != -1 and token not in nxt[p]:
            nxt[p][token] = cur
            p = link[p]
        if p != -1:
            q = nxt[p][token]
            if length[p] + 1 == length[q]:
                link[cur] = q
            else:  # split q: the clone takes the strings of length <= length[p] + 1
                clone = len(length)
                nxt.append(dict(nxt[q]))
                length.append(length[p] + 1)
                link.append(link[q])
                first.append(first[q])
                own.append(0)
                while p != -1 and nxt[p].get(token) == q:
                    nxt[p][token] = clone
                    p = link[p]
                link[q] = link[cur] = clone
        self.last = cur

    def counts(self, slack: int = 0) -> list[int]:
        """Occurrences per state (= size of its end-position set); recomputed lazily, O(states).
        With `slack`, counts computed at most `slack` tokens ago will do: states made since count
        once, and occurrences the older ones gained since are not added (for a growing text whose
        counts only steer drafts, like a request's own automaton)."""
        if self._counts is not None and len(self.tokens) - self._counted <= slack:
            self._counts.extend([1] * (len(self.length) - len(self._counts)))
            return self._counts
        buckets: list[list[int]] = [[] for _ in range(len(self.tokens) + 1)]
        for v, n in enumerate(self.length):
            buckets[n].append(v)
        cnt = list(self.own)
        for n in range(len(buckets) - 1, 0, -1):  # longest first: children before their link
            for v in buckets[n]:
                cnt[self.link[v]] += cnt[v]
        self._counts, self._counted = cnt, len(self.tokens)
        return cnt

    def step(self, state: int, matched: int, token: int) -> tuple[int, int]:
        """Extend a match (state, matched length) by `token`: the longest suffix still occurring."""
        nxt, link, length = self.next, self.link, self.length
        while state and token not in nxt[state]:
            state = link[state]
            matched = length[state]
        if token in nxt[state]:
            return nxt[state][token], matched + 1
        return 0, 0

    def find(self, pattern: list[int]) -> int | None:
        """State of `pattern` if it occurs, else None."""
        state = 0
        for token in pattern:
            state = self.next[state].get(token)
            if state is None:
                return None
        return state


# ---------------------------------------------------------------------------- per-namespace index


@dataclass
class SuffixIndex:
    """One namespace's earlier replies (each after its question) in a bounded automaton."""

    max_tokens: int = 16384  # memory bound: tokens kept (automaton: <= 2x states, 3x transitions)

    def __post_init__(self) -> None:
        self.entries: deque[list[int]] = deque()  # oldest first, each already ends with SEP
        self.tokens = 0
        self.automaton = SuffixAutomaton()

    def add(self, reply: list[int], question: list[int] | None = None) -> None:
        """Index one reply (and the tail of the question it answered, if given)."""
        entry = list(question or [])[-self.max_tokens // 4:] + list(reply) + [SEP]
        entry = entry[-self.max_tokens:]
        self.entries.append(entry)
        self.tokens += len(entry)
        if self.tokens > self.max_tokens:
            # evict down to 3/4 of the bound, so rebuilds (O(kept tokens)) stay rare
            while self.entries and self.tokens > self.max_tokens * 3 // 4:
                self.tokens -= len(self.entries.popleft())
            self.rebuild()
        else:
            for token in entry:
                self.automaton.append(token)

    def rebuild(self) -> None:
        self.automaton = SuffixAutomaton([t for entry in self.entries for t in entry])

    @property
    def replies(self) -> int:
        return len(self.entries)


class SuffixMemory:
    """Namespace -> SuffixIndex. Bounded per namespace, and in namespaces (least recently used go)."""

    def __init__(self, max_tokens: int = 16384, max_namespaces: int = 256):
        self.max_tokens = max_tokens  # per namespace
        self.max_namespaces = max_namespaces  # an evicted namespace is rebuilt by its owner on demand
        self._indexes: OrderedDict[str, SuffixIndex] = OrderedDict()

    def __contains__(self, namespace: str) -> bool:
        return namespace in self._indexes

    def get(self, namespace: str | None) -> SuffixIndex | None:
        """The namespace's index (created empty on first use); None for no namespace."""
        if namespace is None:
            return None
        index = self._indexes.get(namespace)
        if index is None:
            index = self._indexes[namespace] = SuffixIndex(self.max_tokens)
            while len(self._indexes) > self.max_namespaces:
                self._indexes.popitem(last=False)
        self._indexes.move_to_end(namespace)
        return index

    def remember(self, namespace: str, reply: list[int], question: list[int] | None = None) -> None:
        self.get(namespace).add(reply, question)

    def rebuild(self, namespace: str, pairs: list[tuple[list[int], list[int] | None]]) -> None:
        """Replace a namespace's index by (reply, question) pairs, oldest first."""
        self._indexes.pop(namespace, None)
        index = self.get(namespace)
        for reply, question in pairs:
            index.add(reply, question)

    def forget(self, namespace: str) -> None:
        self._indexes.pop(namespace, None)


# ---------------------------------------------------------------------------- drafter


def best_prefix(probs: list[float], cost, start: int = 0, expected: float = 1.0) -> int:
    """How many drafts to keep: argmax over n of (expected + P_1 + ... + P_n) / c(start + n), P_i
    the estimate that draft i is accepted (non-increasing) and `start` nodes already drafted
    with `expected` tokens per step between them and the target's own; all where cost is None."""
    if cost is None:
        return len(probs)
    best_n, best = 0, expected / cost(start)
    for n, p in enumerate(probs, 1):
        expected += p
        value = expected / cost(start + n)
        if value > best:
            best_n, best = n, value
    return best_n


class ShareCalibration:
    """How often a wide-tree node is right given that its parent was, by its share, learnt online.

    A node's share given its parent's (the weighted fraction of the parent's matching
    occurrences that go on with the node's token, `SuffixDrafter._wide_tree`) ranks nodes well
    but is no probability: a long match of a repeated question ("... <|im_start|>assistant")
    has share ~1, yet the reply went another way after a new greeting. So the cost cut uses,
    per share bucket, the running fraction of such nodes the target confirmed, multiplied down
    each path. Every drafted node whose parent was right and whose depth the target's next
    tokens reach is scored — cut or not, verified or not (in `suffix:wide+lookup` the target's
    tokens after a lookup draft score the tree too)."""

    buckets = 10

    def __init__(self, prior_trials: float = 4.0, decay: float = 0.999):
        # prior: a node is right as often as its share says, worth `prior_trials` observations
        # (on the replay workload the learnt rates end near that: 0.05 ... 0.89 for shares 0.05 ... 0.95)
        self.hits = [prior_trials * (b + 0.5) / self.buckets for b in range(self.buckets)]
        self.trials = [prior_trials] * self.buckets
        self.decay = decay  # old observations fade: ~1000 nodes per bucket dominate
        self.pending: tuple[int, list[int], list[int], list[int]] | None = None

    def _bucket(self, share: float) -> int:
        return min(int(share * self.buckets), self.buckets - 1)

    def estimate(self, share: float) -> float:
        b = self._bucket(share)
        return self.hits[b] / self.trials[b]

    def drafted(self, length: int, tokens: list[int], parents: list[int], shares: list[float]) -> None:
        """Remember the tree drafted after `length` tokens, to score it once the target has spoken."""
        self.pending = (length, tokens, parents, [self._bucket(s) for s in shares])

    def learn(self, ids_after: torch.Tensor) -> None:
        if self.pending is None:
            return
        length, tokens, parents, buckets = self.pending
        self.pending = None
        truth = ids_after[0, length:].tolist()  # what the target emitted: accepted drafts + its own token
        depth, right = [0] * len(tokens), [None] * len(tokens)  # None: not known
        for i, (token, parent) in enumerate(zip(tokens, parents)):
            depth[i] = 1 if parent < 0 else depth[parent] + 1
            if parent >= 0 and right[parent] is not True:
                right[i] = False if right[parent] is False else None
                continue  # scored given its parent only: under a wrong (or unknown) parent, nothing learnt
            if depth[i] > len(truth):
                continue  # the target has not said that far (its reply ended, or another draft won)
            right[i] = token == truth[depth[i] - 1]
            b = buckets[i]
            self.hits[b] = self.decay * self.hits[b] + right[i]
            self.trials[b] = self.decay * self.trials[b] + 1


class SuffixDrafter(Drafter):
    """Drafts from the request's namespace index (set by the engine) and the conversation itself."""

    name = "suffix"
    max_draft_length = 32  # self-paced: the engine lets it choose up to this many tokens

    def __init__(self, min_match: int = 2, factor: float = 2.0, min_prob: float = 0.25,
                 max_draft_length: int = 32, tree_width: int = 1, wide: bool = False):
        self.min_match = min_match  # shorter matches draft nothing
        self.factor = factor  # draft at most factor x match length tokens
        self.min_prob = min_prob  # stop when the draft's estimated probability drops below
        self.max_draft_length = max_draft_length
        self.tree_width = tree_width  # continuations per tree node (propose_tree); 1: chains only
        self.wide = wide  # trees over every matching context, not only the longest (propose_tree)
        self.min_wide_share = 0.01  # wide trees: nodes with a smaller share are never drafted
        self.calibration = ShareCalibration()  # wide trees: a node's share -> how often such nodes are right
        self.index: SuffixIndex | None = None
        self.cost = None  # c_verify(n) of the target, or None: no cut (see the module docstring)
        self.last_score = 0.0  # expected accepted tokens of the last proposal (for `combined`)
        self.begin(torch.empty(1, 0, dtype=torch.long))

    @property
    def drafts_trees(self) -> bool:
        return self.tree_width > 1 or self.wide

    @classmethod
    def from_spec(cls, arg: str, target_model, tokenizer, device: torch.device, dtype: torch.dtype):
        """"suffix", "suffix:16" (at most 16 tokens), "suffix:tree" (draft trees of up to 4
        continuations per node, verified in one forward where the target can: forward.tree_supported),
        "suffix:16,tree"; "chain" (the default) drafts one continuation."""
        options = {"max_draft_length": 32}
        for part in filter(None, (p.strip() for p in arg.split(","))):
            if part.isdigit() and int(part) > 0:
                options["max_draft_length"] = int(part)
            elif part in ("chain", "tree"):
                options["tree_width"] = 1 if part == "chain" else 4
            elif part == "wide":
                options["wide"] = True
            else:
                raise EngineError(f"suffix drafter option {part!r}: use a length (e.g. 16), 'chain', 'tree' or 'wide'")
        return cls(**options)

    def set_cost(self, cost) -> None:
        """c_verify(n) -> relative cost of verifying n drafts (None: keep every drafted token)."""
        self.cost = cost

    def set_index(self, index: SuffixIndex | None) -> None:
        """The namespace index for the next request (None: the conversation only)."""
        self.index = index

    def begin(self, prompt_ids, sampling=None, generator=None) -> None:
        self.calibration.pending = None  # a tree drafted for a request that stopped early is not scored
        self.local = SuffixAutomaton()
        self.automaton = self.index.automaton if self.index is not None else None
        self.state, self.matched = 0, 0  # match in the global automaton

    def _extend(self, ids: torch.Tensor) -> None:
        new = ids[0, len(self.local):].tolist()
        for token in new:
            self.local.append(token)
            if self.automaton is not None:
                self.state, self.matched = self.automaton.step(self.state, self.matched, token)

    def _cap(self, matched: int, k: int) -> int:
        return min(k, self.max_draft_length, int(self.factor * matched)) if matched >= self.min_match else 0

    def _global(self, k: int) -> tuple[list[int], list[float]]:
        """Walk the most frequent continuation of the matched suffix: (tokens, P(accepted through i))."""
        n = self._cap(self.matched, k)
        if n == 0:
            return [], []
        sam, cnt = self.automaton, self.automaton.counts()
        state, prob, out, probs = self.state, 1.0, [], []
        trust = self.matched / (self.matched + 1)  # a continuation seen once after a long match is a safe bet
        while len(out) < n and sam.next[state]:
            token, child = max(sam.next[state].items(), key=lambda item: cnt[item[1]])
            prob *= trust * cnt[child] / cnt[state]
            if token == SEP or prob < self.min_prob:
                break
            out.append(token)
            probs.append(prob)
            state = child
        return out, probs

    def _local(self, k: int) -> tuple[list[int], list[float], int]:
        """Copy what followed the first earlier occurrence of the longest repeated suffix."""
        sam = self.local
        state = sam.link[sam.last] if sam.last else -1
        matched = sam.length[state] if state > 0 else 0
        n = self._cap(matched, k)
        if n == 0:
            return [], [], matched
        start = sam.first[state] + 1
        p = matched / (matched + 1)  # a longer match is a safer bet
        while n and p ** n < self.min_prob:
            n -= 1
        out = sam.tokens[start:start + n]
        return out, [p ** (i + 1) for i in range(len(out))], matched

    def _global_tree(self, k: int, width: int) -> tuple[list[int], list[int], list[float]]:
        """Best-first speculation tree over the matched suffix's continuations (SuffixDecoding's
        tree): nodes in order of falling P (the estimate that the path to the node is accepted,
        as in `_global`), at most k nodes and `factor x match` deep, nodes below `min_prob`
        dropped. Returns (tokens, parents: index of each node's parent, -1 = the last token, P)."""
        depth_cap = self._cap(self.matched, k)
        if depth_cap == 0:
            return [], [], []
        sam, cnt = self.automaton, self.automaton.counts()
        trust = self.matched / (self.matched + 1)
        heap: list[tuple[float, int, int, int, int, int]] = []  # (-P, tie, state, parent, token, depth)
        tokens, parents, probs = [], [], []
        tie = itertools.count()  # equal P: first pushed first

        def push_children(state: int, prob: float, node: int, depth: int) -> None:
            if depth >= depth_cap:
                return
            children = sorted(((cnt[c], t, c) for t, c in sam.next[state].items() if t != SEP), reverse=True)
            for count, token, child in children[:width]:
                p = prob * trust * count / cnt[state]
                if p >= self.min_prob:
                    heapq.heappush(heap, (-p, next(tie), child, node, token, depth + 1))

        push_children(self.state, 1.0, -1, 0)
        while heap and len(tokens) < min(k, self.max_draft_length):
            neg_p, _, state, parent, token, depth = heapq.heappop(heap)
            tokens.append(token)
            parents.append(parent)
            probs.append(-neg_p)
            push_children(state, -neg_p, len(tokens) - 1, depth)
        return tokens, parents, probs

    def _contexts(self) -> list[tuple[SuffixAutomaton, list[int], int, float]]:
        """Every suffix of the tokens so far that occurs earlier, in the bot's index or in the
        conversation, as (automaton, its counts, state, weight): the longest match and each
        shorter one down its suffix links, weighted 2^length (longer evidence counts more)."""
        local = self.local
        start = local.link[local.last] if local.last else 0
        # the conversation's automaton grows every step: recounted after it grew by 1/8 (or 64)
        sources = [(local, start, local.length[start], max(64, len(local) // 8))]
        if self.automaton is not None:
            sources.append((self.automaton, self.state, self.matched, 0))
        out = []
        for sam, state, matched, slack in sources:
            if state > 0:
                cnt = sam.counts(slack)
            while state > 0:
                out.append((sam, cnt, state, 2.0 ** min(matched, 32)))
                state = sam.link[state]
                matched = sam.length[state]
        return out

    def _wide_tree(self, k: int) -> tuple[list[int], list[int], list[float]]:
        """Best-first tree over the continuations of *every* matching context (`_contexts`), not
        only the longest one's: a node's share is the weighted fraction of the contexts'
        occurrences that continue with its path, sum(w * count(context + path)) / sum(w *
        count(context)). Merges the bot's index and the conversation. Returns (tokens, parents,
        shares), shares falling, like `_global_tree`'s P."""
        contexts = self._contexts()
        total = sum(w * cnt[state] for _, cnt, state, w in contexts)
        if not total:
            return [], [], []
        limit = min(k, self.max_draft_length)
        heap: list[tuple[float, int, int, int, list, int]] = []  # (-share, tie, token, parent, members, depth)
        tokens, parents, shares = [], [], []
        tie = itertools.count()

        def push_children(members: list, node: int, depth: int) -> None:
            if depth >= limit:
                return
            merged: dict[int, list] = {}
            for sam, cnt, state, w in members:
                for token, child in sam.next[state].items():
                    if token != SEP:
                        entry = merged.setdefault(token, [0.0, []])
                        entry[0] += w * cnt[child]
                        entry[1].append((sam, cnt, child, w))
            for token, (weight, kids) in merged.items():
                share = weight / total
                if share >= self.min_wide_share:
                    heapq.heappush(heap, (-share, next(tie), token, node, kids, depth + 1))

        push_children(contexts, -1, 0)
        while heap and len(tokens) < limit:
            neg_share, _, token, parent, members, depth = heapq.heappop(heap)
            tokens.append(token)
            parents.append(parent)
            shares.append(-neg_share)
            push_children(members, len(tokens) - 1, depth)
        return tokens, parents, shares

    def _calibrated_wide_tree(self, length: int, k: int) -> tuple[list[int], list[int], list[float]]:
        """`_wide_tree` with P: each node's share given its parent's, calibrated by how often such
        nodes were right, multiplied down its path; the tree is remembered for `update` to score."""
        tokens, parents, shares = self._wide_tree(k)
        steps = [share / (shares[parent] if parent >= 0 else 1.0) for share, parent in zip(shares, parents)]
        probs: list[float] = []
        for step, parent in zip(steps, parents):
            probs.append(self.calibration.estimate(step) * (probs[parent] if parent >= 0 else 1.0))
        self.calibration.drafted(length, tokens, parents, steps)
        return tokens, parents, probs

    def propose_tree(self, ids: torch.Tensor, k: int) -> tuple[torch.Tensor, list[int]]:
        """Like `propose`, as a tree: (draft_ids [n], parents [n]) with parents[i] < i the node each
        token follows (-1: the last token). The global index drafts up to `tree_width`
        continuations of each node seen in earlier replies; the conversation itself drafts a chain
        (wide: `_calibrated_wide_tree`). The tree is cut like a chain: to the best-first prefix
        maximising (1 + P_1 + ... + P_n) / c(n)."""
        self._extend(ids)
        if self.wide:
            out, parents, probs = self._calibrated_wide_tree(ids.shape[1], k)
        else:
            out, parents, probs = self._longest_match_tree(k)
        n = best_prefix(probs, self.cost)
        self.last_score = sum(probs[:n])
        return torch.tensor(out[:n], dtype=torch.long, device=ids.device), parents[:n]

    def _longest_match_tree(self, k: int) -> tuple[list[int], list[int], list[float]]:
        """The conversation's chain, or the bot's index's tree where its match is at least as long."""
        out, probs, local_matched = self._local(k)
        parents = list(range(-1, len(out) - 1))
        if self.automaton is not None and self.matched >= local_matched:
            glob, glob_parents, glob_probs = self._global_tree(k, self.tree_width)
            if glob:
                out, parents, probs = glob, glob_parents, glob_probs
        return out, parents, probs

    def update(self, num_accepted: int, ids_after: torch.Tensor) -> None:
        if self.wide:
            self.calibration.learn(ids_after)

    def propose(self, ids: torch.Tensor, k: int) -> tuple[torch.Tensor, None]:
        self._extend(ids)
        out, probs, local_matched = self._local(k)
        if self.automaton is not None and self.matched >= local_matched:
            glob, glob_probs = self._global(k)
            if glob:
                out, probs = glob, glob_probs
        n = best_prefix(probs, self.cost)
        self.last_score = sum(probs[:n])
        if n == 0:
            return ids[0, :0], None  # [0], on the ids' device
        return torch.tensor(out[:n], dtype=torch.long, device=ids.device), None
