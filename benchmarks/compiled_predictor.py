"""EmotionPredictor with its reduced-precision copy eager, compiled (`compile=True`) and, on CUDA, compiled with CUDA
graphs (`mode="reduce-overhead"`, measured here only), on the validation texts, in one process: texts/s after a
warm-up call, the seconds of that first call (the compilation), and the labels against the eager arm's.

python benchmarks/compiled_predictor.py CHECKPOINT --data-dir ../shared/data/emotion [--limit 2000]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/emotion")
    parser.add_argument("--limit", type=int, default=2000)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()

    import torch

    from emotion_lightning import EmotionPredictor
    from emotion_lightning import inference as inference_module

    lines = (args.data_dir / "validation.txt").read_text().splitlines()[: args.limit]
    texts = [line.rsplit(";", 1)[0] for line in lines if line.strip()]
    eager = EmotionPredictor.load(args.checkpoint, compile=False)
    arms = {"eager": eager, "compiled": EmotionPredictor(eager.model, compile=True)}
    if eager.device.type == "cuda":
        build = inference_module.ReducedPrecisionCopy._build
        arms["compiled, CUDA graphs"] = "reduce-overhead"
    report = {"device": str(eager.device), "texts": len(texts), "arms": {}}
    labels = {}
    for name, predictor in arms.items():
        if predictor == "reduce-overhead":  # the same copy, compiled with CUDA graphs: a measurement, not an option

            def with_graphs(self):
                return torch.compile(self._forward, dynamic=True, mode="reduce-overhead")

            inference_module.ReducedPrecisionCopy._build = with_graphs
            eager.model._inference_copy = None
            predictor = EmotionPredictor(eager.model, compile=True)
        started = time.perf_counter()
        predictor(texts[:64])
        first = time.perf_counter() - started
        started = time.perf_counter()
        labels[name] = [result.label for result in predictor(texts)]
        seconds = time.perf_counter() - started
        same = sum(a == b for a, b in zip(labels[name], labels["eager"], strict=True)) / len(texts)
        report["arms"][name] = {
            "texts_per_s": round(len(texts) / seconds, 1),
            "first_call_s": round(first, 1),
            "same_label_as_eager": round(same, 4),
            "compiled": predictor.compiled,
        }
        print(name, json.dumps(report["arms"][name]), flush=True)
    if eager.device.type == "cuda":
        inference_module.ReducedPrecisionCopy._build = build
    if args.output:
        args.output.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
