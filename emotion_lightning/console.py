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
)


def say(message: str) -> None:
    """One line for the user, from the first process only."""
    if _rank() == 0:
        log.info(message)


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


def _one_line_for_ours(library_format):
    def format_warning(message, category, filename, lineno, line=None) -> str:
        """The package's own warnings as one plain line; the libraries' as they show them (with where from)."""
        if str(filename).startswith(_PACKAGE_FOLDER):
            return f"warning: {message}\n"
        return library_format(message, category, filename, lineno, line)

    return format_warning


def quiet_libraries() -> None:
    """Leave out the libraries' notices and progress bars that carry no action for the user (imports nothing)."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    for pattern in NOISE_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    # Lightning's own info lines (devices found, seed set, tips) go to the root logger's handlers when it has
    # some, else to a handler of Lightning's: one at WARNING keeps Lightning's warnings and drops its notices,
    # and shows other libraries' warnings as Python shows them when nothing is configured.
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setLevel(logging.WARNING)
        root.addHandler(handler)
    warnings.formatwarning = _one_line_for_ours(warnings.formatwarning)
