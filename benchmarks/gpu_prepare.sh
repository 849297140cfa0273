#!/usr/bin/env bash
# Run HERE (with network to PyPI), before benchmarks/gpu.sh runs on a GPU machine that has none.
# Fills .gpu/ (git-ignored; carry it): wheels for what the GPU image lacks, the stand-in backbone
# all-MiniLM-L6-v2 (weights stored in fp16 to fit the 64 MiB a device call carries; the package
# trains them in fp32) with its uncased WordPiece tokenizer (DistilBERT's vocabulary), and the real data.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .gpu && mkdir -p .gpu/wheels .gpu/data
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .gpu/wheels \
  datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 \
  jsonargparse==4.53.0 docstring-parser==0.18.0 typeshed-client==2.15.0 \
  uvicorn==0.54.0 h11 httptools==0.9.0 click swagger-ui-bundle==1.1.0 importlib-resources \
  typing-inspection importlib-metadata zipp
python3 - <<'PY'
from transformers import AutoModel, AutoTokenizer

from emotion_lightning.backbone import resolve_backbone

source = resolve_backbone("sentence-transformers/all-MiniLM-L6-v2")
AutoTokenizer.from_pretrained(source).save_pretrained(".gpu/minilm")
AutoModel.from_pretrained(source).half().save_pretrained(".gpu/minilm")
PY
cp ../shared/data/emotion/train.txt ../shared/data/emotion/validation.txt .gpu/data/
du -sh .gpu
