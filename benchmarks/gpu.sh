#!/usr/bin/env bash
# Run ON the GPU machine (no network), from the repository root, with .gpu/ carried along
# (made by benchmarks/gpu_prepare.sh). About 8 minutes on an H200, in order of importance:
#   1. the reference recipe as shipped (16-mixed, clipping at 1.0), 3 epochs on the real data with the
#      stand-in backbone all-MiniLM-L6-v2; checks that the training loss falls,
#   2. the test suite on CUDA (tests/test_cuda.py: the reference config in 16-mixed with clipping),
#   3. the training levers in 16-mixed, each in a fresh process (benchmarks/levers.py),
#   4. the benchmark with a full-size DistilBERT from DistilBertConfig() (random weights), 1 epoch,
#      HF Trainer (fp16) vs emotion_lightning (16-mixed), same card, one invocation.
# Results go to $OUT (or /tmp/gpu-out).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/gpu-out}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/wheels/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 EMOTION_LIGHTNING_CACHE=/tmp/el-cache PYTHONUNBUFFERED=1
# The console script, for the tests that run it; no downloads (--no-index, no build isolation).
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
python3 -c "import torch, lightning, transformers; print('torch', torch.__version__, 'lightning', lightning.__version__, 'transformers', transformers.__version__)" | tee -a "$out/gpu.txt"

echo "== 1. reference recipe, 16-mixed, clipping on" | tee "$out/recipe.log"
/usr/bin/time -f "wall %e s" timeout 170 emotion-lightning fit -c configs/reference.yaml -c configs/offline.yaml \
  --model.backbone .gpu/minilm --data.data_dir .gpu/data --trainer.default_root_dir /tmp/recipe \
  --trainer.enable_progress_bar false --trainer.logger CSVLogger --trainer.logger.save_dir /tmp/recipe 2>&1 \
  | grep -v -E "Tokeniz|Saving|Map|Loading weights" | tee -a "$out/recipe.log"
python3 benchmarks/loss_falls.py /tmp/recipe/lightning_logs/version_0/metrics.csv 2>&1 | tee -a "$out/recipe.log"

echo "== 2. tests on CUDA" | tee "$out/tests.log"
# The GPU tests alone first, so that their result is in even if the rest runs out of time.
timeout 90 python3 -m pytest -q -p no:cacheprovider -rs tests/test_cuda.py tests/test_precision.py 2>&1 \
  | tee -a "$out/tests.log" | tail -5
# wandb is not on the GPU image (its wheel is large): its tests and the configs that use it run in CI.
timeout 120 python3 -m pytest -q -p no:cacheprovider -m "not slow" -n 4 -rs --ignore=tests/test_wandb_logging.py \
  --ignore=tests/test_cuda.py --ignore=tests/test_precision.py -k "not wandb and not sweep" 2>&1 \
  | tee -a "$out/tests.log" | tail -5

echo "== 3. levers" | tee "$out/levers.log"
timeout 100 python3 benchmarks/levers.py --backbone .gpu/minilm --data-dir .gpu/data --steps 200 \
  --levers package,clip-in-its-own-pass,foreach-adamw,no-clipping 2>&1 | tail -7 | tee -a "$out/levers.log"

echo "== 4. benchmark" | tee "$out/benchmark.log"
timeout 200 python3 benchmarks/compare.py --random-distilbert --tokenizer .gpu/minilm --data-dir .gpu/data \
  --epochs 1 --output "$out/gpu-benchmark.json" 2>&1 | grep -v -E "Tokeniz|Saving|Map|Loading weights" | tail -30 \
  | tee -a "$out/benchmark.log"
