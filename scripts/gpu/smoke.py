"""Lossless greedy speculation on a GPU, with tiny random models (no model files needed).

    python scripts/gpu/smoke.py [--device cuda]

For fp32 and bf16 and every drafter, the engine's greedy output is compared token for token
with `model.generate` of the same loaded model on a set of random prompts. Prints a table;
exits 1 if an fp32 row differs (bf16 rows are reported: a GPU's bf16 kernels may round a
k-token verify differently from a 1-token step). The models are the test suite's
(tests/engine/conftest.py), so this runs wherever the tests run, CUDA or not.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "engine")]

from conftest import _hf_greedy, byte_tokenizer, save, tiny_llama  # noqa: E402
from transformers import LlamaForCausalLM  # noqa: E402

from inference.engine import Engine  # noqa: E402

DRAFTERS = ("none", "lookup", "suffix", "suffix:tree", "suffix:wide", "model")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--prompts", type=int, default=12)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="gpu-smoke-"))
    tokenizer = byte_tokenizer()
    target_dir = save(tiny_llama(len(tokenizer), layers=2, hidden=64, seed=0), tokenizer, folder / "target")
    draft = tiny_llama(len(tokenizer), layers=1, hidden=64, seed=1)
    target = LlamaForCausalLM.from_pretrained(target_dir)
    draft.load_state_dict({k: v for k, v in target.state_dict().items() if ".layers.1." not in k})
    draft_dir = save(draft, tokenizer, folder / "draft")

    generator = torch.Generator().manual_seed(0)
    # repetitive prompts, so lookup and suffix drafts get accepted
    prompts = []
    for _ in range(args.prompts):
        motif = torch.randint(3, len(tokenizer), (int(torch.randint(2, 6, (1,), generator=generator)),),
                              generator=generator)
        prompts.append(motif.repeat(int(torch.randint(2, 6, (1,), generator=generator)))[None, :])

    failed = False
    print(f"device {args.device} ({torch.cuda.get_device_name() if args.device.startswith('cuda') else 'cpu'}), "
          f"torch {torch.__version__}")
    print(f"{'dtype':6} {'drafter':12} {'identical':>10} {'drafted':>8} {'accepted':>9}")
    for dtype in ("fp32", "bf16"):
        for name in DRAFTERS:
            spec = f"model:{draft_dir}" if name == "model" else name
            engine = Engine(target=target_dir, drafter=spec, device=args.device, dtype=dtype)
            same = drafted = accepted = 0
            for ids in prompts:
                ids = ids.to(engine.device)
                want = _hf_greedy(engine.model, ids, args.max_new_tokens, list(engine.eos_token_ids))
                for _ in range(2):  # the second pass lets suffix draft from the first one's reply
                    got, stats = engine.generate_ids(ids, max_new_tokens=args.max_new_tokens, temperature=0.0,
                                                     eos_token_ids=list(engine.eos_token_ids), namespace="smoke")
                drafted, accepted = drafted + stats.drafted, accepted + stats.accepted
                same += _cut(got, engine.eos_token_ids) == _cut(want, engine.eos_token_ids)
            print(f"{dtype:6} {name:12} {same:>5}/{len(prompts):<4} {drafted:>8} {accepted:>9}")
            failed |= dtype == "fp32" and same != len(prompts)
    return 1 if failed else 0


def _cut(ids: list[int], eos: list[int]) -> list[int]:
    """Up to the first end-of-sequence token, so HF's output and the engine's compare alike."""
    for i, t in enumerate(ids):
        if t in eos:
            return ids[:i]
    return ids


if __name__ == "__main__":
    raise SystemExit(main())
