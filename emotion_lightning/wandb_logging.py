"""Weights & Biases logging that never costs a run: offline without an API key or a reachable server."""

from __future__ import annotations

import netrc
import os
from urllib.parse import urlparse

from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_warn

from emotion_lightning.console import say

OFFLINE_MODES = ("offline", "dryrun", "disabled")


def wandb_api_key_available() -> bool:
    """Whether wandb can authenticate: WANDB_API_KEY, or a ~/.netrc entry for the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


class FallbackWandbLogger(WandbLogger):
    """A ``WandbLogger`` that runs offline where it cannot log online, instead of failing the run.

    With no API key (and ``WANDB_MODE`` unset) it logs offline from the start. If the W&B server
    cannot be reached within ``init_timeout`` seconds, it warns and logs offline. Offline runs
    are uploaded later with ``wandb sync``.

    Args:
        init_timeout: seconds to wait for the W&B server when the run starts.
        \\**kwargs: as for ``WandbLogger``: ``project``, ``name``, ``tags``, ``entity``, ``log_model``, ...
    """

    def __init__(self, *args, init_timeout: float = 30.0, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_timeout = init_timeout
        mode = os.environ.get("WANDB_MODE", "")
        if not self._offline and mode not in OFFLINE_MODES and not wandb_api_key_available():
            say("W&B: no API key found, logging offline; upload later with `wandb sync wandb/offline-run-*`")
            self._wandb_init["mode"] = "offline"

    @property
    @rank_zero_experiment
    def experiment(self):
        if self._experiment is not None:
            return self._experiment
        import wandb

        self._wandb_init.setdefault("settings", wandb.Settings(init_timeout=self._init_timeout))
        try:
            return super().experiment
        except Exception as error:  # wandb raises several kinds (CommError, UsageError, timeouts)
            if self._wandb_init.get("mode") == "offline":
                raise
            rank_zero_warn(
                f"W&B could not be reached ({type(error).__name__}: {error}); logging offline instead. "
                "Upload later with `wandb sync wandb/offline-run-*`."
            )
            self._wandb_init["mode"] = "offline"
            return super().experiment
