"""What a run shows: the package's own messages, and not the libraries' notices that ask nothing of the user.

``emotion-lightning ... --verbose`` shows those notices again.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings

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
    r"Precision .* is not supported by the model summary",
    r"You are using a CUDA device .* that has Tensor Cores",
    r".*TensorBoardX|.*tensorboardX",
)


@rank_zero_only
def say(message: str) -> None:
    """One line for the user, from the first process only."""
    log.info(message)


def show_messages() -> None:
    """Print the package's messages on stderr, one line each (the command line's setting)."""
    if not any(getattr(handler, "_emotion_lightning", False) for handler in log.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._emotion_lightning = True
        log.addHandler(handler)
    log.setLevel(logging.INFO)


def quiet_libraries() -> None:
    """Leave out the libraries' notices and progress bars that carry no action for the user."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    for pattern in NOISE_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    # Lightning's own info lines (devices found, seed set, tips); its warnings still show. (Imported first:
    # Lightning sets its loggers' level when it is imported.)
    import lightning.pytorch  # noqa: F401

    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
