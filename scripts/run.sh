#!/usr/bin/env bash
# Set up and run the whole platform on the embedded default: SQLite, in-process
# broker and workers, the bundled model. Prints the URL and a demo login.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. .venv/bin/activate
python manage.py migrate --noinput
python manage.py demo
exec python manage.py serve "$@"
