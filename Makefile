# Two commands on a fresh machine: `make train` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: train test lint clean deb-packages

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Reinstall only when the declared dependencies change.
$(VENV)/.installed: $(PY) setup.cfg pyproject.toml
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(PY) setup.cfg pyproject.toml
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

# The main job: Xception on the embedded digits. Offline, Xception's ImageNet weights are
# not to be had, so it trains from random initialisation. Digits are glyphs (a mirrored 2
# is not a 2); without augmentation 3 epochs reached val accuracy 0.988 (4 epochs: 0.981)
# in a third of the time of the default 10 augmented epochs. Runs of the final code since:
# val 0.963, test 0.983, about 4.5 min on a 2-core AVX2 CPU (docs/BENCHMARKS.md); from a
# fresh clone of the final code of 2026-12-03: val 0.988, test 0.994, 3 min 4 s with the
# install (114 s of training).
MAIN_JOB := --model xception --augment none --scratch-epochs 3

train: $(VENV)/.installed
	$(PY) -m keras_app.train $(MAIN_JOB)

# Debian packages some tests run against: a real Orthanc PACS for the DICOM node, and a
# headless chromium for the model card page. Installed here when missing and make runs as
# root; otherwise those tests skip and say why.
DEB_PACKAGES := orthanc orthanc-dicomweb chromium

deb-packages:
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	missing=$$(echo $$missing); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing $$missing (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing \
			|| echo "could not install $$missing: the tests that need them will skip"; \
	else \
		echo "$$missing missing and not root: the tests that need them will skip" \
			"(sudo apt-get install $$missing)"; \
	fi

# One pytest worker per core (pytest-xdist); a test file stays on one worker, so its
# module fixtures (trained runs, a PACS) are built once.
test: $(VENV)/.installed-test deb-packages
	$(PY) -m pytest -n auto --dist loadfile

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache
