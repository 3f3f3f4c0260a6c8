VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test lint demo bench bench-quick bench-remote compat clean browser xrootd-server

$(PY):
	python3 -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

test: $(STAMP) browser xrootd-server
	$(PY) -m pytest -n 2 tests

# the ddsmonitor page test drives Debian's chromium headless; installed only where missing
browser:
	@test -x /usr/bin/chromium || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium)

# the XRootD tests start Debian's xrootd server on loopback; installed only where missing
xrootd-server:
	@test -x /usr/bin/xrootd || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q xrootd-server)

# ruff over the whole tree; mypy over the packages its config names (dispatcher, clients)
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

demo: $(STAMP)
	$(VENV)/bin/ddsdemo

# scenarios 1 and 2 read the file through a real XRootD server beside DDS
bench: $(STAMP) xrootd-server
	$(PY) -m bench.run

# compressed wire over a throttled link, and data read through XRootD
bench-remote: $(STAMP) xrootd-server
	$(PY) -m bench.remote

bench-quick: $(STAMP) xrootd-server
	BENCH_QUICK=1 $(PY) -m bench.run

# every stream of every file of the full corpus (DDS_CORPUS, default ../shared/corpus) against uproot
compat: $(STAMP)
	$(PY) tests/corpus.py

clean:
	rm -rf $(VENV) build *.egg-info
