# The two commands of the README: `make run` (the main job) and `make test` (the test suite).
# Each creates the virtual environment on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
OUT ?= runs/accents-then-noise-adapter-fusion
# The stream's reference base model (casr pretrain --export, weights 8422aa794ad8cf39; docs/usage.md):
# a first run skips the 7 to 15 minutes of pretraining and every machine starts from the same
# weights. `make run BASE_MODEL=` pretrains the machine's own instead (cached).
BASE_MODEL ?= streams/accents-then-noise.base.pt

.PHONY: install run test clean

install: $(STAMP)

# pip byte-compiles its ~17k installed modules on one core (about 90 s); compileall on every
# core does it in half that. Its status is ignored: a few packages ship files that are not
# Python 3, which pip skips the same way.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --no-compile -e '.[dev]'
	$(PY) -m compileall -qq -j 0 "$$($(PY) -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" || true
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/casr run --stream accents-then-noise --strategy adapter-fusion --out $(OUT) \
		$(if $(BASE_MODEL),--set base_model=casr:$(BASE_MODEL))

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
