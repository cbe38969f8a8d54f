"""c_verify(k): the cost of one target forward over k draft tokens (+1) relative to one decode step.

    cost = verify_cost(model)          # measured once per model per process (~1 s on CPU)
    cost = verify_cost(model, max_age=600)  # ... and refined when the last timing is older
    cost(0) == 1.0; cost(8) -> e.g. 1.4 for int8 weights on a 2-core Xeon, 2.1 for int4

On a CPU, a decode step reads every weight once; verifying k tokens reads them once too but
does k+1 times the arithmetic, so c_verify(k) grows with k — slowly where the step is bound
by memory (bf16: ~1.2 at k=16), fast where the matmul kernel is built for one row (int4:
~3 at k=16). The adaptive draft length (draft_length.py) weighs expected accepted tokens
against this cost.

A measurement taken while other processes load the machine is distorted, and not evenly: a
verify over 16 tokens slows more than a one-token step, so drafts come out shorter than they
should for as long as the curve is kept. Given `max_age`, a curve older than that is timed
again and merged with the old one by keeping, for each k, the fastest forward seen: load only
ever adds time, so every refresh brings the curve closer to the machine's own.
"""

from __future__ import annotations

import bisect
import threading
import time
import weakref
from dataclasses import dataclass

import torch

from .forward import cache_argument, crop, extend, new_cache, track_rollback
from .loading import max_positions

MEASURED_KS = (0, 1, 3, 7, 11, 15)  # draft lengths timed; in between is interpolated linearly
PROBE_CONTEXT = 64  # tokens already in the cache while timing: a short chat prompt


@dataclass(frozen=True)
class VerifyCost:
    ks: tuple[int, ...]  # draft lengths measured, ascending, starting at 0
    relative: tuple[float, ...]  # forward time over k+1 tokens / forward time over 1 token
    step_s: float  # seconds of one decode step (k = 0)

    def seconds(self) -> tuple[float, ...]:
        """The forward times measured, per k in `ks`."""
        return tuple(r * self.step_s for r in self.relative)

    def merged(self, other: "VerifyCost") -> "VerifyCost":
        """The curve of the fastest time either measured for each k (same `ks`)."""
        best = [min(a, b) for a, b in zip(self.seconds(), other.seconds())]
        return VerifyCost(self.ks, tuple(t / best[0] for t in best), best[0])

    def __call__(self, k: int) -> float:
        """c_verify(k), linear between measured points, extrapolated linearly past the last."""
        if k <= 0:
            return 1.0
        i = min(max(bisect.bisect_left(self.ks, k), 1), len(self.ks) - 1)
        k0, k1, c0, c1 = self.ks[i - 1], self.ks[i], self.relative[i - 1], self.relative[i]
        return max(1.0, c0 + (c1 - c0) * (k - k0) / (k1 - k0))


# model -> (its curve, time.monotonic() when last timed)
_measured: "weakref.WeakKeyDictionary[torch.nn.Module, tuple[VerifyCost, float]]" = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def verify_cost(model, reps: int = 3, max_age: float | None = None) -> VerifyCost:
    """c_verify(k) of `model` for MEASURED_KS, the best of `reps` timings each: measured once per
    model per process, and — given `max_age` (seconds) — timed again when older than that and
    merged with what was measured before (`VerifyCost.merged`)."""
    with _lock:
        entry = _measured.get(model)
        if entry is None:
            cost = measure_verify_cost(model, reps=reps)
        elif max_age is not None and time.monotonic() - entry[1] >= max_age:
            # the kernels are warm in a serving process: one timed round, no warm-up (~0.3-0.6 s on 2 cores)
            cost = entry[0].merged(measure_verify_cost(model, ks=entry[0].ks, reps=1, warm_up=False))
        else:
            return entry[0]
        _measured[model] = (cost, time.monotonic())
        return cost


def _forward_timer(model, max_k: int):
    """A cache holding a short random context for `model`, and timed(k): seconds of one forward
    over k drafts + 1 after it (the cache rolled back afterwards). Call under inference_mode."""
    device = next(model.parameters()).device
    vocab = model.get_input_embeddings().weight.shape[0]
    cache_arg, cache = cache_argument(model), new_cache(model)
    context = min(PROBE_CONTEXT, max(1, (max_positions(model) or 2048) - max_k - 2))
    ids = torch.randint(0, vocab, (1, context + max_k + 1), device=device)  # [1, S + k + 1]
    extend(model, cache_arg, cache, ids[:, :context], start=0, keep=1)
    track_rollback(cache)

    def timed(k: int) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        extend(model, cache_arg, cache, ids[:, context:context + k + 1], start=context, keep=k + 1)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
        crop(cache, context)
        return seconds
    return timed


@torch.inference_mode()
def measure_verify_cost(model, ks: tuple[int, ...] = MEASURED_KS, reps: int = 3, warm_up: bool = True) -> VerifyCost:
    timed = _forward_timer(model, max(ks))
    best = {k: float("inf") for k in ks}
    for _ in range(reps + warm_up):  # a first round warms up the kernels
        for k in ks:  # interleaved, so load from other processes hits every k alike
            best[k] = min(best[k], timed(k))
    step = best[ks[0]]
    return VerifyCost(tuple(ks), tuple(best[k] / step for k in ks), step)


@torch.inference_mode()
def step_times(models: dict, rounds: int = 7) -> dict:
    """{name: model} -> {name: seconds of one decode step, the best of `rounds`}, timed in
    interleaved rounds (every model once per round), so a burst of load from another process
    slows every model alike instead of the one timed during it."""
    timers = {name: _forward_timer(model, 0) for name, model in models.items()}
    best = {name: float("inf") for name in models}
    for _ in range(rounds + 1):  # the first round warms up the kernels
        for name, timed in timers.items():
            best[name] = min(best[name], timed(0))
    return best
