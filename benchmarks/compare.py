"""Same job, same machine, one invocation: the Hugging Face Trainer vs emotion_lightning, at the same precision.

    python benchmarks/compare.py                    # full: 3 epochs on all 16,000 / 2,000 texts
    python benchmarks/compare.py --train-limit 2000 --val-limit 500 --epochs 1    # short

The precision is the one the package picks on this machine: fp16 on CUDA, bf16 on a CPU that computes
it natively (AVX512-BF16 or AMX), else fp32; the HF Trainer runs at that precision too.
Arms, each in its own process, one after the other:
  hf         the reference recipe through transformers.Trainer (dynamic padding, best model by accuracy)
  lightning  `emotion-lightning fit -c configs/reference.yaml -c configs/offline.yaml`, as a user runs it
  predict    the validation texts, warm, in one process: transformers.pipeline at its best settings on
             this machine (each dtype and batch size tried) vs EmotionPredictor and the package's predict
             path (Trainer.predict with the prediction writer), with the model the lightning arm trained
"Whole run" is the wall time of the arm's whole process, start-up included. Writes every number as JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "emotion"
LABELS = ("sadness", "joy", "love", "anger", "fear", "surprise")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="sentence-transformers/all-MiniLM-L6-v2", help="hub id or model folder")
    parser.add_argument(
        "--random-distilbert",
        action="store_true",
        help="use a full-size DistilBERT built from DistilBertConfig() with random weights (speed only)",
    )
    parser.add_argument(
        "--tokenizer",
        default="sentence-transformers/all-MiniLM-L6-v2",
        help="with --random-distilbert: tokenizer folder or id (default: the stand-in's uncased WordPiece)",
    )
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-limit", type=int, default=None, help="use the first N training texts")
    parser.add_argument("--val-limit", type=int, default=None, help="use the first N validation texts")
    parser.add_argument("--arms", default="hf,lightning,predict", help="which arms to run, in order")
    parser.add_argument(
        "--predict-split",
        default="validation",
        choices=["validation", "train"],
        help="the texts the predict arm classifies (train: 16,000 texts)",
    )
    parser.add_argument(
        "--lightning-args", default="", help="extra emotion-lightning fit arguments for the lightning arm"
    )
    parser.add_argument(
        "--checkpoint", help="with --arms predict alone: the checkpoint to predict with (not the lightning arm's)"
    )
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results.json")
    parser.add_argument("--keep-checkpoint", type=Path, help="copy the lightning arm's best checkpoint here")
    parser.add_argument("--arm", help=argparse.SUPPRESS)
    parser.add_argument("--work-dir", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# -- shared helpers ---------------------------------------------------------------------------------


def package_precision() -> str:
    from emotion_lightning.precision import runnable_precision

    return str(runnable_precision("16-mixed", "auto")[0])


def peak_memory_mib() -> float:
    """Peak GPU memory on CUDA, else this process's peak resident memory."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def read_texts(path: Path) -> tuple[list[str], list[int]]:
    from emotion_lightning.sources import iter_split_rows

    texts, labels = zip(*iter_split_rows(path, LABELS), strict=True)
    return list(texts), list(labels)


# -- arm: Hugging Face Trainer ------------------------------------------------------------------------


def run_hf(data_dir: Path, backbone: str, epochs: int, work_dir: Path) -> dict:
    import numpy as np
    import torch
    from datasets import Dataset
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    precision = package_precision()
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    model = AutoModelForSequenceClassification.from_pretrained(
        backbone,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)},
    )

    def tokenized(split: str) -> Dataset:
        texts, labels = read_texts(data_dir / f"{split}.txt")
        dataset = Dataset.from_dict({"text": texts, "label": labels})
        return dataset.map(lambda b: tokenizer(b["text"], truncation=True, max_length=512), batched=True)

    train, validation = tokenized("train"), tokenized("validation")

    class EvalTime(TrainerCallback):
        """Evaluation time inside train(), to leave it out of the training throughput."""

        seconds = 0.0

        def on_epoch_end(self, args, state, control, **kwargs):
            self._started = time.perf_counter()

        def on_evaluate(self, args, state, control, **kwargs):
            EvalTime.seconds += time.perf_counter() - self._started

    args = TrainingArguments(
        output_dir=str(work_dir / "hf"),
        num_train_epochs=epochs,
        per_device_train_batch_size=16,
        per_device_eval_batch_size=32,
        learning_rate=2e-5,
        weight_decay=0.01,
        eval_strategy="epoch",
        save_strategy="epoch",
        load_best_model_at_end=True,
        metric_for_best_model="accuracy",
        save_total_limit=1,
        fp16=precision == "16-mixed",
        bf16=precision == "bf16-mixed",
        use_cpu=not torch.cuda.is_available(),
        report_to="none",
        seed=42,
        disable_tqdm=True,
        logging_strategy="epoch",
    )
    trainer = Trainer(
        model=model,
        args=args,
        data_collator=DataCollatorWithPadding(tokenizer),
        train_dataset=train,
        eval_dataset=validation,
        compute_metrics=lambda p: {"accuracy": float((np.argmax(p.predictions, axis=-1) == p.label_ids).mean())},
        callbacks=[EvalTime()],
    )
    train_start = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - train_start - EvalTime.seconds
    epoch_accuracy = [e["eval_accuracy"] for e in trainer.state.log_history if "eval_accuracy" in e][:epochs]
    return {
        "arm": "HF Trainer",
        "precision": {"16-mixed": "fp16", "bf16-mixed": "bf16"}.get(precision, "fp32"),
        "train_samples_per_second": len(train) * epochs / train_seconds,
        "val_accuracy": max(epoch_accuracy),
        "val_accuracy_per_epoch": epoch_accuracy,
        "peak_memory_mib": peak_memory_mib(),
    }


# -- arm: emotion_lightning, as a user runs it ------------------------------------------------------------


def lightning_command(data_dir: Path, backbone: str, epochs: int, work_dir: Path, extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "emotion_lightning",
        "fit",
        "-c",
        str(REPO / "configs" / "reference.yaml"),
        "-c",
        str(REPO / "configs" / "offline.yaml"),
        "--model.backbone",
        backbone,
        "--data.data_dir",
        str(data_dir),
        "--data.cache_dir",
        str(work_dir / "cache"),
        "--trainer.max_epochs",
        str(epochs),
        "--trainer.default_root_dir",
        str(work_dir / "lightning"),
        "--trainer.callbacks+=timing.TrainTiming",
        f"--trainer.callbacks.output_file={work_dir / 'timing.json'}",
        *extra.split(),
    ]


def lightning_results(work_dir: Path, epochs: int, train_texts: int) -> dict:
    from emotion_lightning.runs import run_folders

    (folder,) = run_folders(work_dir / "lightning")
    with (folder / "metrics.csv").open() as file:
        rows = [row for row in csv.DictReader(file) if row.get("val/acc")]
    accuracy = [float(row["val/acc"]) for row in rows]
    timing = json.loads((work_dir / "timing.json").read_text())
    return {
        "arm": "emotion_lightning",
        "precision": {"16-mixed": "fp16", "bf16-mixed": "bf16"}.get(package_precision(), "fp32"),
        "train_samples_per_second": train_texts * epochs / timing["train_seconds"],
        "val_accuracy": max(accuracy),
        "val_accuracy_per_epoch": accuracy,
        "peak_memory_mib": timing["peak_memory_mib"],
        "best_checkpoint": str(folder / "checkpoints" / "best.ckpt"),
    }


# -- arm: batch prediction ----------------------------------------------------------------------------


def run_predict(data_dir: Path, checkpoint_path: str, work_dir: Path, split: str = "validation") -> dict:
    import lightning as L
    import torch
    from transformers import pipeline

    from emotion_lightning import EmotionClassifier, EmotionDataModule, EmotionPredictor, PredictionWriter
    from emotion_lightning.checkpoints import read_checkpoint
    from emotion_lightning.precision import cpu_supports_bf16

    texts, _ = read_texts(data_dir / f"{split}.txt")
    model = EmotionClassifier.from_checkpoint(read_checkpoint(checkpoint_path))
    # The same weights as a plain Hugging Face folder, for the pipeline.
    folder = work_dir / "hf-export"
    model.model.save_pretrained(folder)
    model.tokenizer.save_pretrained(folder)

    def texts_per_second(classify, warm_up=True) -> tuple[float, list[str]]:
        if warm_up:
            classify(texts[:64])
        started = time.perf_counter()
        labels = classify(texts)
        return len(texts) / (time.perf_counter() - started), labels

    device = 0 if torch.cuda.is_available() else -1
    dtypes = [torch.float32] + (
        [torch.float16] if torch.cuda.is_available() else [torch.bfloat16] if cpu_supports_bf16() else []
    )
    tried = []
    for dtype in dtypes:
        classifier = pipeline("text-classification", model=str(folder), device=device, dtype=dtype)
        for batch_size in (8, 32, 64, 128):
            rate, labels = texts_per_second(
                lambda chunk, c=classifier, b=batch_size: [
                    out["label"] for out in c(chunk, batch_size=b, truncation=True)
                ]
            )
            tried.append({"dtype": str(dtype).removeprefix("torch."), "batch_size": batch_size, "rate": rate})
            print(f"[predict] pipeline {tried[-1]}", flush=True)
            if rate >= max(t["rate"] for t in tried):
                pipeline_labels = labels
    best = max(tried, key=lambda t: t["rate"])

    predictor = EmotionPredictor(model.to("cuda" if torch.cuda.is_available() else "cpu"))
    predictor_rate, predictor_labels = texts_per_second(lambda chunk: [r.label for r in predictor(chunk)])
    other = EmotionPredictor(model, pack=not predictor.packs)  # the other way: padded where it packs by default
    other_rate, _ = texts_per_second(lambda chunk: [r.label for r in other(chunk)])
    exact = EmotionPredictor(model, precision="32-true")
    _, fp32_labels = texts_per_second(lambda chunk: [r.label for r in exact(chunk)], warm_up=False)

    # What `emotion-lightning predict` runs: Trainer.predict in the package's precision, CSV written.
    output = work_dir / "predictions.csv"

    def package_predict(chunk):
        data = EmotionDataModule(predict_texts=chunk).encode_like(model)
        trainer = L.Trainer(
            precision=package_precision(),
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[PredictionWriter(str(output))],
        )
        trainer.predict(model, data, return_predictions=False)
        with output.open(newline="") as file:
            return [row["label"] for row in csv.DictReader(file)]

    command_rate, command_labels = texts_per_second(package_predict)
    return {
        "texts": len(texts),
        "pipeline_tried": tried,
        "pipeline_best": best,
        "pipeline_texts_per_second": best["rate"],
        "predictor_texts_per_second": predictor_rate,
        "predictor_precision": predictor.precision,
        "predictor_packed": predictor.packs,
        "predictor_other_way_texts_per_second": other_rate,
        "predictor_fp32_label_agreement": _agreement(fp32_labels, predictor_labels),
        "predict_command_texts_per_second": command_rate,
        "predictor_label_agreement": _agreement(pipeline_labels, predictor_labels),
        "predict_command_label_agreement": _agreement(pipeline_labels, command_labels),
    }


def _agreement(first: list[str], second: list[str]) -> float:
    return sum(a == b for a, b in zip(first, second, strict=True)) / len(first)


# -- driver -------------------------------------------------------------------------------------------


def slice_data(source: Path, target: Path, train_limit: int | None, val_limit: int | None) -> Path:
    """The benchmark's data folder: the first N lines of each split, the same files for every arm."""
    target.mkdir(parents=True, exist_ok=True)
    for split, limit in (("train", train_limit), ("validation", val_limit)):
        lines = (source / f"{split}.txt").read_text().splitlines(keepends=True)
        (target / f"{split}.txt").write_text("".join(lines[:limit]))
    return target


def make_random_distilbert(target: Path, tokenizer: str) -> Path:
    """A full-size DistilBERT (DistilBertConfig() defaults) with random weights, with an uncased
    WordPiece tokenizer of DistilBERT's vocabulary (the stand-in backbone's). Speed runs only."""
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertModel

    from emotion_lightning.backbone import resolve_backbone

    DistilBertModel(DistilBertConfig()).save_pretrained(target)
    AutoTokenizer.from_pretrained(resolve_backbone(tokenizer)).save_pretrained(target)
    return target


def timed(command: list[str], log: Path) -> float:
    """Run ``command`` to the end; its whole wall time. Its output goes to ``log``."""
    # (a PYTHONPATH of the caller's stays after this folder: another copy of the package can be timed so)
    paths = [str(REPO / "benchmarks"), *filter(None, [os.environ.get("PYTHONPATH")])]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(paths)}
    print(f"[benchmark] {' '.join(command)}", flush=True)
    started = time.perf_counter()
    with log.open("w") as output:
        done = subprocess.run(command, env=environment, stdout=output, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        sys.exit(f"[benchmark] failed with status {done.returncode}:\n{log.read_text()[-5000:]}")
    return time.perf_counter() - started


def child_main(args) -> None:
    from emotion_lightning.backbone import resolve_backbone

    backbone = resolve_backbone(args.backbone)
    if args.arm == "hf":
        result = run_hf(args.data_dir, backbone, args.epochs, args.work_dir)
    else:
        best = args.checkpoint or json.loads((args.work_dir / "lightning.json").read_text())["best_checkpoint"]
        result = run_predict(args.data_dir, best, args.work_dir, args.predict_split)
    (args.work_dir / f"{args.arm}.json").write_text(json.dumps(result))


def table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(lines)


def report(results: dict) -> str:
    out = []
    arms = [results[arm] for arm in ("hf", "lightning") if arm in results]
    if arms:
        rows = [["", *(f"{arm['arm']} ({arm['precision']})" for arm in arms)]]
        rows.append(["whole run (s)", *(f"{arm['wall_seconds']:.1f}" for arm in arms)])
        rows.append(["train samples/s", *(f"{arm['train_samples_per_second']:.1f}" for arm in arms)])
        rows.append(["val accuracy (best)", *(f"{arm['val_accuracy']:.4f}" for arm in arms)])
        rows.append(
            ["val accuracy by epoch", *(" ".join(f"{a:.4f}" for a in arm["val_accuracy_per_epoch"]) for arm in arms)]
        )
        rows.append(["peak memory (MiB)", *(f"{arm['peak_memory_mib']:.0f}" for arm in arms)])
        out.append(table(rows))
        if len(arms) == 2:
            hf, lightning = arms
            throughput = lightning["train_samples_per_second"] / hf["train_samples_per_second"]
            out.append(
                f"whole-run speed-up: {hf['wall_seconds'] / lightning['wall_seconds']:.2f}x   "
                f"training samples/s ratio: {throughput:.2f}x   "
                f"accuracy difference: {lightning['val_accuracy'] - hf['val_accuracy']:+.4f}"
            )
    predict = results.get("predict")
    if predict:
        best = predict["pipeline_best"]
        rows = [["", "texts/s", "same label as the pipeline"]]
        pipeline_name = f"transformers.pipeline ({best['dtype']}, batch {best['batch_size']}: its best here)"
        rows.append([pipeline_name, f"{best['rate']:.1f}", "-"])
        rows.append(
            [
                f"EmotionPredictor ({predict['predictor_precision']})",
                f"{predict['predictor_texts_per_second']:.1f}",
                f"{predict['predictor_label_agreement']:.4f}",
            ]
        )
        rows.append(
            [
                "emotion-lightning predict (Trainer.predict, CSV)",
                f"{predict['predict_command_texts_per_second']:.1f}",
                f"{predict['predict_command_label_agreement']:.4f}",
            ]
        )
        out.append(table(rows))
        out.append(
            f"prediction speed-up over the pipeline's best: EmotionPredictor "
            f"{predict['predictor_texts_per_second'] / best['rate']:.2f}x, predict command "
            f"{predict['predict_command_texts_per_second'] / best['rate']:.2f}x ({predict['texts']} texts)"
        )
    return "\n\n".join(out)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.arm:
        child_main(args)
        return
    import torch

    from emotion_lightning.precision import cpu_supports_bf16

    with tempfile.TemporaryDirectory(prefix="emotion-benchmark-") as scratch:
        work_dir = Path(scratch)
        data_dir = slice_data(args.data_dir, work_dir / "data", args.train_limit, args.val_limit)
        backbone = (
            str(make_random_distilbert(work_dir / "distilbert", args.tokenizer))
            if args.random_distilbert
            else args.backbone
        )
        train_texts = len((data_dir / "train.txt").read_text().splitlines())
        results = {
            "settings": {
                "backbone": "DistilBertConfig() random weights" if args.random_distilbert else args.backbone,
                "epochs": args.epochs,
                "train_texts": train_texts,
                "validation_texts": len((data_dir / "validation.txt").read_text().splitlines()),
                "device": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu",
                "cpu_native_bf16": cpu_supports_bf16(),
                "cpu_threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "lightning_args": args.lightning_args,
            }
        }
        child = [sys.executable, __file__, "--data-dir", str(data_dir), "--backbone", backbone]
        child += ["--epochs", str(args.epochs), "--work-dir", str(work_dir), "--predict-split", args.predict_split]
        child += ["--checkpoint", str(Path(args.checkpoint).resolve())] if args.checkpoint else []
        for arm in args.arms.split(","):
            if arm == "lightning":
                command = lightning_command(data_dir, backbone, args.epochs, work_dir, args.lightning_args)
                wall = timed(command, work_dir / "lightning.log")
                results[arm] = {"wall_seconds": wall, **lightning_results(work_dir, args.epochs, train_texts)}
                (work_dir / "lightning.json").write_text(json.dumps(results[arm]))
                # What the user sees of that run, kept beside the results.
                args.output.parent.mkdir(parents=True, exist_ok=True)
                args.output.with_suffix(".lightning.log").write_text((work_dir / "lightning.log").read_text())
                if args.keep_checkpoint:  # (the work folder goes at the end)
                    args.keep_checkpoint.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(results[arm]["best_checkpoint"], args.keep_checkpoint)
            else:
                wall = timed([*child, "--arm", arm], work_dir / f"{arm}.log")
                results[arm] = {"wall_seconds": wall, **json.loads((work_dir / f"{arm}.json").read_text())}
            print(f"[benchmark] {arm}: {wall:.1f} s", flush=True)
    print(json.dumps(results["settings"]))
    print(report(results))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2))
    print(f"results written to {args.output}")


if __name__ == "__main__":
    main()
