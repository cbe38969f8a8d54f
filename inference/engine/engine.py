"""`Engine`: chat messages in, streamed text out, with lossless speculative decoding.

    engine = Engine(target=BUNDLED_TARGET, drafter="suffix")
    for delta in engine.stream([{"role": "user", "content": "Hi!"}], max_new_tokens=64):
        print(delta, end="", flush=True)
    print(engine.last_stats.as_dict())

One Engine serves one request at a time (drafters keep per-request state); use one per
worker process — `get_engine` caches them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import torch

from .chat import chat_ids
from .decode import DecodeRequest, context_budget, speculative_decode
from .draft_length import DraftLength, draft_costs
from .drafters import Drafter, RecycleMemory, SuffixMemory, make_drafter
from .loading import BUNDLED_TARGET, load_model, max_positions, resolve_device
from .precision import resolve_precision
from .prefix_cache import shared_prefix_cache
from .precision_probe import AUTO, choose_precision
from .sampling import SamplingParams, make_generator
from .stats import GenerationResult, GenerationStats
from .text import IncrementalDetokenizer, StopStringFilter

# chat end-of-turn markers of common families: a reply ends at any of them
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")

Messages = list[dict[str, str]] | str


class Engine:
    def __init__(self, target: str = BUNDLED_TARGET, drafter: str = "suffix", device: str | None = None,
                 dtype: str | torch.dtype | None = None, draft_length: int | None = None,
                 prefix_cache: bool = True, prefix_cache_mb: int = 256):
        self.device = resolve_device(device)
        # weights: fp32|bf16|fp16|int8|int4 (precision.py); "auto": the fastest faithful one here (precision_probe.py)
        self.precision = engine_precision(target, dtype, self.device)
        self.dtype = self.precision.dtype  # activations
        self.model, self.tokenizer = load_model(target, device=self.device, dtype=self.precision)
        self.target_spec = target
        self.drafter_spec = drafter
        self.draft_length = draft_length  # None = adaptive, int = fixed k
        self.cost_aware_draft_length = True  # adaptive k capped by c_verify(k) (draft_length.py)
        # seconds after which c_verify is timed again and refined (verify_cost.py); None: measured
        # once (benchmarks: no timing in the middle of a timed reply); the worker sets it
        self.verify_cost_refresh_s: float | None = None
        self.eos_token_ids = default_eos_token_ids(self.model, self.tokenizer)  # public: benchmarks reuse it
        self.last_stats: GenerationStats | None = None
        self._drafters: dict[str, Drafter] = {}
        self.memory = SuffixMemory()  # namespace (e.g. "bot-12") -> its earlier replies, for `suffix`
        self.recycled = RecycleMemory()  # namespace -> the target's predictions after each token, for `recycle`
        # recent prompts' KV, reused by a prompt that starts the same way (prefix_cache.py): exact,
        # whole prefill chunks, so replies are the same with or without it; one per loaded model,
        # shared by the engines of every drafter
        self.prefixes = shared_prefix_cache(self.model, prefix_cache_mb << 20) if prefix_cache else None
        self.drafter = self.get_drafter(drafter)  # load (and vocab-check) a draft model now

    def warm_up(self) -> None:
        """Pay the one-off costs now rather than on the first reply: the c_verify(k) measurement
        the adaptive draft length needs (~1-2 s on a 2-core CPU; draft_length.py)."""
        if self.draft_length is None and self.cost_aware_draft_length:
            draft_costs(self.model, self.drafter, self.verify_cost_refresh_s)

    def get_drafter(self, spec: str) -> Drafter:
        """Drafter instances are cached per spec."""
        if spec not in self._drafters:
            self._drafters[spec] = make_drafter(spec, self.model, self.tokenizer, self.device, self.precision)
        return self._drafters[spec]

    def remember(self, namespace: str, reply: list[int] | str, question: list[int] | str | None = None) -> None:
        """Teach the namespace's suffix index a finished reply (token ids or text), after the
        user message it answered (optional; its tail makes a repeated question match)."""
        if isinstance(reply, str):
            reply = self.tokenizer(reply, add_special_tokens=False).input_ids
        if isinstance(question, str):
            question = self.question_ids(question)
        self.memory.remember(namespace, list(reply), None if question is None else list(question))

    def question_ids(self, question: str) -> list[int]:
        """The tokens a reply is remembered after: the user message and the template's turn change."""
        return self.tokenizer(question + self._question_suffix(), add_special_tokens=False).input_ids

    def _question_suffix(self) -> str:
        """What the chat template puts between a last user message and the reply ("<|im_end|>...")."""
        marker = "\x00question\x00"
        try:
            text = self.tokenizer.apply_chat_template([{"role": "user", "content": marker}], tokenize=False,
                                                      add_generation_prompt=True, enable_thinking=False)
        except Exception:  # noqa: BLE001 - no chat template: the question alone
            return ""
        return text[text.rfind(marker) + len(marker):]

    # ------------------------------------------------------------------ prompts

    @property
    def context_length(self) -> int:
        """Tokens the target attends over: prompt and reply together fit in this many."""
        return int(max_positions(self.model) or 2048)

    def encode(self, messages: Messages) -> torch.Tensor:
        """Chat messages (rendered by the chat template) or a plain prompt -> input_ids [1, S]."""
        if isinstance(messages, str):
            ids = self.tokenizer(messages, return_tensors="pt").input_ids
        else:
            ids = torch.tensor([self.chat_ids(messages)])
        return ids.to(self.device)

    def chat_ids(self, messages: list[dict]) -> list[int]:
        """The token ids of chat messages as the chat template renders them (chat.py: thinking off,
        a system turn merged into the first user turn where the template has no system role).
        Control tokens written in a message's text (a customer typing "<|im_start|>system", a
        fetched web page) are encoded as the text they are: only the template's own open and close turns."""
        return chat_ids(self.tokenizer, messages)

    # ------------------------------------------------------------------ token level

    def decode_steps(self, input_ids: torch.Tensor, max_new_tokens: int, temperature: float, top_k: int,
                     top_p: float, seed: int | None, drafter: str | None,
                     eos_token_ids: list[int] | None, stats: GenerationStats,
                     namespace: str | None = None, deadline: float | None = None) -> Iterator[list[int]]:
        """The token stream of one request: lists of new token ids as steps finish.

        `namespace` (e.g. "bot-12") lets a suffix drafter draft from that namespace's earlier
        replies (see `remember`), a recycle drafter from the target's predictions in its earlier
        forwards; None drafts from the conversation only. Stored prompts are
        reused within a namespace only (another bot's, another tenant's, serve none).
        `deadline` (a `time.monotonic()` value): no target forward starts after it, and the reply
        ends there with stop_reason "time", a prefix of the reply without it (decode.py)."""
        spec = drafter or self.drafter_spec
        stats.drafter = spec
        sampling = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p)
        request = DecodeRequest(
            prompt_ids=input_ids.to(self.device),
            max_new_tokens=context_budget(self.model, input_ids.shape[1], max_new_tokens),
            sampling=sampling,
            eos_token_ids=frozenset(self.eos_token_ids if eos_token_ids is None else eos_token_ids),
            generator=None if sampling.greedy else make_generator(seed, self.device),
            namespace=namespace,
            deadline=deadline,
        )
        drafter_ = self.get_drafter(spec)
        if hasattr(drafter_, "set_index"):
            drafter_.set_index(self.memory.get(namespace))
        if drafter_.wants_logits:  # a recycle member: the namespace's table (none made for other drafters)
            drafter_.set_table(self.recycled.table(namespace))
        # a self-paced drafter (suffix) picks its own length per step, up to its cap
        pace = getattr(drafter_, "max_draft_length", None)
        fixed = self.draft_length or pace
        # adaptive k weighs expected accepted tokens against c_verify(k) of this model (draft_length.py);
        # a self-paced drafter gets c_verify itself and cuts its drafts by it (suffix.py)
        cost_aware = self.draft_length is None and self.cost_aware_draft_length
        costs = draft_costs(self.model, drafter_, self.verify_cost_refresh_s) if cost_aware else {}
        if hasattr(drafter_, "set_cost"):
            drafter_.set_cost(costs.get("cost"))
        length = DraftLength(fixed=fixed, **(costs if fixed is None else {}))
        return speculative_decode(self.model, drafter_, request, length, stats, self.prefixes)

    def generate_ids(self, input_ids: torch.Tensor, max_new_tokens: int = 256, temperature: float = 0.0,
                     top_k: int = 0, top_p: float = 1.0, seed: int | None = None, drafter: str | None = None,
                     eos_token_ids: list[int] | None = None, namespace: str | None = None,
                     deadline: float | None = None) -> tuple[list[int], GenerationStats]:
        """input_ids: [1, S] -> (new token ids, stats). No text, no stop strings."""
        started = time.perf_counter()
        stats = GenerationStats()
        new_ids: list[int] = []
        for tokens in self.decode_steps(input_ids, max_new_tokens, temperature, top_k, top_p, seed, drafter,
                                        eos_token_ids, stats, namespace, deadline):
            new_ids.extend(tokens)
        stats.finish(time.perf_counter() - started)
        self.last_stats = stats
        return new_ids, stats

    # ------------------------------------------------------------------ text level

    def stream(self, messages: Messages, max_new_tokens: int = 256, temperature: float = 0.0, top_k: int = 0,
               top_p: float = 1.0, seed: int | None = None, stop: list[str] | None = None,
               drafter: str | None = None, namespace: str | None = None,
               deadline: float | None = None) -> Iterator[str]:
        """Yield text deltas as soon as tokens are accepted; sets `last_stats` when done.
        `deadline`: a `time.monotonic()` value after which no target forward starts (decode_steps)."""
        yield from self._stream(messages, max_new_tokens, temperature, top_k, top_p, seed, stop, drafter, [],
                                namespace, deadline)

    def generate(self, messages: Messages, max_new_tokens: int = 256, temperature: float = 0.0, top_k: int = 0,
                 top_p: float = 1.0, seed: int | None = None, stop: list[str] | None = None,
                 drafter: str | None = None, namespace: str | None = None,
                 deadline: float | None = None) -> GenerationResult:
        """The whole reply at once: exactly the joined deltas of `stream`."""
        token_ids: list[int] = []
        text = "".join(self._stream(messages, max_new_tokens, temperature, top_k, top_p, seed, stop, drafter,
                                    token_ids, namespace, deadline))
        return GenerationResult(text=text, token_ids=token_ids, stats=self.last_stats)

    def _stream(self, messages: Messages, max_new_tokens: int, temperature: float, top_k: int, top_p: float,
                seed: int | None, stop: list[str] | None, drafter: str | None,
                token_ids: list[int], namespace: str | None = None,
                deadline: float | None = None) -> Iterator[str]:
        started = time.perf_counter()
        stats = GenerationStats()
        detokenizer = IncrementalDetokenizer(self.tokenizer)
        stops = StopStringFilter(stop)
        steps = self.decode_steps(self.encode(messages), max_new_tokens, temperature, top_k, top_p, seed,
                                  drafter, None, stats, namespace, deadline)
        try:
            for tokens in steps:
                out = []
                for token in tokens:
                    token_ids.append(token)
                    out.append(stops.push(detokenizer.push(token)))
                    if stops.stopped:
                        break
                delta = "".join(out)
                if delta:
                    yield delta
                if stops.stopped:
                    stats.stop_reason = "stop"
                    stats.new_tokens = len(token_ids)
                    break
            else:
                tail = stops.push(detokenizer.flush())
                tail += "" if stops.stopped else stops.flush()
                if stops.stopped:
                    stats.stop_reason = "stop"
                if tail:
                    yield tail
        finally:
            steps.close()
            stats.finish(time.perf_counter() - started)
            self.last_stats = stats


def engine_precision(target: str, dtype: str | torch.dtype | None, device: torch.device):
    """A precision name / dtype / None (the device default), or "auto": measured on this machine."""
    if dtype == AUTO:
        return choose_precision(target, device)
    return resolve_precision(dtype, device)


def default_eos_token_ids(model, tokenizer) -> list[int]:
    """Tokenizer EOS, generation-config EOS and the chat end-of-turn token(s) in this vocabulary."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    config_eos = getattr(model.generation_config, "eos_token_id", None)
    if isinstance(config_eos, int):
        ids.add(config_eos)
    elif config_eos:
        ids.update(config_eos)
    vocab = tokenizer.get_vocab()
    ids.update(vocab[token] for token in END_OF_TURN_TOKENS if token in vocab)
    return sorted(ids)


# ---------------------------------------------------------------------------- per-process cache

_engines: dict[tuple, Engine] = {}
_engines_lock = threading.Lock()


def get_engine(target: str = BUNDLED_TARGET, drafter: str = "suffix", device: str | None = None,
               dtype: str | torch.dtype | None = None, prefix_cache: bool = True,
               prefix_cache_mb: int = 256) -> Engine:
    """One Engine per (target, drafter, device, dtype, prefix reuse) per process."""
    dev = resolve_device(device)
    key = (target, drafter, str(dev), dtype if dtype == AUTO else resolve_precision(dtype, dev).name, prefix_cache,
           prefix_cache_mb)
    with _engines_lock:
        if key not in _engines:
            _engines[key] = Engine(target=target, drafter=drafter, device=device, dtype=dtype,
                                   prefix_cache=prefix_cache, prefix_cache_mb=prefix_cache_mb)
        return _engines[key]
