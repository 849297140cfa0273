"""Errors the user can fix. Each message names the file, line or argument at fault and what to do.

The command line prints these as one line (``emotion-lightning: error: ...``, exit status 1)
instead of a traceback; from Python they are ordinary exceptions of the standard kinds they
also derive from (``ValueError``, ``FileNotFoundError``, ...).
"""

from __future__ import annotations


class EmotionLightningError(Exception):
    """Base of the errors caused by input (files, arguments, environment), not by a bug."""


class SettingError(EmotionLightningError, ValueError):
    """An argument or config value that cannot work."""


class DataNotFoundError(EmotionLightningError, FileNotFoundError):
    """A data folder, split or file that is not where the settings say."""


def check_at_least(name: str, value: int, minimum: int, why: str = "") -> None:
    """Raise :class:`SettingError` naming the argument unless ``value >= minimum``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        reason = f" ({why})" if why else ""
        raise SettingError(f"{name} must be an integer of at least {minimum}{reason}, got {value!r}")
