# Engine benchmarks (see inference/engine/bench.py). `make bench` (43 prompts x 8 methods x 128
# tokens) takes ~30 min on 2 idle CPU cores, hours on busy ones; results.partial.json grows as it goes.
PYTHON ?= .venv/bin/python
BENCH_DRAFT ?= var/drafts/smollm2-L6
BENCH_OUT ?= bench-out/engine
# One torch thread: on 2 cores shared with other jobs, 2 threads oversubscribe and run ~20x
# slower. On a dedicated machine try `make bench BENCH_THREADS=2`.
BENCH_THREADS ?= 1
BENCH = $(PYTHON) -m inference bench --threads $(BENCH_THREADS) --draft $(BENCH_DRAFT)

.PHONY: help bench bench-quick

# First, so that a plain `make` lists the targets (it used to build the draft model): each target's
# "## " comment is its line.
help:  ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## /  make \1\t/' | expand -t 20

# A cheap same-vocabulary draft: the bundled target's first 6 decoder layers.
$(BENCH_DRAFT)/config.json:
	$(PYTHON) -m inference shrink --threads $(BENCH_THREADS) --layers 6 --out $(BENCH_DRAFT)

bench: $(BENCH_DRAFT)/config.json  ## the engine benchmark, 43 prompts x 8 methods (~30 min on 2 idle cores; first builds the draft model, BENCH_DRAFT)
	$(BENCH) --max-new-tokens 128 --out $(BENCH_OUT)

bench-quick: $(BENCH_DRAFT)/config.json  ## the same on 4 prompts, 32 tokens each (a smoke test)
	$(BENCH) --limit 4 --max-new-tokens 32 --out $(BENCH_OUT)-quick
