"""Run folders: every ``fit`` writes into a folder of its own, so that no run replaces or mixes with another.

    runs/offline/                  trainer.default_root_dir
        version_0/                 one fit (and its resumptions)
            checkpoints/best.ckpt  weights of the best validation accuracy
            checkpoints/last.ckpt  everything needed to resume
            config.yaml            the resolved configuration
            metrics.csv            the logged metrics
            reports/               validate / test reports of this run's checkpoints
            predictions/texts.csv  predict output of this run's checkpoints for texts.txt
        version_1/                 the next fit

A new folder is claimed with ``mkdir``, which only one process can win, so runs started at the same
time into the same root get different folders. ``fit --ckpt_path last`` continues the newest run
that has a ``last.ckpt``, in its own folder.
"""

from emotion_lightning.runs.folders import (
    BEST_CHECKPOINT,
    CHECKPOINT_FOLDER,
    LAST_CHECKPOINT,
    METRICS_FILE,
    WANDB_LINK_FILE,
    RunFileError,
    best_checkpoint,
    best_score,
    claim_new_run_folder,
    hpc_checkpoint,
    newest_checkpoint,
    newest_run_of,
    read_metrics,
    run_folder_of,
    run_folders,
    write_new_file,
)
from emotion_lightning.runs.ownership import HeldRunFolders, first_process_of_job

__all__ = [
    "BEST_CHECKPOINT",
    "CHECKPOINT_FOLDER",
    "LAST_CHECKPOINT",
    "METRICS_FILE",
    "WANDB_LINK_FILE",
    "HeldRunFolders",
    "RunFileError",
    "best_checkpoint",
    "best_score",
    "claim_new_run_folder",
    "first_process_of_job",
    "hpc_checkpoint",
    "newest_checkpoint",
    "newest_run_of",
    "read_metrics",
    "run_folder_of",
    "run_folders",
    "write_new_file",
]
