# Two entry points (see README): `make demo` and `make test`. Both create .venv and install through
# pyproject.toml, with torch pinned to the CPU build by constraints/cpu.txt.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml constraints/cpu.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints/cpu.txt -e ".[dev]"
	# Test oracle for ColBERT parity: pylate pins an older transformers, so it and datasets go in without
	# their pins (only pylate's scoring code is used, through tests/test_late_interaction.py).
	$(BIN)/python -m pip install --quiet --no-deps pylate==1.2.0 datasets==5.0.1
	$(BIN)/python -m pip install --quiet -c constraints/cpu.txt pyarrow "dill<0.4.2" "multiprocess<0.70.20" \
		xxhash pandas requests
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	mkdir -p runs
	HF_HUB_OFFLINE=1 $(BIN)/unirank eval --dataset trec-dl-2019 --run bm25 --depth 100 --out runs/dl19.bm25.embed.trec
	HF_HUB_OFFLINE=1 $(BIN)/unirank eval --dataset scifact --depth 100 --out runs/scifact.bm25.embed.trec

lint: $(STAMP)
	$(BIN)/ruff check src tests scripts

test: lint
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q --doctest-modules src/unirank tests

clean:
	rm -rf $(VENV) runs .pytest_cache
