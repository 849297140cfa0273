"""What a fit writes into its run folder through Lightning: ``metrics.csv`` (continued by a resumed run),
``config.yaml`` (as the run was started) and the link between the run folder and its W&B run.

Apart from :mod:`emotion_lightning.runs` (the folders, found and read without Lightning), so that ``emotion-lightning
runs`` answers without importing Lightning (it took 4.8 s in an empty folder).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment

from emotion_lightning.compat import continue_csv_metrics
from emotion_lightning.runs import METRICS_FILE, WANDB_LINK_FILE, read_metrics


class RunMetricsLogger(CSVLogger):
    """``metrics.csv`` (and ``hparams.yaml``) directly in a run folder; a resumed run adds to its own file."""

    def __init__(self, run_folder: str | Path):
        super().__init__(str(run_folder), name="", version="")
        self._continued = False

    @property
    @rank_zero_experiment
    def experiment(self):
        if self._continued:
            return super().experiment
        # Lightning's writer starts metrics.csv afresh: a resumed run's rows are put back, and its header kept.
        metrics = Path(self.log_dir) / METRICS_FILE
        earlier = metrics.read_bytes() if metrics.is_file() else b""
        read_metrics(Path(self.log_dir))  # before the writer starts the file again: one the package did not write
        writer = super().experiment
        if earlier:
            metrics.write_bytes(earlier)
            continue_csv_metrics(writer, next(csv.reader([earlier.decode("utf-8").partition("\n")[0]]), []))
        self._continued = True
        return writer


class SaveConfigToRunFolder(SaveConfigCallback):
    """Writes the resolved config of a ``fit`` to ``config.yaml`` in its new run folder, and to W&B as the run's config.

    ``notes`` become comments at the top of the file (why a setting differs from the one asked for).
    Evaluating a checkpoint (validate, test, predict) leaves the run's ``config.yaml`` as fit wrote it.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.notes: list[str] = []

    def save_config(self, trainer, pl_module, stage: str) -> None:
        path = Path(trainer.default_root_dir) / self.config_filename
        # A resumed run keeps the config.yaml it was started with: what `--ckpt_path last` matches the next command
        # against (the resumed fit's model settings come from the checkpoint, max_length cut to what was used).
        if stage == "fit" and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            self.parser.save(self.config, path, skip_none=False)
            if self.notes:
                path.write_text("".join(f"# {note}\n" for note in self.notes) + path.read_text())
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_hyperparams(self.config.as_dict())
                if stage == "fit" and trainer.is_global_zero:
                    link_wandb_run(logger.experiment, Path(trainer.default_root_dir))


def link_wandb_run(wandb_run, run_folder: Path) -> None:
    """The run folder and the W&B run name each other: the folder's path in the W&B run's config, the W&B run's
    id, name, local files and page in ``<run folder>/wandb.json``."""
    wandb_run.config.update({"run_folder": str(run_folder.resolve())}, allow_val_change=True)
    link = {
        "id": wandb_run.id,
        "name": wandb_run.name,
        "project": wandb_run.project,
        "local_files": str(Path(wandb_run.dir).parent.resolve()),
        "url": wandb_run.url,
    }
    (run_folder / WANDB_LINK_FILE).write_text(json.dumps(link, indent=2) + "\n")
