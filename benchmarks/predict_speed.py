"""Prediction against `transformers.pipeline`, each arm a fresh process, the arms side by side.

1. Warm, in one process per arm: the 2,000 validation texts, three times after a warm-up pass over them (the
   median; both libraries build kernels for each new batch shape the first time they meet it), in ``--rounds``
   interleaved rounds of every arm (the median of the rounds):
   `transformers.pipeline` at batch 32 in float32 and in bfloat16 on the exported folder, and `EmotionPredictor` at
   its defaults (int8 where that is the default) and with its bf16 copy; labels compared with `EmotionPredictor` in
   fp32. On a CPU without native bf16 (AVX2 only) the bf16 arms are left out: emulated, a bf16 product runs about
   a hundredth as fast as in fp32 there, so no one would pick it and a pass would take hours.
2. Whole processes, timed from outside, twice each (the second run finds the caches the first left):
   `emotion-lightning predict` of the 2,000-line file, and a script that loads the pipeline (bfloat16 where the CPU
   computes it natively, else float32) and writes the same file's labels to a CSV.

python benchmarks/predict_speed.py CHECKPOINT [--output benchmarks/results/predict-speed-cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from emotion_lightning.compat import cpu_supports_bf16
from emotion_lightning.cpu import SPEED_FLAGS, cpu_flags

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "emotion" / "validation.txt"

PIPELINE_SCRIPT = """
import csv, sys, torch
from transformers import pipeline
folder, texts_file, output = sys.argv[1:4]
texts = [line.rstrip("\\n") for line in open(texts_file, encoding="utf-8") if line.strip()]
classifier = pipeline("text-classification", model=folder, dtype=getattr(torch, sys.argv[4]), device=-1)
with open(output, "w", newline="") as file:
    writer = csv.writer(file)
    writer.writerow(["text", "label", "score"])
    for text, out in zip(texts, classifier(texts, batch_size=32, truncation=True)):
        writer.writerow([text, out["label"], f"{out['score']:.6f}"])
"""


def texts() -> list[str]:
    return [line.rsplit(";", 1)[0] for line in DATA.read_text().splitlines() if line.strip()]


def warm_arm(arm: str, checkpoint: str, folder: str) -> None:
    """Run in a child process: one arm's rate on the 2,000 texts, and its labels, as JSON on stdout."""
    import torch

    all_texts = texts()
    if arm.startswith("pipeline"):
        from transformers import pipeline

        classifier = pipeline("text-classification", model=folder, dtype=getattr(torch, arm.split("-")[1]), device=-1)

        def classify(chunk):
            return [out["label"] for out in classifier(chunk, batch_size=32, truncation=True)]
    else:
        from emotion_lightning import EmotionPredictor

        precision = "32-true" if arm == "predictor-fp32" else "auto"
        settings = {"int8": False} if arm == "predictor-bf16" else {}  # its bf16 copy, where int8 is the default
        predictor = EmotionPredictor.load(checkpoint, device="cpu", precision=precision, **settings)

        def classify(chunk):
            return [prediction.label for prediction in predictor(chunk)]

    classify(all_texts)
    rates = []
    for _ in range(3):
        started = time.perf_counter()
        labels = classify(all_texts)
        rates.append(round(len(all_texts) / (time.perf_counter() - started), 1))
    result = {"arm": arm, "texts_per_s": statistics.median(rates), "passes": rates, "labels": labels}
    print(json.dumps(result))


def run_child(arm: str, checkpoint: str, folder: str) -> dict:
    command = [sys.executable, __file__, "--child", arm, checkpoint, folder]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return round(time.perf_counter() - started, 2)


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        warm_arm(*sys.argv[2:5])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--output", type=Path)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the warm arms, interleaved")
    args = parser.parse_args()
    flags = " ".join(sorted(cpu_flags() & set(SPEED_FLAGS)))
    report = {"cpu_flags": flags, "cores": len(os.sched_getaffinity(0)), "checkpoint": args.checkpoint}
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        folder = work / "exported"
        subprocess.run(["emotion-lightning", "export", args.checkpoint, str(folder)], check=True, capture_output=True)
        native_bf16 = cpu_supports_bf16()
        arms = ("predictor-fp32", "pipeline-float32", "pipeline-bfloat16", "predictor-bf16", "predictor")
        if not native_bf16:  # the predictor's default is fp32 there: predictor-fp32 would be the same arm
            arms = ("pipeline-float32", "predictor")
        # Rounds of every arm, interleaved: a shared machine's speed drifts over minutes, and one arm run once can
        # meet a slow stretch the others miss. Each arm's figure: the median of its rounds' medians.
        rounds = [{arm: run_child(arm, args.checkpoint, str(folder)) for arm in arms} for _ in range(args.rounds)]
        reference = rounds[0]["predictor-fp32" if native_bf16 else "predictor"]["labels"]
        warm = {}
        for arm in arms:
            results = [one_round[arm] for one_round in rounds]
            labels = results[0]["labels"]
            warm[arm] = {
                "texts_per_s": statistics.median(result["texts_per_s"] for result in results),
                "rounds": [result["texts_per_s"] for result in results],
                "passes": [result["passes"] for result in results],
                "same_label_as_fp32": round(
                    sum(a == b for a, b in zip(labels, reference, strict=True)) / len(labels), 4
                ),
            }
        report["warm"] = warm

        file = work / "texts.txt"
        file.write_text("".join(text + "\n" for text in texts()))
        script = work / "pipeline_predict.py"
        script.write_text(PIPELINE_SCRIPT)
        pipeline_dtype = "bfloat16" if native_bf16 else "float32"
        report["pipeline_script_dtype"] = pipeline_dtype
        whole = {"predict": [], "pipeline_script": []}
        for number in range(2):
            output = work / f"predict-{number}.csv"
            whole["predict"].append(
                timed(
                    [
                        "emotion-lightning",
                        "predict",
                        "--ckpt_path",
                        args.checkpoint,
                        "--data.predict_file",
                        str(file),
                        "--prediction_writer.output_file",
                        str(output),
                    ]
                )
            )
            whole["pipeline_script"].append(
                timed(
                    [
                        sys.executable,
                        str(script),
                        str(folder),
                        str(file),
                        str(work / f"pipeline-{number}.csv"),
                        pipeline_dtype,
                    ]
                )
            )
        report["whole_process_seconds"] = whole

    pipelines = [arm for arm in report["warm"] if arm.startswith("pipeline")]
    best = max(pipelines, key=lambda arm: report["warm"][arm]["texts_per_s"])
    ours = report["warm"]["predictor"]["texts_per_s"]
    lines = [f"cpu flags: {report['cpu_flags']}; {report['cores']} cores; 2,000 validation texts", ""]
    lines.append(f"{'warm, one process per arm':<36}{'texts/s':>10}{'same label as fp32':>22}")
    for arm, result in report["warm"].items():
        lines.append(f"{arm:<36}{result['texts_per_s']:>10.1f}{result['same_label_as_fp32']:>22.4f}")
    lines.append(f"EmotionPredictor / the pipeline's best ({best}): {ours / report['warm'][best]['texts_per_s']:.2f}x")
    lines.append("")
    lines.append(f"{'whole process, seconds':<36}{'first run':>10}{'second run':>12}")
    for arm, seconds in whole.items():
        name = f"pipeline_script ({pipeline_dtype})" if arm == "pipeline_script" else arm
        lines.append(f"{name:<36}{seconds[0]:>10.2f}{seconds[1]:>12.2f}")
    print("\n".join(lines))
    if args.output:
        args.output.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
