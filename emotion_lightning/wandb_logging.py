"""Weights & Biases logging that never costs a run: offline without an API key or a reachable server."""

from __future__ import annotations

import netrc
import os
from urllib.parse import urlparse

from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_warn

from emotion_lightning.compat import wandb_init_arguments
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
        import wandb

        kwargs.setdefault("settings", wandb.Settings(init_timeout=init_timeout))
        self.offline_from_start = bool(kwargs.get("offline")) or kwargs.get("mode") in OFFLINE_MODES
        asks_online = not self.offline_from_start and os.environ.get("WANDB_MODE", "") not in OFFLINE_MODES
        if asks_online and not wandb_api_key_available():
            say("W&B: no API key found, logging offline; upload later with `wandb sync wandb/offline-run-*`")
            kwargs["mode"], self.offline_from_start = "offline", True
        super().__init__(*args, **kwargs)

    @property
    @rank_zero_experiment
    def experiment(self):
        try:
            return super().experiment
        except Exception as error:  # wandb raises several kinds (CommError, UsageError, timeouts)
            if self.offline_from_start or os.environ.get("WANDB_MODE", "") in OFFLINE_MODES:
                raise
            rank_zero_warn(
                f"W&B could not be reached ({type(error).__name__}: {error}); logging offline instead. "
                "Upload later with `wandb sync wandb/offline-run-*`."
            )
        wandb_init_arguments(self)["mode"] = "offline"
        return super().experiment
