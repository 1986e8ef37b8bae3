# Everything a newcomer needs: `make run` (set up, build the default bundle, serve it) and
# `make test` (set up, run the tests). Long jobs live behind their own targets.
VENV ?= .venv
PY := $(VENV)/bin/python
ATOMIZE := $(VENV)/bin/atomize
STAMP := $(VENV)/.installed
BUNDLE ?= bundles/tweets
RUN ?= runs/tweets
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: setup test run bundle bench-quality bench-serve check-prometheus clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[train,serve,dev,cluster]'
	touch $@

setup: $(STAMP)

test: setup
	$(PY) -m pytest

# The default demo model: the tweets encoder, trained on the CPU and exported as a bundle.
$(BUNDLE)/manifest.json: | $(STAMP)
	$(ATOMIZE) train --dataset tweets --out $(RUN) --epochs 6
	$(ATOMIZE) export $(RUN) --out $(BUNDLE)

bundle: $(BUNDLE)/manifest.json

run: setup bundle
	$(ATOMIZE) serve --bundle $(BUNDLE) --host $(HOST) --port $(PORT)

# Live: a real Prometheus scrapes the service; installs Debian's prometheus when missing (root).
check-prometheus: setup
	PYTHON=$(PY) bash deploy/check_prometheus.sh

bench-quality: setup
	$(PY) benchmarks/train_speed.py
	$(PY) benchmarks/quality.py

bench-serve: setup bundle
	$(PY) benchmarks/serve.py --bundle $(BUNDLE)

clean:
	rm -rf runs bundles .pytest_cache
