"""Training speed of the package's levers, each on and off, in the precision the package picks on this machine.

    python benchmarks/levers.py [--levers package,no-clipping,...] [--steps 150] [--train-limit 4000]
    python benchmarks/levers.py --profile          # where a training step's time goes (torch.profiler)

Same data (the first --train-limit training texts), same seed, one lever after the other, each in a
fresh process (the first run in a process pays one-off costs the later ones would not); the first
--warmup steps of each are not timed, and are reported apart (compilation happens there).

Levers (each is the package's default with one thing changed):
  package                  the package as it trains by default
  clip-in-its-own-pass     gradients scaled by clip_grad_norm_ before the step, instead of inside the fused step
  foreach-adamw            the multi-tensor AdamW with Lightning's own clipping, instead of the fused one
  no-clipping              no gradient clipping at all (the recipe clips at 1.0: a ceiling, not an option)
  compiled                 --model.compile true: torch.compile of the transformer (dynamic shapes)
  frozen-word-embeddings   --model.freeze_word_embeddings true (changes the recipe's mathematics)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LEVERS = ("package", "clip-in-its-own-pass", "foreach-adamw", "no-clipping", "compiled", "frozen-word-embeddings")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data" / "emotion")
    parser.add_argument("--train-limit", type=int, default=4000)
    parser.add_argument("--levers", default=",".join(LEVERS))
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=1, help="run the levers this many times, interleaved")
    parser.add_argument("--profile", action="store_true", help="profile --steps steps of the package's training")
    parser.add_argument("--lever", help=argparse.SUPPRESS)
    parser.add_argument("--work-dir", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


@contextlib.contextmanager
def lever_applied(name: str):
    """Patch the package for one lever, for the duration of a run."""
    import torch

    from emotion_lightning import EmotionClassifier

    patches = []
    if name == "foreach-adamw":
        fused_adamw = torch.optim.AdamW
        patches.append((torch.optim, "AdamW", lambda params, fused=None, **kw: fused_adamw(params, foreach=True, **kw)))
    elif name == "clip-in-its-own-pass":

        def clip_then_step(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
            scaler = getattr(self.trainer.precision_plugin, "scaler", None)
            if scaler is not None:
                scaler.unscale_(optimizer)
            self.trainer.precision_plugin.clip_grad_by_norm(optimizer, gradient_clip_val)

        patches.append((EmotionClassifier, "configure_gradient_clipping", clip_then_step))
    saved = [(owner, attribute, getattr(owner, attribute)) for owner, attribute, _ in patches]
    for owner, attribute, value in patches:
        setattr(owner, attribute, value)
    try:
        yield
    finally:
        for owner, attribute, value in saved:
            setattr(owner, attribute, value)


def run_lever(args) -> dict:
    import lightning as L
    import torch

    from emotion_lightning import EmotionClassifier, EmotionDataModule
    from emotion_lightning.precision import runnable_precision

    class StepTimer(L.Callback):
        def on_train_start(self, trainer, pl_module):
            self.started = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == args.warmup:
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                self.warmup_seconds = time.perf_counter() - self.started
                self.timed_from, self.samples = time.perf_counter(), 0
            elif trainer.global_step > args.warmup:
                self.samples += len(batch["input_ids"])

        def on_train_end(self, trainer, pl_module):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.seconds = time.perf_counter() - self.timed_from

    precision, _ = runnable_precision("16-mixed", "auto")
    data_dir = Path(args.work_dir)
    settings = {"compile": args.lever == "compiled", "freeze_word_embeddings": args.lever == "frozen-word-embeddings"}
    L.seed_everything(42)
    timer = StepTimer()
    callbacks = [timer]
    if args.profile:
        callbacks.append(StepProfile(args.warmup))
    trainer = L.Trainer(
        max_steps=args.warmup + args.steps,
        precision=precision,
        gradient_clip_val=0.0 if args.lever == "no-clipping" else 1.0,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    with lever_applied(args.lever):
        model = EmotionClassifier(backbone=args.backbone, **settings)
        data = EmotionDataModule(data_dir=str(data_dir), cache_dir=str(data_dir / "cache"))
        trainer.fit(model, data)
    return {
        "lever": args.lever,
        "precision": precision,
        "samples_per_second": timer.samples / timer.seconds,
        "warmup_seconds": timer.warmup_seconds,
    }


class StepProfile:
    """torch.profiler over the timed steps; prints the operators by their own CPU time."""

    def __new__(cls, warmup: int):
        import lightning as L
        import torch

        class Profile(L.Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                if trainer.global_step == warmup:
                    self.profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
                    self.profiler.__enter__()

            def on_train_end(self, trainer, pl_module):
                self.profiler.__exit__(None, None, None)
                table = self.profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
                print(table, flush=True)

        return Profile()


def slice_data(source: Path, target: Path, train_limit: int) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    lines = (source / "train.txt").read_text().splitlines(keepends=True)
    (target / "train.txt").write_text("".join(lines[:train_limit]))
    (target / "validation.txt").write_text((source / "validation.txt").read_text())
    return target


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.lever:
        print("RESULT " + json.dumps(run_lever(args)), flush=True)
        return
    import tempfile

    with tempfile.TemporaryDirectory(prefix="levers-") as scratch:
        data_dir = slice_data(args.data_dir, Path(scratch), args.train_limit)
        levers = ["package"] if args.profile else args.levers.split(",")
        runs: dict[str, list[dict]] = {lever: [] for lever in levers}
        # Interleaved (a, b, c, a, b, c, ...): a slow minute of this machine hits every lever alike.
        for lever in levers * args.repeats:
            command = [sys.executable, __file__, "--lever", lever, "--work-dir", str(data_dir), *_passed_on(args)]
            child = subprocess.run(command, capture_output=True, text=True)
            if args.profile:
                print(child.stdout)
            found = [line[len("RESULT ") :] for line in child.stdout.splitlines() if line.startswith("RESULT ")]
            if not found:
                print(f"{lever}: failed\n{child.stderr[-3000:]}")
                continue
            runs[lever].append(json.loads(found[-1]))
    results = [_median(lever_runs) for lever_runs in runs.values() if lever_runs]
    if results:
        print(f"precision {results[0]['precision']}, {args.steps} timed steps of 16 texts, backbone {args.backbone}")
        print(f"median of {args.repeats} run(s) per lever; all runs' samples/s in brackets")
        print(f"{'lever':26} {'samples/s':>10} {'vs package':>11} {'first ' + str(args.warmup) + ' steps':>16}  runs")
        base = next((r["samples_per_second"] for r in results if r["lever"] == "package"), None)
        for result in results:
            ratio = f"{result['samples_per_second'] / base:.2f}x" if base else "-"
            every = ", ".join(f"{rate:.1f}" for rate in result["all"])
            print(
                f"{result['lever']:26} {result['samples_per_second']:10.1f} {ratio:>11} "
                f"{result['warmup_seconds']:15.1f}s  [{every}]"
            )


def _median(lever_runs: list[dict]) -> dict:
    rates = sorted(run["samples_per_second"] for run in lever_runs)
    middle = sorted(lever_runs, key=lambda run: run["samples_per_second"])[len(lever_runs) // 2]
    return {
        **middle,
        "all": [run["samples_per_second"] for run in lever_runs],
        "samples_per_second": rates[len(rates) // 2],
    }


def _passed_on(args) -> list[str]:
    passed = ["--backbone", args.backbone, "--steps", str(args.steps), "--warmup", str(args.warmup)]
    return passed + (["--profile"] if args.profile else [])


if __name__ == "__main__":
    main()
