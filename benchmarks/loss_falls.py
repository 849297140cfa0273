"""Check a run's metrics.csv (CSVLogger): the training loss falls, epoch by epoch and from first logged step to last.

python benchmarks/loss_falls.py runs/x/lightning_logs/version_0/metrics.csv
"""

from __future__ import annotations

import csv
import sys


def main(path: str) -> int:
    with open(path, newline="") as file:
        rows = list(csv.DictReader(file))
    step_losses = [float(row["train/loss"]) for row in rows if row.get("train/loss")]
    epoch_losses = [float(row["train/loss_epoch"]) for row in rows if row.get("train/loss_epoch")]
    accuracies = [float(row["val/acc"]) for row in rows if row.get("val/acc")]
    print(f"train loss, logged steps: {' '.join(f'{loss:.3f}' for loss in step_losses)}")
    print(f"train loss by epoch: {' '.join(f'{loss:.4f}' for loss in epoch_losses)}")
    print(f"val acc by epoch: {' '.join(f'{acc:.4f}' for acc in accuracies)}")
    falls = len(step_losses) >= 2 and step_losses[-1] < step_losses[0]
    falls &= all(later < earlier for earlier, later in zip(epoch_losses, epoch_losses[1:], strict=False))
    print("loss falls: yes" if falls else "loss falls: NO")
    return 0 if falls else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
