"""The decode loop: prefill once, then draft -> verify -> roll back, until EOS or the budget.

    prefill:  target(prompt)                        -> first token (the cache holds the prompt)
    step:     draft = drafter.propose(ids, k)       # [k']
              logits = target([last] + draft)      # [1, k'+1, V] — one forward verifies all
              emitted = verify(draft, logits)      # accepted prefix + correction/bonus token
              cache.crop(len(ids) - 1)             # drop rejected drafts: cache = all but `last`
    tree step (greedy, drafter.drafts_trees, forward.tree_supported): the drafter proposes a
              tree (draft_ids, parents); one forward verifies every branch (extend_tree),
              verify_greedy_tree follows the target's, keep_path moves its keys/values into place
A drafter that wants_logits (recycle) is shown every forward's logits: the prefill's last row,
then every verify row, before it proposes again.
Invariant between steps: the target cache holds every token except the newest one, which
is fed first in the next forward. With a PrefixCache the prefill starts after the longest
stored prompt prefix (prefix_cache.py). With the `none` drafter this is plain decoding.

`speculative_decode` yields the new tokens of each step, already cut at EOS and at
max_new_tokens, so callers can stream them. A request with a deadline (a `time.monotonic()`
value) starts no target forward after it: the reply stops where it is, `stop_reason` "time" —
a prefix of what it would have been (the worker's time limit, inference/tasks.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .draft_length import DraftLength
from .drafters.base import Drafter
from .errors import EngineError
from .forward import (cache_argument, crop, extend, extend_tree, keep_path, new_cache, prefill, track_rollback,
                      tree_supported)
from .loading import max_positions
from .prefix_cache import PrefixCache
from .sampling import SamplingParams, probs_from_logits, sample
from .stats import GenerationStats
from .verify import verify_greedy, verify_greedy_tree, verify_sampling


MAX_DRAFT_ROOM = 64  # a verify forward appends the draft before rejected tokens are cropped


@dataclass
class DecodeRequest:
    prompt_ids: torch.Tensor  # [1, S] on the model's device
    max_new_tokens: int  # hard cap on generated tokens
    sampling: SamplingParams  # temperature / top-k / top-p, shared by target and draft
    eos_token_ids: frozenset[int]  # any of these ends the reply (and is returned)
    generator: torch.Generator | None  # per-request randomness (sampling only)
    namespace: str | None = None  # whose stored prompts it may reuse (the worker's: the bot; prefix_cache.py)
    deadline: float | None = None  # time.monotonic() after which no target forward starts (None: no limit)


def context_budget(model, prompt_len: int, max_new_tokens: int) -> int:
    """Clip max_new_tokens so prompt + reply fits max_position_embeddings."""
    limit = max_positions(model)
    if limit is None:
        return max_new_tokens
    if prompt_len >= limit:
        raise EngineError(f"prompt has {prompt_len} tokens but the model's context is {limit}; shorten it")
    return min(max_new_tokens, limit - prompt_len)


def past(deadline: float | None) -> bool:
    """Has the request's deadline passed? (One clock read per target forward.)"""
    return deadline is not None and time.monotonic() >= deadline


def first_token(logits: torch.Tensor, request: DecodeRequest) -> int:
    """logits: [1, V] -> the token the target itself picks (argmax or a sample from p)."""
    if request.sampling.greedy:
        return int(logits.argmax(dim=-1))
    return int(sample(probs_from_logits(logits, request.sampling), request.generator))


def verify(draft_ids: torch.Tensor, draft_probs: torch.Tensor | None, logits: torch.Tensor,
           request: DecodeRequest) -> list[int]:
    """logits: [k+1, V] -> emitted tokens (accepted drafts + one target token)."""
    if request.sampling.greedy:
        return verify_greedy(draft_ids, logits)
    return verify_sampling(draft_ids, draft_probs, probs_from_logits(logits, request.sampling), request.generator)


def cut(tokens: list[int], produced: int, request: DecodeRequest) -> tuple[list[int], str | None]:
    """Cut a step's tokens at the first EOS and at max_new_tokens; say why it stopped, if it did."""
    for i, token in enumerate(tokens):
        if token in request.eos_token_ids:
            return tokens[: i + 1], "eos"
    room = request.max_new_tokens - produced
    if len(tokens) >= room:
        return tokens[:room], "length"
    return tokens, None


@torch.inference_mode()
def speculative_decode(model, drafter: Drafter, request: DecodeRequest, draft_length: DraftLength,
                       stats: GenerationStats, prefixes: PrefixCache | None = None) -> Iterator[list[int]]:
    """Yield lists of new token ids, step by step; fills `stats` (stop_reason included)."""
    started = time.perf_counter()
    cache_arg = cache_argument(model)
    prompt_len = request.prompt_ids.shape[1]
    stats.prompt_tokens = prompt_len
    if request.max_new_tokens <= 0:
        return
    if past(request.deadline):  # the time is up before the prompt was read: nothing said
        stats.stop_reason = "time"
        return
    # ids: [1, S + max_new] buffer; ids[:, :length] is the sequence so far
    ids = torch.empty(1, prompt_len + request.max_new_tokens, dtype=torch.long, device=request.prompt_ids.device)
    ids[:, :prompt_len] = request.prompt_ids
    drafter.begin(request.prompt_ids, request.sampling, request.generator)

    cache = new_cache(model, prompt_len + request.max_new_tokens + MAX_DRAFT_ROOM)  # one allocation per reply
    reused = prefixes.load(request.prompt_ids, cache, request.namespace) if prefixes is not None else 0
    # the prompt is encoded once: what a stored prompt already holds (prefix_cache.py) is not prefilled again
    logits = prefill(model, cache_arg, cache, request.prompt_ids[:, reused:], start=reused)  # [1, 1, V]
    stats.prefix_reused = reused
    if prefixes is not None:
        prefixes.store(request.prompt_ids, cache, request.namespace)
    if drafter.name != "none":  # rejected drafts get cropped: sliding-window layers keep their past from now on
        track_rollback(cache)
    observe = drafter.wants_logits  # token recycling: the target's predictions become drafts
    if observe:
        drafter.observe(request.prompt_ids[0, -1:], logits[0, -1:])
    tokens, reason = cut([first_token(logits[:, -1], request)], 0, request)
    stats.record_step(drafted=0, accepted=0)
    stats.verify_s += time.perf_counter() - started
    stats.ttft_s = time.perf_counter() - started
    ids[0, prompt_len] = tokens[0]
    length, produced = prompt_len + 1, 1
    stats.new_tokens = produced
    yield tokens
    # greedy decoding verifies a drafter's trees (several continuations) in one forward
    trees = request.sampling.greedy and drafter.drafts_trees and tree_supported(model)
    while reason is None:
        if past(request.deadline):  # checked between target forwards: what was emitted stands
            reason = "time"
            break
        # never draft past the budget: the step emits up to k + 1 tokens
        k = min(draft_length.next(), request.max_new_tokens - produced - 1)
        t0 = time.perf_counter()
        parents = None
        if k <= 0:
            draft_ids, draft_probs = ids[0, :0], None
        elif trees:
            (draft_ids, parents), draft_probs = drafter.propose_tree(ids[:, :length], k), None
            draft_ids, parents = draft_ids[:k], parents[:k]
            if parents == list(range(-1, len(parents) - 1)):
                parents = None  # a chain: verified as one
        else:
            draft_ids, draft_probs = drafter.propose(ids[:, :length], k)
        draft_ids = draft_ids[:max(k, 0)]  # [k']
        t1 = time.perf_counter()
        step_input = torch.cat((ids[0, length - 1:length], draft_ids))[None]  # [1, k'+1]
        if parents is None:
            logits = extend(model, cache_arg, cache, step_input, start=length - 1, keep=step_input.shape[1])
            emitted = verify(draft_ids, draft_probs, logits[0], request)  # len n + 1
        else:  # tree rows sit side by side; the accepted path's keys/values move into place
            logits = extend_tree(model, cache, step_input, length - 1, parents)
            emitted, path = verify_greedy_tree(draft_ids, parents, logits[0])
            keep_path(cache, length - 1, path)
        accepted = len(emitted) - 1
        crop(cache, length + accepted)  # cache = everything but the newest token
        t2 = time.perf_counter()
        if observe:  # every row: the rejected drafts' predictions too
            drafter.observe(step_input[0], logits[0])
        ids[0, length:length + len(emitted)] = torch.tensor(emitted, dtype=torch.long)
        length += len(emitted)
        drafter.update(accepted, ids[:, :length])
        draft_length.update(len(draft_ids), accepted)
        stats.record_step(drafted=len(draft_ids), accepted=accepted)
        stats.draft_s += t1 - t0 + time.perf_counter() - t2
        stats.verify_s += t2 - t1
        tokens, reason = cut(emitted, produced, request)
        produced += len(tokens)
        stats.new_tokens = produced
        yield tokens
    if prefixes is not None and prefixes.keeps_replies:
        # decoding wrote the reply's keys and values as a prefill of it would (forward.rows_prefill):
        # the conversation's next prompt, which repeats the reply, reuses them too
        prefixes.store(ids[:, :length - 1], cache, request.namespace)
    stats.stop_reason = reason
