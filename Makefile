# The two commands of the README: `make run` (the main job) and `make test` (the test suite).
# Each creates the virtual environment on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
OUT ?= runs/accents-then-noise-adapter-fusion

.PHONY: install run test clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/casr run --stream accents-then-noise --strategy adapter-fusion --out $(OUT)

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
