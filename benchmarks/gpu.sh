#!/usr/bin/env bash
# Run ON the GPU machine (no network), from the repository root, with .gpu/ carried along
# (made by benchmarks/gpu_prepare.sh). At most about 8 minutes:
#   1. the test suite on CUDA (tests/test_cuda.py checks that 16-mixed is what runs),
#   2. the benchmark with a full-size DistilBERT from DistilBertConfig() (random weights), 1 epoch,
#      HF Trainer (fp16) vs emotion_lightning (16-mixed), same card, one invocation.
# Results go to $OUT (or /tmp/gpu-out).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/gpu-out}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/wheels/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 EMOTION_LIGHTNING_CACHE=/tmp/el-cache PYTHONUNBUFFERED=1
# The console script, for the test that runs it; no downloads (--no-index, no build isolation).
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
# wandb is not on the GPU image (its wheel is large); the W&B tests run in CI.
timeout 200 python3 -m pytest -q -p no:cacheprovider -m "not slow" -rs --ignore=tests/test_wandb_logging.py 2>&1 \
  | tee "$out/tests.log"
timeout 330 python3 benchmarks/compare.py --random-distilbert --tokenizer .gpu/tokenizer --data-dir .gpu/data \
  --epochs 1 --output "$out/gpu-benchmark.json" 2>&1 | grep -v -E "Tokeniz|Saving|Map" | tee "$out/benchmark.log"
