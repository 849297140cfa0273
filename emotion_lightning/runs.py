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

from __future__ import annotations

import contextlib
import csv
import hashlib
import itertools
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from emotion_lightning.errors import EmotionLightningError

RUN_PREFIX = "version_"
CHECKPOINT_FOLDER = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
METRICS_FILE = "metrics.csv"
WANDB_LINK_FILE = "wandb.json"
BEST_CHECKPOINT = "best.ckpt"
# Held (flock) by the fit that writes into a run folder, for as long as it runs.
LOCK_FILE = ".fit.lock"
# Set by the process that claims the folder; the DDP processes that Lightning starts inherit it.
RUN_FOLDER_VARIABLE = "EMOTION_LIGHTNING_RUN_DIR"
# How long the other processes of a torchrun / SLURM job wait for the first one's run folder, and how
# much earlier than them the first one may have claimed it (an older claim is a former job's).
SHARED_FOLDER_WAIT_SECONDS = 120
FIRST_PROCESS_LEAD_SECONDS = 30


def _run_number(path: Path) -> int | None:
    match = re.fullmatch(rf"{RUN_PREFIX}(\d+)", path.name)
    return int(match.group(1)) if match and path.is_dir() else None


def run_folders(root: str | Path) -> list[Path]:
    """The run folders under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    numbered = [(number, path) for path in root.iterdir() if (number := _run_number(path)) is not None]
    return [path for _, path in sorted(numbered)]


def claim_new_run_folder(root: str | Path) -> Path:
    """Create and return the next ``version_N`` folder under ``root``; safe against concurrent claims."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    existing = run_folders(root)
    number = _run_number(existing[-1]) + 1 if existing else 0
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


def _best_of(scored: list[tuple[float | None, int, Path]]) -> Path | None:
    """The checkpoint of the best score, the newest (highest number) of equals; runs with no score come last."""
    return max(scored, key=lambda entry: (entry[0] is not None, entry[0] or 0.0, entry[1]))[2] if scored else None


def best_checkpoint(root: str | Path) -> Path | None:
    """The ``best.ckpt`` with the best ``val/acc`` among the runs under ``root`` (the newest of equals)."""
    return _best_of(
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
    from emotion_lightning.config_files import read_yaml_file

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


# -- one fit per run folder at a time -----------------------------------------------------------


def first_process_of_job() -> bool:
    """Whether this is the process that owns the run folder (not another DDP process of the same job)."""
    return int(os.environ.get("LOCAL_RANK", "0")) == 0 and _global_rank() == 0


class HeldRunFolders:
    """The run folders one command holds: each locked for as long as the command runs (an advisory ``flock``,
    which the kernel drops when the process ends, however it ends), and the one it created removed again if the
    command failed before writing anything of its own there."""

    def __init__(self):
        self.created: list[Path] = []
        self.made_roots: set[str] = set()  # trainer.default_root_dir folders this command made
        self._locks: list[int] = []

    def lock(self, folder: Path, created: bool = False) -> bool:
        """Mark ``folder`` as written by this process; False if another process holds it. Where the file system
        has no locks, every fit is let through."""
        import fcntl

        descriptor = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            return False
        except OSError:
            pass  # no locking on this file system
        self._locks.append(descriptor)
        if created:
            self.created.append(folder)
        return True

    def release(self, failed: bool) -> None:
        """At the command's end: let go of the locks; after a failure, remove what it created and left unused
        (the run folder, and the folder above it when the run made that too and it is empty now)."""
        for folder in self.created if failed else ():
            if remove_if_unused(folder) and folder.parent.name in self.made_roots:
                with contextlib.suppress(OSError):
                    folder.parent.rmdir()
        while self._locks:
            os.close(self._locks.pop())


# What a fit writes into its folder before it has done anything worth keeping.
_NOTHING_KEPT = {LOCK_FILE, "config.yaml", "hparams.yaml"}


def remove_if_unused(folder: Path) -> bool:
    """Remove a run folder that a failed fit created and left with nothing of its own (no checkpoint, no
    metrics): a fit that could not start leaves no empty ``version_N`` behind."""
    try:
        names = {path.name for path in folder.iterdir()}
    except OSError:
        return False
    if not names <= _NOTHING_KEPT:
        return False
    for name in names:
        (folder / name).unlink(missing_ok=True)
    folder.rmdir()
    return True


def run_folder_of(checkpoint: str | Path) -> Path | None:
    """The run folder a checkpoint belongs to (``<run>/checkpoints/<name>.ckpt``), else None."""
    parent = Path(checkpoint).resolve().parent
    return parent.parent if parent.name == CHECKPOINT_FOLDER else None


def _launch_key() -> str | None:
    """An id shared by all processes of a job started by torchrun or SLURM; None for one process.

    Processes that Lightning starts itself inherit the run folder through the environment instead.
    """
    if int(os.environ.get("WORLD_SIZE", os.environ.get("SLURM_NTASKS", "1"))) <= 1:
        return None
    parts = [os.environ.get(name, "") for name in ("MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", "SLURM_JOB_ID")]
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:16]


def _global_rank() -> int:
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")))


def shared_new_run_folder(root: str | Path) -> Path:
    """A new run folder for this job: claimed by its first process and the same for all its processes."""
    inherited = os.environ.get(RUN_FOLDER_VARIABLE)
    if inherited and int(os.environ.get("LOCAL_RANK", "0")) > 0:
        return Path(inherited)  # a DDP process that Lightning started: its parent claimed the folder
    key = _launch_key()
    pointer = Path(root) / f".run-of-job-{key}" if key else None
    if pointer is not None and _global_rank() > 0:
        folder = Path(root) / _wait_for_pointer(pointer)
    else:
        folder = claim_new_run_folder(root)
        if pointer is not None:
            partial = pointer.with_name(f"{pointer.name}.partial")
            partial.write_text(folder.name)
            os.replace(partial, pointer)
    os.environ[RUN_FOLDER_VARIABLE] = str(folder)
    return folder


def _wait_for_pointer(pointer: Path) -> str:
    """The folder name that the job's first process wrote; an older pointer is a former job's."""
    started = time.time() - FIRST_PROCESS_LEAD_SECONDS
    deadline = time.monotonic() + SHARED_FOLDER_WAIT_SECONDS
    while not (pointer.is_file() and pointer.stat().st_mtime >= started):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the first process of this job created no run folder in {pointer.parent}")
        time.sleep(0.2)
    return pointer.read_text().strip()


@dataclass(frozen=True)
class RunsSettings:
    """List the runs under a folder (and its subfolders): their best val/acc, epochs and checkpoints.

    Args:
        root: the folder (a trainer.default_root_dir, or one above several)
    """

    root: Path = Path("runs")


def describe_runs(root: Path) -> str:
    """One line per run folder under ``root``: its path, best ``val/acc``, epochs logged and checkpoints; the
    one ``--ckpt_path best`` picks in each root is marked. A file of a run that is not what the package wrote is
    left out, with a line saying which."""
    folders = sorted({path.parent for path in root.glob("**/version_*/") if _run_number(path) is not None})
    if not folders:
        return f"no runs under {root}"
    lines, skipped = [f"{'run':<40} {'val/acc':>8} {'epochs':>6}  checkpoints"], []
    for parent in folders:
        rows, scored = [], []
        for number, folder in enumerate(run_folders(parent)):
            try:
                logged = read_metrics(folder)
            except RunFileError as error:
                skipped.append(f"skipped {error}")
                logged = LoggedRun(None, 0)
            kept = [
                name for name in (BEST_CHECKPOINT, LAST_CHECKPOINT) if (folder / CHECKPOINT_FOLDER / name).is_file()
            ]
            if BEST_CHECKPOINT in kept:
                scored.append((logged.best_score, number, folder))
            rows.append((folder, logged, kept))
        best = _best_of(scored)
        for folder, logged, kept in rows:
            mark = "  <- --ckpt_path best" if folder == best else ""
            shown = f"{logged.best_score:.4f}" if logged.best_score is not None else "-"
            lines.append(f"{str(folder):<40} {shown:>8} {logged.epochs:>6}  {', '.join(kept) or '-'}{mark}")
    return "\n".join(lines + skipped)


def main(args: list[str]) -> None:
    """``emotion-lightning runs [ROOT]``"""
    from emotion_lightning.settings import parse_settings

    if len(args) > 1 and not args[1].startswith("-"):  # the folder, given as the first argument
        args = [args[0], "--root", *args[1:]]
    print(describe_runs(parse_settings(RunsSettings, args).root))
