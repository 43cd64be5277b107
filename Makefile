# make demo : set up .venv (if missing) and run the demo (train, atlas, report) into runs/demo
# make test : set up .venv (if missing) and run the whole test suite
VENV ?= .venv
# test workers: one per core (pytest-xdist; each file's tests stay on one worker)
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lossatlas-installed

.PHONY: demo test lint bench-cpu clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/lossatlas demo

test: $(STAMP)
	$(PY) -m pytest -q -n $(JOBS) --dist loadfile

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf runs/demo .pytest_cache
