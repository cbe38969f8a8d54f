"""Distil a small same-vocabulary draft model from a target, for `model:<folder>` drafting.

    python -m inference distill --out var/drafts/distilled-L2 --minutes 25 --limit 60 --max-new-tokens 64
    python -m inference distill --out var/drafts/distilled-L2 --resume --minutes 40     # continue
    python -m inference chat --drafter model:var/drafts/distilled-L2

1. data: the target answers the shipped prompts (inference/data/distill_prompts.jsonl, and
   --data conversations) greedily, in left-padded batches; one more target forward per sequence stores its top-k
   log-probs at every reply position (fp16 values + int32 ids, k per position, not V).
2. draft: the target's first N decoder layers + embeddings + final norm + head
   (bench.layer_draft), so it shares the tokenizer by construction.
3. training: KL(p_target || q_draft) on the reply positions (Hinton et al. 2015 knowledge
   distillation on target-written data, as in DistillSpec, Zhou et al. 2024), the teacher's
   top-k renormalised. Only the decoder layers and final norm train; embeddings and head
   stay the target's.
4. held-out: the share of held-out reply positions where draft argmax == target argmax,
   before and after training; DIR/distill.json; the draft saved into DIR.

DIR/checkpoint/ holds the generated data and the training state; `--resume` continues.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from tqdm import tqdm

from .bench import PLAIN_GREEDY, layer_draft, load_prompts, machine_description
from .engine import Engine
from .errors import EngineError
from .loading import BUNDLED_TARGET, _save_plain_safetensors, load_model, max_positions, release_model

SHIPPED_DISTILL_PROMPTS = Path(__file__).resolve().parents[1] / "data" / "distill_prompts.jsonl"
WARMUP_STEPS = 10  # linear lr warm-up, then cosine decay to 10% over --steps / --minutes
SAVE_EVERY = 25  # optimizer steps between checkpoints
GENERATION_KEYS = ("target", "layers", "data", "limit", "max_new_tokens", "top_k", "heldout", "seed")  # first run's


class DistillError(EngineError):
    """A bad distill request (no checkpoint to resume, an existing one about to be overwritten, ...)."""


@dataclass
class DistillConfig:
    out: Path  # the draft folder (load it as model:<out>); checkpoint/ and distill.json go here too
    target: str = BUNDLED_TARGET  # any spec load_model accepts
    layers: int = 2  # decoder layers the draft keeps from the target
    data: Path | None = None  # extra JSONL conversations; the target writes their replies
    limit: int | None = None  # use only the first N conversations (--data first, then the shipped ones)
    max_new_tokens: int = 64  # reply length while generating the data
    steps: int | None = None  # optimizer steps in total, across resumes
    minutes: float | None = 30.0  # wall-clock budget in total (data + training), across resumes
    lr: float = 2e-3  # AdamW peak learning rate (docs/distill.md: 3e-4 was too slow)
    batch: int = 4  # sequences per optimizer step
    gen_batch: int = 8  # prompts the target answers at once while generating the data
    top_k: int = 32  # teacher log-probs kept per position
    heldout: float = 0.1  # share of sequences held out for the acceptance estimate
    seed: int = 0
    device: str | None = None
    dtype: str | None = None  # the target's precision while generating; the draft trains in fp32
    resume: bool = False
    progress: bool = True


class Budget:
    """Wall clock across resumes: `previous` seconds spent before this process started."""

    def __init__(self, minutes: float | None, previous: float = 0.0):
        self.limit = None if minutes is None else 60.0 * minutes
        self.previous, self.started = previous, time.perf_counter()

    def elapsed(self) -> float:
        return self.previous + time.perf_counter() - self.started

    def spent(self) -> bool:
        return self.limit is not None and self.elapsed() >= self.limit


# ---------------------------------------------------------------------------- data


def load_conversations(data: Path | None, limit: int | None) -> list[dict]:
    """--data conversations first, then the shipped prompts; trailing assistant turns dropped."""
    conversations = (load_prompts(data) if data else []) + load_prompts(SHIPPED_DISTILL_PROMPTS)
    out = []
    for c in conversations[:limit]:
        messages = list(c["messages"])
        while messages and messages[-1]["role"] == "assistant":
            messages.pop()  # the target writes this reply itself
        if messages:
            out.append({"id": c["id"], "messages": messages})
    return out


@torch.inference_mode()
def teacher_topk(model, ids: torch.Tensor, reply_len: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ids: [1, S+R] prompt + reply -> top-k log p at the R reply positions: ([R, k] fp16, [R, k] int32)."""
    logits = model(input_ids=ids[:, :-1], logits_to_keep=reply_len).logits[0].float()  # [R, V]
    values, indices = torch.log_softmax(logits, dim=-1).topk(k, dim=-1)  # sorted: [:, 0] is the argmax
    return values.half().cpu(), indices.int().cpu()


@torch.inference_mode()
def generate_replies(model, prompts: list[torch.Tensor], max_new_tokens: int, eos_ids: list[int],
                     pad_id: int) -> list[list[int]]:
    """Greedy replies to a batch of prompts (each [S_i]), left-padded (8 at once: 2.7x the tokens/s on CPU)."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, device=prompts[0].device)  # [B, W]
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):], mask[i, width - len(p):] = p, 1
    out = model.generate(ids, attention_mask=mask, max_new_tokens=max_new_tokens, eos_token_id=eos_ids,
                         pad_token_id=pad_id, **PLAIN_GREEDY)[:, width:]  # [B, <= max_new_tokens]
    replies = []
    for row in out.tolist():
        ends = [i for i, t in enumerate(row) if t in eos_ids]
        replies.append(row[: ends[0] + 1] if ends else row)  # the end-of-turn token is a draft target too
    return replies


def generate_data(engine, conversations: list[dict], sequences: list[dict], cfg: DistillConfig,
                  budget: Budget, save) -> list[dict]:
    """Answer every conversation not yet in `sequences` greedily, in left-padded batches; store ids
    and teacher top-k. (The engine's row-by-row CPU attention falls back to SDPA with the padding
    mask for a batch: attention.py.)"""
    done = {s["id"] for s in sequences}
    context = max_positions(engine.model) or 1 << 30
    prompts = [(c["id"], engine.encode(c["messages"])[0]) for c in conversations if c["id"] not in done]  # [S]
    todo = [(cid, p) for cid, p in prompts if len(p) + cfg.max_new_tokens <= context]  # skip what cannot fit
    todo.sort(key=lambda t: len(t[1]))  # similar lengths batch with little padding
    pad_id = engine.tokenizer.pad_token_id if engine.tokenizer.pad_token_id is not None else engine.eos_token_ids[0]
    bar = tqdm(total=len(todo), desc="data", unit="reply", disable=not cfg.progress)
    for b in range(0, len(todo), cfg.gen_batch):
        if budget.spent():
            break
        chunk = todo[b:b + cfg.gen_batch]
        replies = generate_replies(engine.model, [p for _, p in chunk], cfg.max_new_tokens,
                                   list(engine.eos_token_ids), pad_id)
        for (cid, prompt), reply in zip(chunk, replies):
            ids = torch.cat([prompt, torch.tensor(reply, device=prompt.device)])[None]  # [1, S+R]
            top_logp, top_ids = teacher_topk(engine.model, ids, len(reply), cfg.top_k)
            sequences.append({"id": cid, "ids": ids[0].cpu(), "reply_len": len(reply),
                              "top_logp": top_logp, "top_ids": top_ids})
        save(sequences)
        bar.update(len(chunk))
    bar.close()
    return sequences


def split(n: int, heldout: float, seed: int) -> tuple[list[int], list[int]]:
    """A fixed random split of n sequences: (train indices, held-out indices), both non-empty for n >= 2."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    k = min(n - 1, max(1, round(n * heldout))) if n >= 2 else 0
    return sorted(order[k:]), sorted(order[:k])


# ---------------------------------------------------------------------------- draft and loss


def initial_draft(cfg: DistillConfig, engine: Engine) -> torch.nn.Module:
    """The target's first `layers` layers (bench.layer_draft) in fp32; all but embeddings and head train.
    A quantised target's linears are the engine's own kernels (no transformers weights to copy):
    the layers then come from an fp32 load of the target, let go once copied."""
    source = engine.model
    if engine.precision.quantized:
        source = load_model(cfg.target, device=engine.device, dtype="fp32", stock=True)[0]
    draft = layer_draft(source, cfg.layers, cfg.target).to(device=engine.device, dtype=torch.float32)
    if engine.precision.quantized:
        release_model(cfg.target, device=engine.device, dtype="fp32", stock=True)
    frozen = {id(draft.get_input_embeddings().weight), id(draft.get_output_embeddings().weight)}
    for p in draft.parameters():
        p.requires_grad_(id(p) not in frozen)  # embeddings and head stay the target's (tied or not)
    return draft


def draft_logprobs(draft, ids: torch.Tensor, reply_len: int) -> torch.Tensor:
    """ids: [S+R] -> log q at the R reply positions: [R, V]."""
    logits = draft(input_ids=ids[None, :-1], logits_to_keep=reply_len).logits[0]  # [R, V]
    return torch.log_softmax(logits.float(), dim=-1)


def kd_loss(log_q: torch.Tensor, top_logp: torch.Tensor, top_ids: torch.Tensor) -> torch.Tensor:
    """Per-position KL(p || q) with p the teacher's top-k renormalised: [R]."""
    log_p = torch.log_softmax(top_logp.float(), dim=-1)  # [R, k], renormalised over the top k
    return (log_p.exp() * (log_p - log_q.gather(-1, top_ids.long()))).sum(-1)  # [R]


@torch.inference_mode()
def evaluate(draft, sequences: list[dict], device: torch.device) -> dict:
    """Greedy agreement (draft argmax == target argmax) and mean KL over all reply positions."""
    draft.eval()
    agree = positions = 0
    kl = 0.0
    for s in sequences:
        log_q = draft_logprobs(draft, s["ids"].to(device), s["reply_len"])  # [R, V]
        top_ids = s["top_ids"].to(device)
        agree += int((log_q.argmax(-1) == top_ids[:, 0]).sum())
        kl += float(kd_loss(log_q, s["top_logp"].to(device), top_ids).sum())
        positions += s["reply_len"]
    return {"acceptance": agree / max(positions, 1), "kl": kl / max(positions, 1), "positions": positions}


# ---------------------------------------------------------------------------- training


def lr_scale(step: int, progress: float) -> float:
    """Linear warm-up over WARMUP_STEPS, then cosine from 1 to 0.1 as progress goes 0 -> 1."""
    if step < WARMUP_STEPS:
        return (step + 1) / WARMUP_STEPS
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def batch_for(step: int, train: list[int], batch: int, seed: int) -> list[int]:
    """Sequences of optimizer step `step`: epochs of seeded permutations, so a resume sees the same order."""
    picked = []
    for i in range(step * batch, (step + 1) * batch):
        epoch, j = divmod(i, len(train))
        epoch_seed = (seed * 100_003 + epoch) % 2 ** 64  # manual_seed takes 64 bits; --seed may use all of them
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(epoch_seed))
        picked.append(train[int(order[j])])
    return picked


def train_step(draft, optimizer, seqs: list[dict], device: torch.device) -> float:
    """One AdamW step on a batch: mean KL over all reply positions of the batch."""
    draft.train()
    optimizer.zero_grad(set_to_none=True)
    positions = sum(s["reply_len"] for s in seqs)
    total = 0.0
    for s in seqs:  # gradient accumulation: one sequence at a time keeps memory at one [R, V]
        log_q = draft_logprobs(draft, s["ids"].to(device), s["reply_len"])
        loss = kd_loss(log_q, s["top_logp"].to(device), s["top_ids"].to(device)).sum() / positions
        loss.backward()
        total += float(loss.detach())
    torch.nn.utils.clip_grad_norm_([p for p in draft.parameters() if p.requires_grad], 1.0)
    optimizer.step()
    return total


def train(draft, optimizer, state: dict, sequences: list[dict], cfg: DistillConfig, budget: Budget,
          device: torch.device, save) -> str:
    """Optimizer steps until --steps or --minutes; returns why it stopped."""
    train_ids = state["train"]
    bar = tqdm(total=cfg.steps, initial=state["step"], desc="distill", unit="step", disable=not cfg.progress)
    left = None if budget.limit is None else max(budget.limit - state["train_start_s"], 1.0)  # training seconds
    stopped = "steps"
    while cfg.steps is None or state["step"] < cfg.steps:
        if budget.spent():
            stopped = "budget"
            break
        progress = max(state["step"] / cfg.steps if cfg.steps else 0.0,
                       (budget.elapsed() - state["train_start_s"]) / left if left else 0.0)
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * lr_scale(state["step"], progress)
        batch = [sequences[i] for i in batch_for(state["step"], train_ids, cfg.batch, cfg.seed)]
        state["losses"].append(train_step(draft, optimizer, batch, device))
        state["step"] += 1
        bar.update()
        bar.set_postfix(kl=f"{state['losses'][-1]:.3f}")
        if state["step"] % SAVE_EVERY == 0:
            save()
    bar.close()
    return stopped


# ---------------------------------------------------------------------------- checkpoint and output


def save_checkpoint(path: Path, obj) -> None:
    """torch.save into a temporary sibling, then rename: a crash never leaves half a checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def loss_summary(losses: list[float], points: int = 10) -> dict:
    """First and last 10% mean, and the curve as `points` chunk means."""
    if not losses:
        return {"first": None, "last": None, "curve": []}
    tenth = max(1, len(losses) // 10)
    chunks = [losses[i * len(losses) // points:(i + 1) * len(losses) // points] for i in range(points)]
    return {"first": sum(losses[:tenth]) / tenth, "last": sum(losses[-tenth:]) / tenth,
            "curve": [round(sum(c) / len(c), 4) for c in chunks if c]}


def format_report(result: dict) -> str:
    """The short table printed at the end of a run."""
    lines = [f"target {result['target']}  draft {result['out']} ({result['layers']} layers)",
             f"data {result['data']['sequences']} sequences ({result['data']['train']} train, "
             f"{result['data']['heldout']} held out, {result['initial']['positions']} held-out positions)", "",
             f"{'draft':<12}{'held-out acceptance':>21}{'KL nats/token':>15}", "-" * 48]
    for name in ("initial", "distilled"):
        r = result[name]
        lines.append(f"{name:<12}{100 * r['acceptance']:>20.1f}%{r['kl']:>15.3f}")
    loss = result["loss"]
    trend = "-" if loss["first"] is None else f"{loss['first']:.3f} -> {loss['last']:.3f}"
    lines += ["", f"steps {result['steps']}, {result['minutes']:.1f} min in total "
              f"(data {result['data_minutes']:.1f}), train loss {trend}, stopped: {result['stopped']}"]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- the run


def read_checkpoint(cfg: DistillConfig) -> tuple[dict | None, dict | None]:
    """(data checkpoint, training state) from DIR/checkpoint/, or (None, None) for a fresh run."""
    data_path, state_path = checkpoint_paths(cfg.out)
    if cfg.resume and not data_path.is_file():
        raise DistillError(f"--resume: no checkpoint in {str(cfg.out)!r} (expected {data_path})")
    if not cfg.resume and data_path.exists():
        raise DistillError(f"{str(cfg.out)!r} already holds a distill checkpoint; pass --resume to continue it "
                           "or choose another --out")
    if not cfg.resume:
        return None, None
    state = torch.load(state_path, weights_only=False) if state_path.is_file() else None
    return torch.load(data_path, weights_only=False), state


def checkpoint_paths(out: Path) -> tuple[Path, Path]:
    return Path(out) / "checkpoint" / "data.pt", Path(out) / "checkpoint" / "train.pt"


def distill(cfg: DistillConfig) -> dict:
    """Generate (or reuse) the data, train, evaluate, save the draft and DIR/distill.json."""
    if cfg.steps is None and cfg.minutes is None:
        raise DistillError("give --steps or --minutes (or both)")
    saved, state = read_checkpoint(cfg)
    if saved:  # the data, its split and the batch order belong to the first run
        cfg = replace(cfg, **saved["generation"])
    gen = {k: getattr(cfg, k) for k in GENERATION_KEYS}
    torch.manual_seed(cfg.seed)
    budget = Budget(cfg.minutes, previous=(state or saved or {}).get("elapsed_s", 0.0))
    engine = Engine(target=cfg.target, drafter="none", device=cfg.device, dtype=cfg.dtype)
    vocab = engine.model.config.vocab_size  # the logits' width: top-k takes at most this many
    if not 1 <= cfg.top_k <= vocab:
        raise DistillError(f"--top-k must be between 1 and {vocab} for {cfg.target} ({vocab} tokens)")
    draft = initial_draft(cfg, engine)  # checks --layers before any generation
    data_path, state_path = checkpoint_paths(cfg.out)
    sequences = saved["sequences"] if saved else []

    def save_data(seqs):
        save_checkpoint(data_path, {"generation": gen, "sequences": seqs, "elapsed_s": budget.elapsed()})

    if state is None:  # the data is frozen once training has started
        sequences = generate_data(engine, load_conversations(cfg.data, cfg.limit), sequences, cfg, budget, save_data)
    if len(sequences) < 2:
        keep = budget.spent() and data_path.is_file()  # stopped by the budget: a resume with more time continues
        if not keep:  # a resume would find no more replies: a checkpoint would only block the next run
            data_path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                data_path.parent.rmdir()
        fix = ("continue with --resume and a larger --minutes" if keep else
               "nothing was kept; run again with a larger --minutes" if budget.spent() else
               "--limit too low, or the conversations do not fit the context with --max-new-tokens; nothing was "
               "kept: run again with a larger --limit")
        raise DistillError(f"only {len(sequences)} reply generated; distilling needs at least 2: {fix}")

    trainable = [p for p in draft.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=0.0)
    if state is None:
        train_ids, heldout_ids = split(len(sequences), cfg.heldout, cfg.seed)
        state = {"step": 0, "losses": [], "train": train_ids, "heldout": heldout_ids,
                 "data_s": budget.elapsed(), "train_start_s": budget.elapsed(),
                 "initial": evaluate(draft, [sequences[i] for i in heldout_ids], engine.device)}
    else:
        draft.load_state_dict(state["draft"], strict=False)  # the frozen rest is the target's, rebuilt above
        optimizer.load_state_dict(state["optimizer"])

    def save_state():
        state.update(draft={n: p.detach().clone() for n, p in draft.named_parameters() if p.requires_grad},
                     optimizer=optimizer.state_dict(), elapsed_s=budget.elapsed())
        save_checkpoint(state_path, state)

    try:
        stopped = train(draft, optimizer, state, sequences, cfg, budget, engine.device, save_state)
    finally:
        save_state()  # also on Ctrl-C: --resume picks up from the last finished step
    result = report(cfg, state, sequences, stopped, budget, evaluate(
        draft, [sequences[i] for i in state["heldout"]], engine.device), engine.device)
    out = Path(cfg.out)
    _save_plain_safetensors(draft, out)
    engine.tokenizer.save_pretrained(out)
    (out / "distill.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def report(cfg: DistillConfig, state: dict, sequences: list[dict], stopped: str, budget: Budget,
           distilled: dict, device: torch.device) -> dict:
    """What DIR/distill.json holds: settings, data size, steps, minutes, held-out numbers, loss curve."""
    return {
        "target": cfg.target, "out": str(cfg.out), "layers": cfg.layers,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_description(device),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "data": {"sequences": len(sequences), "train": len(state["train"]), "heldout": len(state["heldout"]),
                 "reply_tokens": sum(s["reply_len"] for s in sequences),
                 "teacher_mb": round(sum(s["top_logp"].nbytes + s["top_ids"].nbytes for s in sequences) / 2**20, 2)},
        "steps": state["step"], "stopped": stopped, "minutes": budget.elapsed() / 60,
        "data_minutes": state["data_s"] / 60,
        "initial": state["initial"], "distilled": distilled,
        "loss": loss_summary(state["losses"]),
    }
