"""Prompt prefix reuse: the KV cache of recent prompts, copied into a request whose prompt starts the same way.

A chatbot's prompts repeat themselves: every message to a bot starts with the same system
prompt (persona, facts, knowledge), and every turn of a conversation re-sends the turns
before it. Prefilling those ~300 tokens again is up to half of a reply's time on a CPU.

    prefixes = PrefixCache(max_bytes=256 << 20)
    cache, reused = prefixes.lookup(prompt_ids)   # a private copy holding the first `reused` tokens, or (None, 0)
    ... prefill prompt_ids[reused:] on top of it ...
    prefixes.store(prompt_ids, cache)             # right after the prefill: the cache holds exactly the prompt

Only prompts are stored (never generated tokens), so what a request finds does not depend
on how earlier replies were drafted. Entries are matched by token ids (longest common
prefix, at least `min_reuse` tokens, always leaving one prompt token to feed), copied out
(a request crops and extends its copy freely), and evicted least recently used beyond
`max_bytes`. An entry whose ids are a prefix of a newer one is replaced by it.

Reuse changes how a prompt's keys and values are computed (a prefix, then the rest,
instead of one pass), so the last bits of the logits may differ from a fresh prefill, and a
reply can depend on which prompts came before it (on the bundled model at int4, one reply
in a test left its fresh-prefill twin at token 28). It is therefore opt-in:
`Engine(prefix_cache=True)`, `CHATNEXUS_PREFIX_CACHE=1` for the worker. Speculation stays
lossless against plain decoding in the same cache state.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict

import torch

from .forward import crop


def cache_bytes(cache) -> int:
    """Bytes held by a DynamicCache's key/value tensors."""
    total = 0
    for layer in getattr(cache, "layers", ()):
        for name in ("keys", "values"):
            tensor = getattr(layer, name, None)
            if isinstance(tensor, torch.Tensor):
                total += tensor.numel() * tensor.element_size()
    return total


def common_prefix(a: torch.Tensor, b: torch.Tensor) -> int:
    """Length of the longest common prefix of two 1-D id tensors."""
    n = min(a.numel(), b.numel())
    if n == 0:
        return 0
    differ = (a[:n] != b[:n]).nonzero()
    return int(differ[0]) if differ.numel() else n


class PrefixCache:
    def __init__(self, max_bytes: int = 256 << 20, min_reuse: int = 16):
        self.max_bytes = max_bytes  # bound on the stored caches' tensors
        self.min_reuse = min_reuse  # shorter common prefixes are not worth a copy
        self._entries: OrderedDict[int, tuple[torch.Tensor, object, int]] = OrderedDict()  # key -> (ids, cache, bytes)
        self._next = 0
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0  # requests that reused a prefix
        self.reused_tokens = 0  # prompt tokens they did not prefill

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        return self._bytes

    def lookup(self, prompt_ids: torch.Tensor) -> tuple[object | None, int]:
        """prompt_ids [1, S] -> (a private copy of the best entry cropped to the reused length, that length)."""
        ids = prompt_ids[0]
        with self._lock:
            best_key, best = None, 0
            for key, (entry_ids, _, _) in self._entries.items():
                n = min(common_prefix(entry_ids, ids), ids.numel() - 1)  # feed at least one token
                if n > best:
                    best_key, best = key, n
            if best_key is None or best < self.min_reuse:
                return None, 0
            self._entries.move_to_end(best_key)
            cache = copy.deepcopy(self._entries[best_key][1])
        crop(cache, best)
        self.hits += 1
        self.reused_tokens += best
        return cache, best

    def store(self, prompt_ids: torch.Tensor, cache) -> None:
        """Keep a copy of `cache`, which holds exactly prompt_ids [1, S]."""
        ids = prompt_ids[0].detach().clone()
        if ids.numel() < self.min_reuse:
            return
        size = cache_bytes(cache)
        if size > self.max_bytes:
            return
        snapshot = copy.deepcopy(cache)
        with self._lock:
            for key, (entry_ids, _, entry_bytes) in list(self._entries.items()):
                if entry_ids.numel() <= ids.numel() and common_prefix(entry_ids, ids) == entry_ids.numel():
                    del self._entries[key]  # the new prompt extends it: subsumed
                    self._bytes -= entry_bytes
            self._entries[self._next] = (ids, snapshot, size)
            self._next += 1
            self._bytes += size
            while self._bytes > self.max_bytes and self._entries:
                _, (_, _, entry_bytes) = self._entries.popitem(last=False)
                self._bytes -= entry_bytes

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0
