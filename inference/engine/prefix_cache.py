"""Prompt prefix reuse: the KV cache of recent prompts, copied into a request whose prompt starts the same way.

A chatbot's prompts repeat themselves: every message to a bot starts with the same system
prompt (persona, facts, knowledge), and every turn of a conversation re-sends the turns
before it. Prefilling those ~300 tokens again is up to half of a reply's time on a CPU.

    prefixes = PrefixCache(max_bytes=256 << 20)
    cache, reused = prefixes.lookup(prompt_ids)   # a private copy holding the first `reused` tokens, or (None, 0)
    ... prefill prompt_ids[reused:] on top of it (forward.prefill, start=reused) ...
    prefixes.store(prompt_ids, cache)             # right after the prefill: the cache holds exactly the prompt

Reuse is exact. forward.prefill encodes a prompt in chunks ending at multiples of
PREFILL_CHUNK, and only whole chunks are stored and handed out (`reused` is a multiple of
it, at most the prompt's length minus one, so one token is left to feed): the reused keys
and values are the very numbers a fresh prefill computes, and so are the logits after the
rest — a reply never depends on which prompts came before it
(tests/engine/test_prefix_cache.py compares caches and replies bit for bit). Hence it is on
by default (`Engine(prefix_cache=False)`, `CHATNEXUS_PREFIX_CACHE=0` turn it off).

Only prompts are stored (never generated tokens). Entries are matched by token ids
(longest common prefix), copied out (a request crops and extends its copy freely), and
evicted least recently used beyond `max_bytes`. An entry whose ids are a prefix of a newer
one is replaced by it.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict

import torch

from .forward import PREFILL_CHUNK, crop


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
    def __init__(self, max_bytes: int = 256 << 20, chunk: int = PREFILL_CHUNK):
        self.max_bytes = max_bytes  # bound on the stored caches' tensors
        self.chunk = chunk  # reuse whole prefill chunks only: forward.prefill's chunk width
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
                n -= n % self.chunk  # whole chunks
                if n > best:
                    best_key, best = key, n
            if best_key is None:
                return None, 0
            self._entries.move_to_end(best_key)
            cache = copy.deepcopy(self._entries[best_key][1])
        crop(cache, best)
        self.hits += 1
        self.reused_tokens += best
        return cache, best

    def store(self, prompt_ids: torch.Tensor, cache) -> None:
        """Keep a copy of the whole chunks of `cache`, which holds exactly prompt_ids [1, S]."""
        whole = prompt_ids.shape[1] - prompt_ids.shape[1] % self.chunk
        if whole == 0:
            return
        ids = prompt_ids[0, :whole].detach().clone()
        snapshot = copy.deepcopy(cache)
        crop(snapshot, whole)
        snapshot = copy.deepcopy(snapshot)  # live positions only: the cropped tail's memory goes
        size = cache_bytes(snapshot)
        if size > self.max_bytes:
            return
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
