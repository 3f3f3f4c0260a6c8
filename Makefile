VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test lint demo bench bench-quick compat clean

$(PY):
	python3 -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -n 2 tests

# ruff over the whole tree; mypy over the packages its config names (dispatcher, clients)
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

demo: $(STAMP)
	$(VENV)/bin/ddsdemo

bench: $(STAMP)
	$(PY) -m bench.run

bench-quick: $(STAMP)
	BENCH_QUICK=1 $(PY) -m bench.run

# every stream of every file of the full corpus (DDS_CORPUS, default ../shared/corpus) against uproot
compat: $(STAMP)
	$(PY) tests/corpus.py

clean:
	rm -rf $(VENV) build *.egg-info
