"""Probe: how well would an EAGLE-style feature head draft for the bundled target on this workload?

    .venv/bin/python scripts/probes/eagle_head.py --out var/probes/eagle   # ~25 min on a 2-core CPU

Not part of the engine (docs/distill.md, "EAGLE-style head: measured, not built" says why). Steps:
1. data: the engine (fp32, greedy) answers the shipped distill prompts (train, 96 tokens) and the
   first turn of the first --eval replay conversations (held out, 64 tokens); stock transformers
   then encodes prompt + reply once and keeps the target's final-norm output at every position
   (its "features": lm_head(features) are the target's logits).
2. head (EAGLE-1, Li et al. 2024): fc([feature_i, embedding(token_i+1)]) -> one Llama decoder
   layer (initialised from the target's last) -> the target's final norm (trainable copy) ->
   predicted feature_i+1; the target's frozen lm_head turns it into a draft token.
   Loss: smooth-L1 to the real next feature + cross-entropy to the target's greedy next token;
   uniform noise on the input features (EAGLE's robustness trick).
3. held out: alpha1 = share of reply positions whose first draft token is the target's; chain =
   accepted tokens when the head drafts --gamma tokens on its own features, as the engine would.
"""

from __future__ import annotations

import argparse
import collections
import copy
import json
import math
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from transformers import DynamicCache  # noqa: E402
from transformers.models.llama import modeling_llama as llama  # noqa: E402

from inference.engine import Engine  # noqa: E402
from inference.engine.distill import load_conversations  # noqa: E402
from inference.engine.loading import BUNDLED_TARGET, load_model  # noqa: E402

REPLAY = Path(__file__).resolve().parents[2] / "inference" / "data" / "replay_support.jsonl"


def collect(engine, stock, conversations, max_new_tokens):
    """Greedy replies from the engine, then the stock model's final-norm output at every position."""
    features = {}
    hook = stock.model.norm.register_forward_hook(lambda module, args, out: features.__setitem__("f", out))
    out = []
    try:
        for c in conversations:
            prompt = engine.encode(c["messages"])[0]  # [S]
            reply, _ = engine.generate_ids(prompt[None], max_new_tokens=max_new_tokens)
            ids = torch.cat([prompt, torch.tensor(reply, dtype=torch.long)])  # [S+R]
            with torch.inference_mode():
                stock(input_ids=ids[None], logits_to_keep=1)
            out.append({"ids": ids, "prompt_len": len(prompt), "f": features["f"][0].float().clone()})  # f: [S+R, d]
    finally:
        hook.remove()
    return out


class Head(torch.nn.Module):
    def __init__(self, target):
        super().__init__()
        config = copy.deepcopy(target.config)
        config._attn_implementation = "sdpa"
        d = config.hidden_size
        self.embed = target.model.embed_tokens.weight.detach()  # [V, d], frozen
        self.fc = torch.nn.Linear(2 * d, d)
        self.layer = llama.LlamaDecoderLayer(config, layer_idx=0)
        self.layer.load_state_dict(target.model.layers[-1].state_dict())
        self.rotary = llama.LlamaRotaryEmbedding(config)
        self.norm = llama.LlamaRMSNorm(d, eps=config.rms_norm_eps)
        self.norm.weight.data.copy_(target.model.norm.weight.data)

    def forward(self, features, tokens, positions, cache=None):
        """features [1, T, d] (of positions p-1), tokens [1, T] (at positions p) -> predicted features [1, T, d]."""
        x = self.fc(torch.cat((features, self.embed[tokens]), dim=-1))
        past = cache.get_seq_length() if cache is not None else 0
        width = x.shape[1]
        mask = torch.ones(width, past + width, dtype=torch.bool).tril(past)[None, None]
        out = self.layer(x, attention_mask=mask, position_ids=positions, past_key_values=cache,
                         use_cache=cache is not None, position_embeddings=self.rotary(x, positions))
        return self.norm(out[0] if isinstance(out, tuple) else out)


def step_loss(head, lm_head, seq, noise):
    ids, f = seq["ids"], seq["f"]
    labels = (f @ lm_head.T).argmax(-1)  # the target's greedy next token after each position
    inputs = f[:-1] + (noise * (torch.rand_like(f[:-1]) - 0.5) if noise else 0)
    predicted = head(inputs[None], ids[1:][None], torch.arange(len(ids) - 1)[None])[0]  # [n-1, d]
    logits = predicted @ lm_head.T
    hits = (logits.argmax(-1) == labels[1:]).float()[seq["prompt_len"] - 1:]  # reply positions
    return F.smooth_l1_loss(predicted, f[1:]), F.cross_entropy(logits, labels[1:]), hits


@torch.no_grad()
def chain(head, lm_head, seq, gamma, every):
    """Accepted draft tokens per drafting step at every `every`-th reply position."""
    ids, f, start = seq["ids"], seq["f"], seq["prompt_len"]
    accepted = []
    for t in range(start, len(ids) - 1, every):  # newest token ids[t]; features known up to t-1
        cache = DynamicCache()
        h = head(f[:t][None], ids[1:t + 1][None], torch.arange(t)[None], cache)[0, -1]
        got = 0
        for g in range(gamma):
            token = int((h @ lm_head.T).argmax())
            if t + 1 + g >= len(ids) or token != int(ids[t + 1 + g]):
                break
            got += 1
            h = head(h[None, None], torch.tensor([[token]]), torch.tensor([[t + g]]), cache)[0, -1]
        accepted.append(got)
    return accepted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--eval", type=int, default=48, help="held-out replay conversations")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--gamma", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    random.seed(0)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()

    engine = Engine(dtype="fp32", drafter="lookup")
    stock, _ = load_model(BUNDLED_TARGET, dtype="fp32", stock=True)
    replay = [json.loads(line) for line in REPLAY.open()][:args.eval]
    held_out = collect(engine, stock, [{"messages": [{"role": "system", "content": c["system"]},
                                                     {"role": "user", "content": c["turns"][0]}]} for c in replay], 64)
    train = collect(engine, stock, load_conversations(None, None), 96)
    data_minutes = (time.time() - started) / 60
    print(f"data: {len(train)} train sequences ({sum(len(s['ids']) for s in train)} positions), "
          f"{len(held_out)} held out, {data_minutes:.1f} min", flush=True)

    lm_head = stock.lm_head.weight.detach()
    head = Head(stock)
    optimizer = torch.optim.AdamW(head.parameters(), lr=args.lr, weight_decay=0.0)
    batch, steps = 4, args.epochs * math.ceil(len(train) / 4)
    step, curve = 0, []
    for epoch in range(args.epochs):
        random.shuffle(train)
        for b in range(0, len(train), batch):
            optimizer.zero_grad()
            for seq in train[b:b + batch]:
                regression, ce, _ = step_loss(head, lm_head, seq, noise=0.2)
                ((regression + ce) / batch).backward()
            torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)
            for group in optimizer.param_groups:  # cosine decay to 10 %
                group["lr"] = args.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * step / steps)))
            optimizer.step()
            step += 1
        with torch.no_grad():
            alpha1 = torch.cat([step_loss(head, lm_head, s, 0.0)[2] for s in held_out]).mean().item()
        curve.append(alpha1)
        print(f"epoch {epoch}: held-out alpha1 {alpha1:.3f}", flush=True)
    with torch.no_grad():
        train_alpha1 = torch.cat([step_loss(head, lm_head, s, 0.0)[2] for s in train[:48]]).mean().item()
    accepted = sum((chain(head, lm_head, s, args.gamma, 3) for s in held_out[:24]), [])
    result = {"train_sequences": len(train), "held_out": len(held_out), "epochs": args.epochs, "lr": args.lr,
              "held_out_alpha1_by_epoch": curve, "train_alpha1": train_alpha1, "gamma": args.gamma,
              "chain_mean_accepted": sum(accepted) / len(accepted),
              "chain_accepted_histogram": dict(sorted(collections.Counter(accepted).items())),
              "minutes": (time.time() - started) / 60, "data_minutes": data_minutes}
    (args.out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
