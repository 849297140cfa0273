"""What gradient clipping costs with each AdamW, in the precision the package picks on this machine.

    python benchmarks/clipping_cost.py [--backbone FOLDER] [--data-dir FOLDER] [--steps 200]

Same data, same seed, one option after the other, each in a fresh process (the first run in a process
pays one-off costs, on CUDA for every new batch shape, that later ones do not); the first --warmup
steps of each are not timed. Options:
  fused AdamW, unscale then clip   what the package does (EmotionClassifier.configure_gradient_clipping)
  foreach AdamW, Lightning's clip  the alternative: an optimizer that Lightning's own clipping accepts
  fused AdamW, no clipping         the ceiling: what clipping costs at all
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def foreach_adamw():
    """The package's optimizer with the fused kernel swapped for the multi-tensor (foreach) one."""
    import torch

    fused_adamw = torch.optim.AdamW

    def build(params, fused=None, **settings):
        return fused_adamw(params, foreach=True, **settings)

    torch.optim.AdamW = build
    try:
        yield
    finally:
        torch.optim.AdamW = fused_adamw


def train_samples_per_second(args, precision: str, clip: float) -> float:
    import lightning as L
    import torch

    from emotion_lightning import EmotionClassifier, EmotionDataModule

    class StepTimer(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == args.warmup:
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                self.started, self.samples = time.perf_counter(), 0

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step > args.warmup:
                self.samples += len(batch["input_ids"])

        def on_train_end(self, trainer, pl_module):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.seconds = time.perf_counter() - self.started

    L.seed_everything(42)
    timer = StepTimer()
    trainer = L.Trainer(
        max_steps=args.warmup + args.steps,
        precision=precision,
        gradient_clip_val=clip,
        callbacks=[timer],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    model = EmotionClassifier(backbone=args.backbone)
    data = EmotionDataModule(backbone=args.backbone, data_dir=str(args.data_dir))
    trainer.fit(model, data)
    return timer.samples / timer.seconds


OPTIONS = [
    ("fused AdamW, unscale then clip", contextlib.nullcontext, 1.0),
    ("foreach AdamW, Lightning's clip", foreach_adamw, 1.0),
    ("fused AdamW, no clipping", contextlib.nullcontext, 0.0),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data" / "emotion")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--option", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    from emotion_lightning.precision import runnable_precision

    precision, _ = runnable_precision("16-mixed", "auto")
    if args.option is not None:
        _, optimizer, clip = OPTIONS[args.option]
        with optimizer():
            print(f"samples/s {train_samples_per_second(args, precision, clip)}")
        return
    print(f"precision {precision}, {args.steps} timed steps of batch 16 each, backbone {args.backbone}")
    for index, (name, _, _) in enumerate(OPTIONS):
        child = subprocess.run(
            [sys.executable, __file__, *sys.argv[1:], "--option", str(index)], capture_output=True, text=True
        )
        rates = [line.split()[-1] for line in child.stdout.splitlines() if line.startswith("samples/s")]
        print(f"{name:34} {float(rates[-1]):8.1f} samples/s" if rates else f"{name:34} failed: {child.stderr[-2000:]}")


if __name__ == "__main__":
    main()
