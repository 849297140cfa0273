"""What a run shows: the package's own messages, and not the libraries' notices that ask nothing of the user.

``emotion-lightning ... --verbose`` shows those notices again.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from pathlib import Path

from lightning_utilities.core.rank_zero import rank_zero_only

log = logging.getLogger("emotion_lightning")
# `--verbose`: the libraries' notices shown (set_up_messages).
VERBOSE = False
_SET_UP = False
# When the command started (this module is among the first the command line imports).
COMMAND_STARTED = time.monotonic()

# Warnings that the package causes itself or that carry no action for the user.
NOISE_WARNINGS = (
    r"LightningCLI's args parameter is intended",
    r".*`isinstance\(treespec, LeafSpec\)` is deprecated",
    r"The '\w+_dataloader' does not have many workers",
    r"Checkpoint directory .* exists and is not empty",
    r"Experiment logs directory .* exists and is not empty",
    # The fit summary says why there is no best checkpoint when no validation ran.
    r"`?ModelCheckpoint\(monitor=.*\)`? could not find the monitored key",
    r"Precision .* is not supported by the model summary",
    r"You are using a CUDA device .* that has Tensor Cores",
    r".*TensorBoardX|.*tensorboardX",
    r"Target and region quantiles select the same set of trials",
    # A short run (a test, a trial of a tune study): nothing to act on.
    r"The number of training batches .* is smaller than the logging interval",
    r"The anonymous setting has no effect",
)


def say(message: str, every_process: bool = False) -> None:
    """One line for the user, from the first process only; with ``every_process``, from each process (prefixed with
    its rank on all but the first): what each of them did, such as what it kept when it stopped."""
    rank = _rank()
    if rank == 0:
        log.info(message)
    elif every_process:
        log.info(f"Rank {rank}: {message}")


def _rank() -> int:
    """This process's rank: Lightning's, once it is imported (it sets it); before, read from the environment
    as Lightning reads it (a command may speak before it imports Lightning)."""
    if hasattr(rank_zero_only, "rank"):
        return rank_zero_only.rank
    ranks = (os.environ.get(name) for name in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"))
    return int(next((rank for rank in ranks if rank is not None), 0))


class _MessageLines(logging.StreamHandler):
    """The package's messages on stderr (whatever stream ``sys.stderr`` is when they are said), one line each."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def show_messages() -> None:
    """Print the package's messages on stderr, one line each (the command line's setting)."""
    if not any(isinstance(handler, _MessageLines) for handler in log.handlers):
        handler = _MessageLines(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)


_PACKAGE_FOLDER = str(Path(__file__).parent)


class _OneLineForOurs:
    """The package's own warnings as one plain line; the libraries' as they show them (with where from)."""

    def __init__(self, library_format):
        self.library_format = library_format

    def __call__(self, message, category, filename, lineno, line=None) -> str:
        if str(filename).startswith(_PACKAGE_FOLDER):
            return f"warning: {message}\n"
        return self.library_format(message, category, filename, lineno, line)


def set_up_messages(verbose: bool = False, libraries: bool = True, show: bool = True) -> None:
    """What the command shows, set once where its process starts (the command line, a serve worker): the package's
    messages on stderr, one line each (``show``); unless ``verbose``, not the libraries' notices and progress bars
    that carry no action for the user. ``libraries``: Lightning and the Hugging Face libraries are imported here
    (importing Lightning sets its loggers' level), for the commands that use them; the others import none of them.

    The first call decides what is left out: the model calls it too (without ``show``), for training from Python,
    and leaves what the command line set as it was."""
    global VERBOSE, _SET_UP
    if show:
        show_messages()
    if _SET_UP:
        return
    VERBOSE, _SET_UP = verbose, True
    if verbose:
        return
    for pattern in NOISE_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    if libraries:
        import datasets
        import huggingface_hub.utils
        import lightning.pytorch  # noqa: F401 (sets its loggers' level and its warnings' format when imported)
        import transformers

        transformers.logging.set_verbosity_error()
        huggingface_hub.utils.disable_progress_bars()
        datasets.disable_progress_bars()
        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):  # devices found, seed set, tips
            logging.getLogger(name).setLevel(logging.WARNING)
    if not isinstance(warnings.formatwarning, _OneLineForOurs):  # after Lightning has set its own
        warnings.formatwarning = _OneLineForOurs(warnings.formatwarning)
