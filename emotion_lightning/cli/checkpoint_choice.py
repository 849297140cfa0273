"""``--ckpt_path``: the checkpoint a command runs from (a file, or ``best``, ``last``, ``hpc`` of the runs under
``trainer.default_root_dir``), read once and checked, and what the command says about it."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from emotion_lightning import runs
from emotion_lightning.callbacks.resume import epochs_done
from emotion_lightning.checkpoints import recorded_score
from emotion_lightning.console import say
from emotion_lightning.errors import SettingError

# The words --ckpt_path takes besides a file, and what each names.
CHECKPOINT_WORDS = {
    "best": "the best val/acc of the runs under trainer.default_root_dir",
    "last": "the newest run of these settings, to continue it",
    "hpc": "the newest hpc_ckpt_N.ckpt that SLURM requeueing saved",
}


@dataclass(frozen=True)
class ReadCheckpoint:
    """The ``--ckpt_path`` checkpoint, read once and checked: the model's settings, its tokenizer and its weights
    all come from here, handed to what needs them."""

    path: Path
    contents: dict


def checkpoint_path(subcommand: str, given: str | None, root: Path) -> Path | None:
    """The checkpoint file ``--ckpt_path`` names: a path, ``best`` (the best ``val/acc`` of the runs under
    ``root``), ``last`` (the newest run's), or ``hpc``."""
    if given is None:
        if subcommand == "fit":
            return None
        raise SettingError(
            f"{subcommand} needs a trained model: give --ckpt_path, a checkpoint that fit wrote "
            f"(<run folder>/{runs.CHECKPOINT_FOLDER}/{runs.BEST_CHECKPOINT}), or `best` / `last` for the "
            "runs under trainer.default_root_dir"
        )
    if given == "hpc":
        found = runs.hpc_checkpoint(root)
    elif given == "last":
        found = runs.newest_checkpoint(root, runs.LAST_CHECKPOINT)
    elif given == "best":
        found = runs.best_checkpoint(root)
    elif not Path(given).exists() and (close := difflib.get_close_matches(given, CHECKPOINT_WORDS, n=1)):
        raise SettingError(
            f"--ckpt_path {given}: no such file; did you mean {close[0]}? ({CHECKPOINT_WORDS[close[0]]})"
        )
    else:
        return Path(given)
    if found is None:
        wanted = "hpc_ckpt_N.ckpt" if given == "hpc" else f"{runs.CHECKPOINT_FOLDER}/{given}.ckpt"
        raise SettingError(f"--ckpt_path {given}: no {wanted} under trainer.default_root_dir {root}")
    return found


def finished(config, checkpoint: dict) -> str | None:
    """How far a run had trained when ``checkpoint`` was saved, if that is as far as ``config`` asks; else None.
    (Lightning would load such a run, train nothing, and say the fit finished.)"""
    max_epochs, max_steps = config.trainer.max_epochs, config.trainer.max_steps
    if max_epochs is None and max_steps in (None, -1):
        max_epochs = 1000  # Lightning's default when neither is set
    epochs = epochs_done(checkpoint)
    if epochs is not None and max_epochs not in (None, -1) and epochs >= max_epochs:
        return f"{epochs} of {max_epochs} epochs"
    steps = checkpoint.get("global_step")
    if steps is not None and max_steps not in (None, -1) and steps >= max_steps:
        return f"{steps} of {max_steps} steps"
    return None


def say_which_checkpoint(path: Path, contents: dict) -> None:
    """One line: the checkpoint, its run and its val/acc."""
    run = runs.run_folder_of(path)
    try:
        score = recorded_score(contents) or runs.best_score(run)
    except runs.RunFileError as error:  # only said here: these weights do not need the run's metrics
        score = None
        say(f"val/acc unknown: {error}")
    described = [f"run {run.name}"] if run else []
    described.append(f"val/acc {score:.4f}" if score is not None else "val/acc not recorded")
    say(f"Checkpoint {path} ({', '.join(described)})")
