"""Run folders, found and read without Lightning: claiming a new one, a run's metrics and best checkpoint, the
run a ``fit --ckpt_path last`` continues."""

from __future__ import annotations

import csv
import itertools
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from emotion_lightning.errors import EmotionLightningError

RUN_PREFIX = "version_"
CHECKPOINT_FOLDER = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
METRICS_FILE = "metrics.csv"
WANDB_LINK_FILE = "wandb.json"
BEST_CHECKPOINT = "best.ckpt"


def run_number(path: Path) -> int | None:
    match = re.fullmatch(rf"{RUN_PREFIX}(\d+)", path.name)
    return int(match.group(1)) if match and path.is_dir() else None


def run_folders(root: str | Path) -> list[Path]:
    """The run folders under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    numbered = [(number, path) for path in root.iterdir() if (number := run_number(path)) is not None]
    return [path for _, path in sorted(numbered)]


def claim_new_run_folder(root: str | Path) -> Path:
    """Create and return the next ``version_N`` folder under ``root``; safe against concurrent claims."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    existing = run_folders(root)
    number = run_number(existing[-1]) + 1 if existing else 0
    while True:
        candidate = root / f"{RUN_PREFIX}{number}"
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            number += 1


def write_new_file(folder: Path, name: str, content: bytes) -> Path:
    """Write ``content`` into a file that did not exist: ``name``, else ``<stem>-2<suffix>``, ``-3``, ...

    Created with ``O_EXCL`` (which never follows a link): an earlier output is never replaced, and a link planted
    where the output goes is never written through.
    """
    folder.mkdir(parents=True, exist_ok=True)
    stem, suffix = os.path.splitext(name)
    for number in itertools.count(1):
        path = folder / (name if number == 1 else f"{stem}-{number}{suffix}")
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666)
        except FileExistsError:
            continue
        with os.fdopen(descriptor, "wb") as file:
            file.write(content)
        return path
    raise AssertionError("unreachable")


def newest_checkpoint(root: str | Path, name: str) -> Path | None:
    """``checkpoints/<name>`` of the newest run under ``root`` that has one."""
    for folder in reversed(run_folders(root)):
        checkpoint = folder / CHECKPOINT_FOLDER / name
        if checkpoint.is_file():
            return checkpoint
    return None


def hpc_checkpoint(root: str | Path) -> Path | None:
    """The newest ``hpc_ckpt_N.ckpt`` in ``root`` (what Lightning saves when SLURM requeues a job)."""
    numbered = [
        (int(match.group(1)), path)
        for path in Path(root).glob("hpc_ckpt_*.ckpt")
        if (match := re.fullmatch(r"hpc_ckpt_(\d+)\.ckpt", path.name))
    ]
    return max(numbered)[1] if numbered else None


class RunFileError(EmotionLightningError, ValueError):
    """A file in a run folder that is not what the package wrote there (or cannot be read); the message names it."""


@dataclass(frozen=True)
class LoggedRun:
    """What a run's ``metrics.csv`` says: its best ``val/acc`` (None before its first validation) and how many
    epochs it validated."""

    best_score: float | None
    epochs: int


def read_metrics(run_folder: Path) -> LoggedRun:
    """The run's ``metrics.csv``, read row by row; :class:`RunFileError` naming the file (and line) when it is not a
    metrics file the package wrote: not UTF-8, not CSV, a ``val/acc`` that is no number, not a file at all."""
    metrics = run_folder / METRICS_FILE
    if not metrics.exists():
        return LoggedRun(None, 0)
    if not metrics.is_file():  # a folder, a FIFO (reading would block), a device
        raise RunFileError(f"{metrics} is not a file; the package writes metrics.csv as one")
    scores, epochs = [], set()
    try:
        with metrics.open(newline="", encoding="utf-8") as file:
            reader = csv.DictReader(file)
            for row in reader:
                value = row.get("val/acc")
                if not value:
                    continue
                try:
                    score = float(value)
                except ValueError:
                    score = math.nan
                if not 0 <= score <= 1:
                    raise RunFileError(f"{metrics}, line {reader.line_num}: val/acc {value!r} is not an accuracy")
                scores.append(score)
                epochs.add(row.get("epoch"))
    except UnicodeDecodeError as error:
        raise RunFileError(f"{metrics}: not a metrics file the package wrote (bytes that are not UTF-8)") from error
    except (OSError, csv.Error) as error:
        raise RunFileError(f"{metrics} cannot be read: {getattr(error, 'strerror', None) or error}") from error
    return LoggedRun(max(scores, default=None), len(epochs - {None, ""}))


def best_score(run_folder: Path | None) -> float | None:
    """The best ``val/acc`` a run logged in its ``metrics.csv`` (None without one)."""
    return read_metrics(run_folder).best_score if run_folder is not None else None


def best_of(scored: list[tuple[float | None, int, Path]]) -> Path | None:
    """The checkpoint of the best score, the newest (highest number) of equals; runs with no score come last."""
    return max(scored, key=lambda entry: (entry[0] is not None, entry[0] or 0.0, entry[1]))[2] if scored else None


def best_checkpoint(root: str | Path) -> Path | None:
    """The ``best.ckpt`` with the best ``val/acc`` among the runs under ``root`` (the newest of equals)."""
    return best_of(
        [
            (best_score(folder), number, folder / CHECKPOINT_FOLDER / BEST_CHECKPOINT)
            for number, folder in enumerate(run_folders(root))
            if (folder / CHECKPOINT_FOLDER / BEST_CHECKPOINT).is_file()
        ]
    )


# -- the run a fit continues ----------------------------------------------------------------------

# Settings that do not change what a run trains: how long it goes on, where and how fast it runs, what it shows and
# logs, and what the other subcommands read. A fit resumed with other values of these continues the same run.
NOT_WHAT_IS_TRAINED = (
    "ckpt_path",
    "config",
    "print_config",
    "trainer.default_root_dir",
    "trainer.max_epochs",
    "trainer.max_steps",
    "trainer.max_time",
    "trainer.precision",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.num_nodes",
    "trainer.strategy",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.logger",
    "trainer.callbacks",
    "trainer.plugins",
    "trainer.profiler",
    "trainer.log_every_n_steps",
    "checkpoint.dirpath",
    "data.num_workers",
    "data.num_proc",
    "data.cache_dir",
    "data.predict_file",
    "data.predict_texts",
    "data.pack_predictions",
    "resume",
    "prediction_writer",
    "reports",
)


def _what_is_trained(config: object, prefix: str = "") -> dict[str, object]:
    """A config's settings as dotted names (a setting that takes a class, with its ``init_args``, as one value),
    without :data:`NOT_WHAT_IS_TRAINED`."""
    flat: dict[str, object] = {}
    for key, value in config.items() if isinstance(config, dict) else ():
        name = f"{prefix}{key}"
        if any(name == left_out or name.startswith(f"{left_out}.") for left_out in NOT_WHAT_IS_TRAINED):
            continue
        if isinstance(value, dict) and "class_path" not in value:
            flat.update(_what_is_trained(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def newest_run_of(root: str | Path, asked: dict, skipped: list[str]) -> Path | None:
    """The newest run under ``root`` whose ``config.yaml`` trains what ``asked`` (a fit's settings) trains; a run
    whose ``config.yaml`` cannot be read is passed over, with the reason added to ``skipped``."""
    from emotion_lightning.cli.config_files import read_yaml_file

    wanted = _what_is_trained(asked)
    for folder in reversed(run_folders(root)):
        saved = folder / "config.yaml"
        if not saved.is_file():
            continue
        try:
            if _what_is_trained(read_yaml_file(saved)) == wanted:
                return folder
        except EmotionLightningError as error:
            skipped.append(f"skipped {error}")
    return None


def run_folder_of(checkpoint: str | Path) -> Path | None:
    """The run folder a checkpoint belongs to (``<run>/checkpoints/<name>.ckpt``), else None."""
    parent = Path(checkpoint).resolve().parent
    return parent.parent if parent.name == CHECKPOINT_FOLDER else None
