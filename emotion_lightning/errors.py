"""Errors the user can fix. Each message names the file, line or argument at fault and what to do.

The command line prints these as one line (``emotion-lightning: error: ...``, exit status 1)
instead of a traceback; from Python they are ordinary exceptions of the standard kinds they
also derive from (``ValueError``, ``FileNotFoundError``, ...).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable


class EmotionLightningError(Exception):
    """Base of the errors caused by input (files, arguments, environment), not by a bug."""


class SettingError(EmotionLightningError, ValueError):
    """An argument or config value that cannot work."""


class DataNotFoundError(EmotionLightningError, FileNotFoundError):
    """A data folder, split or file that is not where the settings say."""


def parser_error(message: str, settings: Iterable[str], subcommand: str) -> SettingError:
    """jsonargparse's error (often several lines, after a page of usage) as one line: the setting at fault, what
    it takes and what it got, the closest real name for one that does not exist, and where the settings are listed.
    """
    hint = f"`emotion-lightning {subcommand} --help` lists the settings"
    known = [f"--{name}" for name in settings]

    def closest(name: str) -> str:
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        return f"{name} (did you mean {close[0]}?)" if close else name

    if message.startswith("unrecognized arguments:"):
        unknown = [word.partition("=")[0] for word in message.split()[2:] if word.startswith("-")]
        if not unknown:
            return SettingError(f"{message}; {hint}")
        return SettingError(f"unknown setting {', '.join(map(closest, unknown))}; {hint}")
    if in_config := re.search(r"does not accept (?:nested key|option) '([^']+)'", message):
        return SettingError(f"unknown setting {closest('--' + in_config[1])} in a config file; {hint}")
    key = re.match(r'Parser key "([^"]+)":', message)
    if key and key[1] == "config":
        return SettingError(f"-c / --config: {message.partition(':')[2].strip()}")
    if key:
        wanted = sorted(set(re.findall(r"Expected an? <class '(\w+)'>", message)) - {"NoneType"})
        given = re.search(r"(?:Given|Got) value: (.*)", message)
        if wanted and given:
            return SettingError(f"--{key[1]} takes {' or '.join(wanted)}, not {given[1].strip()!r}; {hint}")
        first = next((line.strip(" -") for line in message.splitlines()[1:] if line.strip(" -")), "")
        return SettingError(f"--{key[1]}: {first}; {hint}")
    return SettingError(f"{' '.join(message.split())}; {hint}")


def check_at_least(name: str, value: int, minimum: int, why: str = "") -> None:
    """Raise :class:`SettingError` naming the argument unless ``value >= minimum``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        reason = f" ({why})" if why else ""
        raise SettingError(f"{name} must be an integer of at least {minimum}{reason}, got {value!r}")
