"""The whole speed table for the machine it runs on, in one command: training, prediction and serving, each arm a
fresh process, every figure beside its baseline's from the same invocation.

    python benchmarks/table.py                       # the short training run, then prediction and serving
    python benchmarks/table.py --full                # and the whole 3-epoch recipe against the HF Trainer
    python benchmarks/table.py --checkpoint BEST.ckpt   # predict and serve with this model (else the run's best)

It runs the other scripts of this folder, each writing its JSON into ``--output-dir``, and prints the table:
1. training (compare.py): the short run (2,000 training texts, 500 validation, 1 epoch) and, with ``--full``, the
   3-epoch recipe, each against the Hugging Face Trainer at the same precision; whole-run seconds and accuracy;
2. prediction (predict_speed.py): 2,000 texts warm against the pipeline's best, and ``predict`` of a 2,000-line
   file as a whole process, first and second run, against a script that loads the pipeline;
3. serving (serve_load.py): 64 clients sending single texts to ``serve``, the LitServe peer and (alone) FastAPI,
   alone on the machine and with a CPU-bound neighbour on one core.
Prediction and serving need a trained model: ``--checkpoint``, else the best checkpoint of the ``--full`` run (a
model trained on 2,000 texts for one epoch predicts as fast, but its labels say little).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from emotion_lightning.cpu import SPEED_FLAGS, cpu_flags

HERE = Path(__file__).resolve().parent


def run(script: str, *arguments: str) -> None:
    command = [sys.executable, str(HERE / script), *arguments]
    print(f"[table] {' '.join(command)}", file=sys.stderr, flush=True)
    subprocess.run(command, check=True)


def training_rows(result: dict, name: str) -> list[str]:
    hf, ours = result["hf"], result["lightning"]
    return [
        f"training, {name}: whole run {ours['wall_seconds']:.1f} s against the HF Trainer's {hf['wall_seconds']:.1f} s"
        f" ({ours['precision']}): {hf['wall_seconds'] / ours['wall_seconds']:.2f}x; val/acc {ours['val_accuracy']:.4f}"
        f" against {hf['val_accuracy']:.4f} ({ours['val_accuracy'] - hf['val_accuracy']:+.4f})"
    ]


def prediction_rows(result: dict) -> list[str]:
    warm = result["warm"]
    pipelines = [arm for arm in warm if arm.startswith("pipeline")]
    best = max(pipelines, key=lambda arm: warm[arm]["texts_per_s"])
    ours = warm["predictor"]
    whole = result["whole_process_seconds"]
    return [
        f"prediction, 2,000 texts warm: EmotionPredictor {ours['texts_per_s']:.1f} texts/s against {best}'s"
        f" {warm[best]['texts_per_s']:.1f}: {ours['texts_per_s'] / warm[best]['texts_per_s']:.2f}x; labels equal to"
        f" fp32 {ours['same_label_as_fp32']:.4f}",
        f"prediction, 2,000-line file, whole process: predict {whole['predict'][0]:.2f} s / {whole['predict'][1]:.2f} s"
        f" (first / second run) against the pipeline script ({result.get('pipeline_script_dtype', 'bfloat16')})"
        f" {whole['pipeline_script'][0]:.2f} s / {whole['pipeline_script'][1]:.2f} s",
    ]


def serving_rows(result: dict, name: str) -> list[str]:
    ours, peer = result["serve"][-1], result["litserve"][-1]
    row = (
        f"serving, {ours['clients']} clients, {name}: serve {ours['texts_per_s']:.1f} requests/s ({ours['good_failed']}"
        f" failed) against LitServe's {peer['texts_per_s']:.1f} ({peer['good_failed']} failed):"
        f" {ours['texts_per_s'] / peer['texts_per_s']:.2f}x"
    )
    if "baseline" in result:
        fastapi = {dtype: runs[-1]["texts_per_s"] for dtype, runs in result["baseline"].items()}
        row += "; FastAPI + pipeline " + ", ".join(f"{dtype} {rate:.1f}" for dtype, rate in fastapi.items())
    return [row]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="also the whole 3-epoch recipe against the HF Trainer")
    parser.add_argument("--checkpoint", type=Path, help="the model that predicts and serves")
    parser.add_argument("--output-dir", type=Path, default=HERE / "results" / "table")
    parser.add_argument("--skip", nargs="*", default=[], choices=["training", "prediction", "serving"])
    args = parser.parse_args()
    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    rows = [f"cpu flags: {' '.join(sorted(cpu_flags() & set(SPEED_FLAGS))) or 'none of ' + ' '.join(SPEED_FLAGS)}"]

    def training() -> Path | None:
        """Run the training arms; the full run's best checkpoint, where it ran."""
        short = ("--train-limit", "2000", "--val-limit", "500", "--epochs", "1", "--arms", "hf,lightning")
        run("compare.py", *short, "--output", str(out / "training-short.json"))
        rows.extend(training_rows(json.loads((out / "training-short.json").read_text()), "short"))
        if not args.full:
            return None
        kept = out / "full-best.ckpt"
        full = ("--arms", "hf,lightning", "--keep-checkpoint", str(kept))
        run("compare.py", *full, "--output", str(out / "training-full.json"))
        rows.extend(training_rows(json.loads((out / "training-full.json").read_text()), "the 3-epoch recipe"))
        return kept

    def use(checkpoint: Path) -> None:
        if "prediction" not in args.skip:
            run("predict_speed.py", str(checkpoint), "--output", str(out / "prediction.json"))
            rows.extend(prediction_rows(json.loads((out / "prediction.json").read_text())))
        if "serving" not in args.skip:
            load = (str(checkpoint), "--clients", "64", "--requests", "3000", "--seconds", "40", "--skip", "in-process")
            run("serve_load.py", *load, "bad", "--output", str(out / "serving.json"))
            neighbour = ("bad", "fastapi", "--neighbour", "--output", str(out / "serving-neighbour.json"))
            run("serve_load.py", *load, *neighbour)
            rows.extend(serving_rows(json.loads((out / "serving.json").read_text()), "alone"))
            rows.extend(serving_rows(json.loads((out / "serving-neighbour.json").read_text()), "a CPU-bound neighbour"))

    # With a model given, it predicts and serves first (those figures need no training); else the full run trains it.
    if args.checkpoint is not None:
        use(args.checkpoint)
    trained = training() if "training" not in args.skip else None
    if args.checkpoint is None and trained is not None:
        use(trained)
    elif args.checkpoint is None:
        rows.append("prediction and serving: no model (give --checkpoint, or --full to train one)")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
