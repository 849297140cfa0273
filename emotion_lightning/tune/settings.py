"""The study's settings (``--tune.*``), checked before anything is opened or written."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from emotion_lightning.errors import SettingError, check_at_least


@dataclass
class TuneSettings:
    """The study's settings (``--tune.*``); fit's settings apply to every trial.

    Args:
        trials: trials to finish (completed or pruned), counting those of earlier runs of the study
        space: the search space, a YAML file or the name of a shipped one (default: tune)
        storage: the study's database (default sqlite:///<output>/study.db; any SQL URL Optuna takes)
        study_name: the study's name (a name, not a path)
        timeout: seconds after which no new trial starts
        output: the trials' run folders, and each study's best.yaml and plots
        max_failures: trials failed in a row after which the study stops
    """

    trials: int = 20
    space: str = "tune"
    storage: str | None = None
    study_name: str = "emotion-lightning"
    timeout: float | None = None
    output: Path = Path("runs/tune")
    max_failures: int = 3

    def check(self) -> None:
        """One line for a setting that cannot work, before anything is opened or written."""
        check_at_least("--tune.trials", self.trials, 1)
        check_at_least("--tune.max_failures", self.max_failures, 1)
        if self.timeout is not None and not 0 < self.timeout < math.inf:
            raise SettingError(f"--tune.timeout must be a number of seconds more than 0, got {self.timeout}")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", self.study_name):
            raise SettingError(
                f"--tune.study_name must be a name (letters, digits, '.', '_' and '-', at most 100), not a path: "
                f"got {self.study_name!r}"
            )
        if self.storage is not None and re.fullmatch(r"sqlite:///?(:memory:)?(\?.*)?", self.storage):
            raise SettingError(
                f"--tune.storage {self.storage} keeps the study in memory: it could not be continued or shared; "
                "give a file (sqlite:///runs/tune/study.db) or a database server"
            )

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{self.output / 'study.db'}"
