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

.PHONY: setup test run bundle bench-quality bench-serve bench-bank check-prometheus clean

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

# Banks of 10^4..10^6 atoms derived from real all-MiniLM-L6-v2 embeddings of tweets, exact vs
# HNSW vs IVF; then /v1/atomize with and without neighbours at 10^5 atoms (a 384-dim tweets bundle).
BANK_WORK ?= runs/bench-bank
$(BANK_WORK)/minilm_tweets.npz: | $(STAMP)
	$(PY) benchmarks/minilm_embed.py --limit 16000 --out $@

$(BANK_WORK)/bundle/manifest.json: | $(STAMP)
	$(ATOMIZE) train --dataset tweets --out $(BANK_WORK)/run --epochs 2 --model '{"embedding_dim": 384}' --no-progress
	$(ATOMIZE) export $(BANK_WORK)/run --out $(BANK_WORK)/bundle

bench-bank: setup $(BANK_WORK)/minilm_tweets.npz $(BANK_WORK)/bundle/manifest.json
	$(PY) benchmarks/bank.py search --embeddings $(BANK_WORK)/minilm_tweets.npz
	$(PY) benchmarks/bank.py e2e --bundle $(BANK_WORK)/bundle --work $(BANK_WORK)

clean:
	rm -rf runs bundles .pytest_cache
