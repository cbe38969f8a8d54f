"""`python -m inference ...` -- the engine's command line; see inference/cli.py."""

from inference.cli import main

raise SystemExit(main())
