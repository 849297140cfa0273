"""Same job, same machine, one invocation: the Hugging Face Trainer vs emotion_lightning.

    python benchmarks/compare.py                    # full: 3 epochs on all 16,000 / 2,000 texts
    python benchmarks/compare.py --train-limit 2000 --val-limit 500 --epochs 1    # short

Each arm runs in its own child process (so peak memory is its own), one after the other:
  hf         the reference recipe through transformers.Trainer (dynamic padding, best model by accuracy)
  lightning  the same recipe through emotion_lightning with its default settings
  predict    transformers.pipeline("text-classification") vs the package's predict path, on the
             validation texts, both with the model that the lightning arm trained
Prints two tables and writes every number as JSON (--output).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results.json")
    parser.add_argument("--arm", help=argparse.SUPPRESS)
    parser.add_argument("--work-dir", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# -- shared helpers ---------------------------------------------------------------------------------


def on_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def peak_memory_mib() -> float:
    """Peak GPU memory on CUDA, else this process's peak resident memory."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def read_texts(path: Path) -> tuple[list[str], list[int]]:
    from emotion_lightning.sources import read_split_file

    columns = read_split_file(path, LABELS)
    return columns["text"], columns["label"]


def count_tokens(tokenizer, texts: list[str]) -> int:
    return sum(len(ids) for ids in tokenizer(texts, truncation=True, max_length=512)["input_ids"])


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

    start = time.perf_counter()
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
        fp16=on_cuda(),
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
    final = trainer.evaluate()
    wall = time.perf_counter() - start
    epoch_accuracy = [e["eval_accuracy"] for e in trainer.state.log_history if "eval_accuracy" in e][:epochs]
    tokens = count_tokens(tokenizer, list(train["text"])) * epochs
    del torch
    return {
        "arm": "HF Trainer",
        "wall_seconds": wall,
        "train_seconds": train_seconds,
        "evaluation_seconds_during_training": EvalTime.seconds,
        "train_samples_per_second": len(train) * epochs / train_seconds,
        "train_tokens_per_second": tokens / train_seconds,
        "val_accuracy": final["eval_accuracy"],
        "val_accuracy_per_epoch": epoch_accuracy,
        "peak_memory_mib": peak_memory_mib(),
    }


# -- arm: emotion_lightning ---------------------------------------------------------------------------


def run_lightning(data_dir: Path, backbone: str, epochs: int, work_dir: Path) -> dict:
    import lightning as L
    from lightning.pytorch.callbacks import Callback, ModelCheckpoint

    from emotion_lightning import EmotionClassifier, EmotionDataModule
    from emotion_lightning.precision import runnable_precision

    class TrainTime(Callback):
        """Seconds spent in training batches, validation left out."""

        seconds = 0.0

        def on_train_epoch_start(self, trainer, pl_module):
            self._started = time.perf_counter()

        def on_validation_epoch_start(self, trainer, pl_module):
            if trainer.state.fn == "fit" and hasattr(self, "_started"):
                TrainTime.seconds += time.perf_counter() - self._started

    class EpochAccuracy(Callback):
        values: list[float] = []

        def on_validation_epoch_end(self, trainer, pl_module):
            if trainer.state.fn == "fit" and not trainer.sanity_checking:
                EpochAccuracy.values.append(float(trainer.callback_metrics["val/acc"]))

    start = time.perf_counter()
    L.seed_everything(42)
    model = EmotionClassifier(backbone=backbone)
    data = EmotionDataModule(backbone=backbone, data_dir=str(data_dir), cache_dir=str(work_dir / "cache"))
    checkpoint = ModelCheckpoint(
        dirpath=work_dir / "lightning", filename="best", monitor="val/acc", mode="max", save_top_k=1
    )
    precision, _ = runnable_precision("16-mixed", "auto")
    trainer = L.Trainer(
        max_epochs=epochs,
        precision=precision,
        # configs/reference.yaml, like the HF Trainer's default max_grad_norm.
        gradient_clip_val=1.0,
        callbacks=[checkpoint, TrainTime(), EpochAccuracy()],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, data)
    epoch_accuracy = list(EpochAccuracy.values)
    (final,) = trainer.validate(model, data, ckpt_path="best", verbose=False)
    wall = time.perf_counter() - start
    train_texts, _ = read_texts(data_dir / "train.txt")
    tokens = count_tokens(data.tokenizer, train_texts) * epochs
    return {
        "arm": "emotion_lightning",
        "precision": str(precision),
        "wall_seconds": wall,
        "train_seconds": TrainTime.seconds,
        "train_samples_per_second": len(train_texts) * epochs / TrainTime.seconds,
        "train_tokens_per_second": tokens / TrainTime.seconds,
        "val_accuracy": final["val/acc"],
        "val_accuracy_per_epoch": epoch_accuracy,
        "peak_memory_mib": peak_memory_mib(),
        "best_checkpoint": checkpoint.best_model_path,
    }


# -- arm: batch prediction ----------------------------------------------------------------------------


def run_predict(data_dir: Path, checkpoint_path: str, work_dir: Path) -> dict:
    import lightning as L
    import torch
    from transformers import pipeline

    from emotion_lightning import EmotionClassifier, EmotionDataModule

    texts, _ = read_texts(data_dir / "validation.txt")
    model = EmotionClassifier.load_from_checkpoint(checkpoint_path, map_location="cpu")
    # The same weights as a plain Hugging Face folder, for the pipeline.
    folder = work_dir / "hf-export"
    model.model.save_pretrained(folder)
    model.tokenizer.save_pretrained(folder)

    device = 0 if torch.cuda.is_available() else -1
    classifier = pipeline("text-classification", model=str(folder), device=device)
    classifier(texts[:32], batch_size=32, truncation=True)  # warm-up, not timed
    started = time.perf_counter()
    pipeline_labels = [out["label"] for out in classifier(texts, batch_size=32, truncation=True)]
    pipeline_seconds = time.perf_counter() - started

    data = EmotionDataModule(backbone=str(folder), predict_texts=texts)
    data.tokenizer = model.tokenizer
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.predict(model, EmotionDataModule(backbone=str(folder), predict_texts=texts[:32]))  # warm-up
    started = time.perf_counter()
    batches = trainer.predict(model, data)
    package_seconds = time.perf_counter() - started
    by_index = {i: label for b in batches for i, label in zip(b["index"].tolist(), b["labels"], strict=True)}
    package_labels = [by_index[i] for i in range(len(texts))]
    agreement = sum(a == b for a, b in zip(pipeline_labels, package_labels, strict=True)) / len(texts)
    return {
        "texts": len(texts),
        "pipeline_sentences_per_second": len(texts) / pipeline_seconds,
        "package_sentences_per_second": len(texts) / package_seconds,
        "label_agreement": agreement,
    }


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


def run_arm_in_child(arm: str, args, data_dir: Path, backbone: str, work_dir: Path, extra=()) -> dict:
    result_file = work_dir / f"{arm}.json"
    command = [
        sys.executable,
        __file__,
        "--arm",
        arm,
        "--data-dir",
        str(data_dir),
        "--backbone",
        backbone,
        "--epochs",
        str(args.epochs),
        "--work-dir",
        str(work_dir),
        *extra,
    ]
    print(f"[benchmark] {arm}: {' '.join(command)}", flush=True)
    subprocess.run(command, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "true"})
    return json.loads(result_file.read_text())


def child_main(args) -> None:
    from emotion_lightning.backbone import resolve_backbone

    backbone = resolve_backbone(args.backbone)
    if args.arm == "hf":
        result = run_hf(args.data_dir, backbone, args.epochs, args.work_dir)
    elif args.arm == "lightning":
        result = run_lightning(args.data_dir, backbone, args.epochs, args.work_dir)
    else:
        result = run_predict(args.data_dir, str(args.work_dir / "lightning" / "best.ckpt"), args.work_dir)
    (args.work_dir / f"{args.arm}.json").write_text(json.dumps(result))


def table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(lines)


def report(results: dict) -> str:
    out = []
    hf, lightning = results.get("hf"), results.get("lightning")
    arms = [arm for arm in (hf, lightning) if arm]
    if arms:
        rows = [["", *(arm["arm"] for arm in arms)]]
        rows.append(["whole run (s)", *(f"{arm['wall_seconds']:.1f}" for arm in arms)])
        rows.append(["training (s)", *(f"{arm['train_seconds']:.1f}" for arm in arms)])
        rows.append(["train samples/s", *(f"{arm['train_samples_per_second']:.1f}" for arm in arms)])
        rows.append(["train tokens/s", *(f"{arm['train_tokens_per_second']:.0f}" for arm in arms)])
        rows.append(["val accuracy (best)", *(f"{arm['val_accuracy']:.4f}" for arm in arms)])
        rows.append(
            ["val accuracy by epoch", *(" ".join(f"{a:.4f}" for a in arm["val_accuracy_per_epoch"]) for arm in arms)]
        )
        rows.append(["peak memory (MiB)", *(f"{arm['peak_memory_mib']:.0f}" for arm in arms)])
        out.append(table(rows))
        if hf and lightning:
            speed_up = hf["wall_seconds"] / lightning["wall_seconds"]
            throughput = lightning["train_samples_per_second"] / hf["train_samples_per_second"]
            out.append(
                f"whole-run speed-up: {speed_up:.2f}x   training samples/s ratio: {throughput:.2f}x   "
                f"accuracy difference: {lightning['val_accuracy'] - hf['val_accuracy']:+.4f}"
            )
    predict = results.get("predict")
    if predict:
        rows = [["", "transformers.pipeline", "emotion_lightning predict"]]
        rows.append(
            [
                f"sentences/s ({predict['texts']} texts)",
                f"{predict['pipeline_sentences_per_second']:.1f}",
                f"{predict['package_sentences_per_second']:.1f}",
            ]
        )
        out.append(table(rows))
        ratio = predict["package_sentences_per_second"] / predict["pipeline_sentences_per_second"]
        out.append(f"prediction speed-up: {ratio:.2f}x   same label: {predict['label_agreement']:.4f}")
    return "\n\n".join(out)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.arm:
        child_main(args)
        return
    import platform

    import torch

    with tempfile.TemporaryDirectory(prefix="emotion-benchmark-") as scratch:
        work_dir = Path(scratch)
        data_dir = slice_data(args.data_dir, work_dir / "data", args.train_limit, args.val_limit)
        backbone = (
            str(make_random_distilbert(work_dir / "distilbert", args.tokenizer))
            if args.random_distilbert
            else args.backbone
        )
        results = {
            "settings": {
                "backbone": "DistilBertConfig() random weights" if args.random_distilbert else args.backbone,
                "epochs": args.epochs,
                "train_texts": len((data_dir / "train.txt").read_text().splitlines()),
                "validation_texts": len((data_dir / "validation.txt").read_text().splitlines()),
                "device": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu",
                "cpu_threads": torch.get_num_threads(),
                "torch": torch.__version__,
            }
        }
        for arm in args.arms.split(","):
            results[arm] = run_arm_in_child(arm, args, data_dir, backbone, work_dir)
    print(json.dumps(results["settings"]))
    print(report(results))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2))
    print(f"results written to {args.output}")


if __name__ == "__main__":
    main()
