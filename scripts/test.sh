#!/usr/bin/env bash
# Set up and run the whole test suite on real PostgreSQL, Redis, Celery, uvicorn,
# SMTP and Chromium. Extra arguments go to pytest (e.g. scripts/test.sh tests/engine -x).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --dev
scripts/services.sh
. .venv/bin/activate
exec python -m pytest "$@"
