#!/usr/bin/env bash
# The GPU checks, in order of importance, in about 8 minutes on an H200. Run ON the GPU machine (no network),
# from the repository root, with .gpu/ carried along (made by benchmarks/gpu_prepare.sh):
#   a. tests/test_cuda.py alone (16-mixed with clipping, the clip bound, prediction and serve on CUDA, no per-step
#      host synchronisation in training),
#   b. the reference recipe as shipped (16-mixed, clipping 1.0), 3 epochs of the real data with the stand-in
#      backbone all-MiniLM-L6-v2, the whole process timed,
#   c. benchmarks/compare.py with a full-size DistilBERT (random weights), 3 epochs: the HF Trainer (fp16) at
#      its defaults against the package, each a fresh process timed from outside,
#   d. prediction of the 16,000 training texts: transformers.pipeline at its best batch size against the package,
#   e. the predictor's fp16 copy eager, compiled, and compiled with CUDA graphs (the recipe's checkpoint of b).
# Results go to $OUT (or /tmp/gpu-out).
#   bash benchmarks/gpu.sh --dry-run    the same steps on this machine's CPU with tiny sizes (checks the script)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/gpu-out}
mkdir -p "$out"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1 EMOTION_LIGHTNING_CACHE=/tmp/el-cache

if [ "${1:-}" = "--dry-run" ]; then
  backbone=sentence-transformers/all-MiniLM-L6-v2 data=../shared/data/emotion
  recipe_limits=(--trainer.max_epochs 1 --trainer.limit_train_batches 6 --trainer.limit_val_batches 2
    --trainer.log_every_n_steps 2)
  compare_limits=(--train-limit 160 --val-limit 64 --epochs 1)
  limit_a=300 limit_b=600 limit_c=600 limit_d=600 limit_e=600 texts_e=200
else
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .gpu/wheels/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
  # The console script, for the tests that run it; no downloads (--no-index, no build isolation).
  python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . || exit 1
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
  backbone=.gpu/minilm data=.gpu/data
  recipe_limits=() compare_limits=(--epochs 3)
  limit_a=90 limit_b=100 limit_c=150 limit_d=120 limit_e=80 texts_e=2000
fi
python3 -c "import torch, lightning, transformers; print('torch', torch.__version__, 'lightning', lightning.__version__, \
'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$out/gpu.txt"
git rev-parse HEAD 2>/dev/null | tee -a "$out/gpu.txt"

echo "== a. tests/test_cuda.py" | tee "$out/tests.log"
timeout "$limit_a" python3 -m pytest -q -p no:cacheprovider -rs tests/test_cuda.py 2>&1 | tee -a "$out/tests.log" | tail -8

echo "== b. reference recipe as shipped, whole process" | tee "$out/recipe.log"
rm -rf /tmp/recipe
/usr/bin/time -f "whole process: %e s" timeout "$limit_b" emotion-lightning fit -c configs/reference.yaml \
  -c configs/offline.yaml --model.backbone "$backbone" --data.data_dir "$data" --trainer.default_root_dir /tmp/recipe \
  "${recipe_limits[@]}" 2>&1 | grep -v -E "Tokeniz|Map|Loading weights" | tee -a "$out/recipe.log" | tail -12
python3 benchmarks/loss_falls.py /tmp/recipe/version_0/metrics.csv 2>&1 | tee -a "$out/recipe.log"

echo "== c. HF Trainer against the package, full-size DistilBERT (random weights)" | tee "$out/compare.log"
timeout "$limit_c" python3 benchmarks/compare.py --random-distilbert --tokenizer "$backbone" --data-dir "$data" \
  "${compare_limits[@]}" --arms hf,lightning --output "$out/compare.json" 2>&1 \
  | grep -v -E "Tokeniz|Map|Loading weights" | tail -16 | tee -a "$out/compare.log"

echo "== d. prediction of the training texts: pipeline at its best against the package" | tee "$out/predict.log"
timeout "$limit_d" python3 benchmarks/compare.py --backbone "$backbone" --data-dir "$data" "${compare_limits[@]}" \
  --arms lightning,predict --predict-split train --lightning-args "--trainer.max_epochs 1 --trainer.limit_train_batches 30" \
  --output "$out/predict.json" 2>&1 | grep -v -E "Tokeniz|Map|Loading weights" | tail -12 | tee -a "$out/predict.log"
echo "== e. the predictor compiled: eager, torch.compile, CUDA graphs" | tee "$out/compiled.log"
timeout "$limit_e" python3 benchmarks/compiled_predictor.py /tmp/recipe/version_0/checkpoints/best.ckpt \
  --data-dir "$data" --limit "$texts_e" --output "$out/compiled.json" 2>&1 | grep -v -E "Loading weights" \
  | tail -6 | tee -a "$out/compiled.log"
echo "done; results in $out"
