# Two entry points (see README): `make demo` and `make test`. Both create .venv and install through
# pyproject.toml, with torch pinned to the CPU build by constraints/cpu.txt. The demo installs only what it
# needs (`.[demo]`: no test oracles, no resolver errors); the tests install the development set. Each has its
# own stamp, so `make demo` then `make test` (or the other way round) installs each set once, in one venv.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP_DEMO = $(VENV)/.installed-demo
STAMP_DEV  = $(VENV)/.installed

.PHONY: install install-demo demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP_DEMO): pyproject.toml constraints/cpu.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c constraints/cpu.txt -e ".[demo]"
	touch $(STAMP_DEMO)

$(STAMP_DEV): pyproject.toml constraints/cpu.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c constraints/cpu.txt -e ".[dev]"
	# Test oracle for ColBERT parity: pylate pins an older transformers, so it and datasets go in without
	# their pins (only pylate's scoring code is used, through tests/test_late_interaction.py).
	$(BIN)/python -m pip install --quiet --no-deps pylate==1.2.0 datasets==5.0.1
	$(BIN)/python -m pip install --quiet -c constraints/cpu.txt pyarrow "dill<0.4.2" "multiprocess<0.70.20" \
		xxhash pandas requests
	touch $(STAMP_DEV)

install: $(STAMP_DEV)

install-demo: $(STAMP_DEMO)

demo: $(STAMP_DEMO)
	mkdir -p runs
	HF_HUB_OFFLINE=1 $(BIN)/unirank eval --dataset trec-dl-2019 --run bm25 --depth 100 --out runs/dl19.bm25.embed.trec
	HF_HUB_OFFLINE=1 $(BIN)/unirank eval --dataset scifact --depth 100 --out runs/scifact.bm25.embed.trec

lint: $(STAMP_DEV)
	$(BIN)/ruff check src tests scripts

test: lint
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q --doctest-modules src/unirank tests

clean:
	rm -rf $(VENV) runs .pytest_cache
