"""Prompt prefix reuse: the keys and values of recent prompts' whole prefill chunks, loaded
into a request whose prompt starts the same way.

A chatbot's prompts repeat themselves: every message to a bot starts with the same system
prompt (persona, facts, knowledge), and every turn of a conversation re-sends the turns
before it. Prefilling those ~300 tokens again is up to half of a reply's time on a CPU.

    prefixes = PrefixCache(max_bytes=256 << 20)
    cache = new_cache(model, capacity)
    reused = prefixes.load(prompt_ids, cache)     # the cache now holds the first `reused` tokens (maybe 0)
    ... prefill prompt_ids[reused:] on top of it (forward.prefill, start=reused) ...
    prefixes.store(prompt_ids, cache)             # right after the prefill: the cache holds exactly the prompt

Reuse is exact. forward.prefill encodes a prompt in chunks ending at multiples of
PREFILL_CHUNK, and only whole chunks are stored and loaded (`reused` is a multiple of it,
at most the prompt's length minus one, so one token is left to feed) — or, for a model that
encodes prompts row by row (forward.rows_prefill: int4a8), whose caches are exact wherever a
prefix ends, chunks of REUSE_CHUNK tokens (`shared_prefix_cache` and `for_model` pick): the loaded keys and
values are the very numbers a fresh prefill computes, and so are the logits after the
rest — a reply never depends on which prompts came before it
(tests/engine/test_prefix_cache.py compares caches and replies bit for bit). Hence it is on
by default (`Engine(prefix_cache=False)`, `CHATNEXUS_PREFIX_CACHE=0` turn it off).

Storage is a trie of chunks, the way vLLM's automatic prefix caching keeps blocks: a
chunk is keyed by its parent chunk and its own token ids, so the prefix a thousand
conversations share (a bot's system prompt) is stored once, and `store` copies only the
chunks not stored yet. Chunks are evicted least recently used beyond `max_bytes`; every
load and store refreshes its whole path, deepest first, so a chunk is always less recently
used than its ancestors and eviction only ever takes a leaf (no chunk is left unreachable). Prompts are
stored, and for a rows_prefill model the replies decoded after them too (`keeps_replies`: there
decoding writes the very keys and values a prefill would, so the conversation's next prompt,
which repeats the reply, reuses it exactly); only caches whose layers are all full-attention
`PreallocatedLayer`s (a sliding-window layer keeps no whole prompt): others prefill as
usual.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass

import torch

from .forward import PREFILL_CHUNK, PreallocatedLayer, reuse_chunk, rows_prefill

ROOT = 0  # the parent of every prompt's first chunk (without a namespace)


def _root(namespace):
    """The parent of a prompt's first chunk under `namespace`: each namespace (the worker's: a bot)
    has a trie of its own, so a prompt never reuses — nor, through the reused count in its reply's
    stats, learns of — another namespace's prompts."""
    return ROOT if namespace is None else ("namespace", namespace)


@dataclass
class _Chunk:
    key: tuple  # (id of the chunk before it or ROOT, its token ids): its entry in PrefixCache._index
    layers: list  # per layer (keys, values), each [B, H, chunk, D]
    bytes: int


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def cache_bytes(cache) -> int:
    """Bytes held by a DynamicCache's key/value tensors."""
    tensors = (getattr(layer, name, None) for layer in getattr(cache, "layers", ()) for name in ("keys", "values"))
    return tensor_bytes(t for t in tensors if isinstance(t, torch.Tensor))


def reusable(cache) -> bool:
    """Can `cache` take stored chunks (and give its own)? Full-attention preallocated layers only."""
    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer) is PreallocatedLayer for layer in layers)


class PrefixCache:
    def __init__(self, max_bytes: int = 256 << 20, chunk: int = PREFILL_CHUNK, keeps_replies: bool = False):
        self.max_bytes = max_bytes  # bound on the stored chunks' tensors
        self.chunk = chunk  # forward.prefill's chunk width (forward.reuse_chunk): only whole chunks are reused
        # also store what a reply decoded (decode.py), for the conversation's next prompt: only where
        # decoding writes the cache a prefill would (forward.rows_prefill), or reuse would not be exact
        self.keeps_replies = keeps_replies
        self._chunks: OrderedDict[int, _Chunk] = OrderedDict()  # id -> chunk, least recently used first
        self._index: dict[tuple, int] = {}  # (parent id, token ids) -> id
        self._next = ROOT + 1
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0  # requests that reused a prefix
        self.reused_tokens = 0  # prompt tokens they did not prefill

    @classmethod
    def for_model(cls, model, max_bytes: int = 256 << 20) -> "PrefixCache":
        """A cache whose chunks are the granularity at which `model`'s prompt caches are exact."""
        return cls(max_bytes=max_bytes, chunk=reuse_chunk(model), keeps_replies=rows_prefill(model))

    def __len__(self) -> int:
        """Chunks stored."""
        return len(self._chunks)

    @property
    def bytes(self) -> int:
        return self._bytes

    def _keys(self, prompt_ids: torch.Tensor, chunks: int):
        ids = prompt_ids[0].tolist()
        return [tuple(ids[i * self.chunk:(i + 1) * self.chunk]) for i in range(chunks)]

    def _path(self, tokens: list[tuple], root) -> list[int]:
        """Ids of the stored chunks that spell the longest prefix of `tokens` (chunk token tuples)."""
        path, parent = [], root
        for ids in tokens:
            found = self._index.get((parent, ids))
            if found is None:
                break
            path.append(found)
            parent = found
        return path

    def _touch(self, path: list[int]) -> None:
        for chunk_id in reversed(path):  # deepest first: ancestors end up more recent
            self._chunks.move_to_end(chunk_id)

    def load(self, prompt_ids: torch.Tensor, cache, namespace: str | None = None) -> int:
        """prompt_ids [1, S], an empty cache -> how many leading tokens it now holds (whole chunks, < S),
        from what was stored under the same `namespace` only."""
        if not reusable(cache) or cache.get_seq_length():
            return 0
        with self._lock:
            path = self._path(self._keys(prompt_ids, (prompt_ids.shape[1] - 1) // self.chunk), _root(namespace))
            if not path:
                return 0
            self._touch(path)
            stored = [self._chunks[chunk_id].layers for chunk_id in path]
        for index, layer in enumerate(cache.layers):
            keys = torch.cat([chunk[index][0] for chunk in stored], dim=-2)
            values = torch.cat([chunk[index][1] for chunk in stored], dim=-2)
            layer.update(keys, values)  # written into the layer's buffer (sized by new_cache)
        reused = len(path) * self.chunk
        self.hits += 1
        self.reused_tokens += reused
        return reused

    def store(self, prompt_ids: torch.Tensor, cache, namespace: str | None = None) -> None:
        """Keep the whole chunks of `cache` (which holds exactly prompt_ids [1, S]) not stored yet,
        under `namespace`."""
        if not reusable(cache):
            return
        tokens = self._keys(prompt_ids, prompt_ids.shape[1] // self.chunk)
        root = _root(namespace)
        with self._lock:
            path = self._path(tokens, root)
            parent = path[-1] if path else root
            for i in range(len(path), len(tokens)):
                span = slice(i * self.chunk, (i + 1) * self.chunk)
                layers = [(layer.keys[..., span, :].clone(), layer.values[..., span, :].clone())
                          for layer in cache.layers]
                size = tensor_bytes(tensor for pair in layers for tensor in pair)
                chunk_id, key = self._next, (parent, tokens[i])
                self._next += 1
                self._chunks[chunk_id] = _Chunk(key, layers, size)
                self._index[key] = chunk_id
                self._bytes += size
                path.append(chunk_id)
                parent = chunk_id
            self._touch(path)
            while self._bytes > self.max_bytes and self._chunks:  # a leaf: see _touch
                _, chunk = self._chunks.popitem(last=False)
                del self._index[chunk.key]
                self._bytes -= chunk.bytes

    def clear(self) -> None:
        with self._lock:
            self._chunks.clear()
            self._index.clear()
            self._bytes = 0


_shared: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> its PrefixCache
_shared_lock = threading.Lock()


def shared_prefix_cache(model, max_bytes: int) -> PrefixCache:
    """The prefix cache of a loaded model. Keys and values depend on the model alone, not on
    the drafter, so every Engine serving the same model (one per drafter a bot picks) shares
    one cache and one memory bound (the first caller's)."""
    with _shared_lock:
        cache = _shared.get(model)
        if cache is None:
            cache = _shared[model] = PrefixCache.for_model(model, max_bytes)
        return cache
