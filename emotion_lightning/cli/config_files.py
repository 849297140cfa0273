"""Every YAML the package reads, read one way: ``-c`` files, settings given as YAML on the command line, the search
space. Aliases (``*name``) are refused.

An alias repeats what its anchor holds without writing it out again, so a few nested ones make a file of a few
hundred bytes stand for billions of values (the "billion laughs"): read and checked, such a config took 12.8 GB.
Without aliases, what a file holds is no larger than the file. The package's own recipes use none.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import yaml

from emotion_lightning.errors import SettingError

# The recipes shipped in the package (``-c reference``), and the search space of tune.
RECIPES = resources.files("emotion_lightning") / "configs"

# jsonargparse's name for the loader below (``parser_mode``): its own YAML reading, aliases refused.
PARSER_MODE = "yaml_without_aliases"


class AliasRefused(yaml.MarkedYAMLError):
    """A YAML alias: refused, whatever it points to."""


def refuse_aliases(text: str) -> None:
    """Raise a ``yaml.MarkedYAMLError`` (the line in ``problem_mark``) at the first alias of ``text``; a YAML
    syntax error is raised as it is."""
    for event in yaml.parse(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
        if isinstance(event, yaml.AliasEvent):
            raise AliasRefused(
                problem=f"an alias (*{event.anchor}) repeats another value; aliases are not read: write it out",
                problem_mark=event.start_mark,
            )


def load_value(text: str):
    """jsonargparse's YAML reading (``parser_mode``), with aliases refused first."""
    from jsonargparse import get_loader

    refuse_aliases(text)
    return get_loader("yaml")(text)


def register_parser_mode() -> str:
    """Make :data:`PARSER_MODE` known to jsonargparse and return it, for a parser's ``parser_mode``.

    jsonargparse falls back to reading a command-line value as a plain string when the loader fails; with an alias
    refused, a bomb given as a setting is then a string the setting's type refuses, in one line.
    """
    from jsonargparse import set_loader

    set_loader(PARSER_MODE, load_value, exceptions=(yaml.YAMLError,))
    return PARSER_MODE


def read_yaml_file(path: Path, what: str = "valid YAML"):
    """The YAML in ``path``, or :class:`SettingError` naming the file and the line at fault (not UTF-8, not YAML,
    an alias)."""
    try:
        text = path.read_text(encoding="utf-8")
        refuse_aliases(text)
        return yaml.safe_load(text)
    except UnicodeDecodeError as error:
        raise SettingError(f"{path}: not {what} (bytes that are not UTF-8 at byte {error.start})") from None
    except OSError as error:
        raise SettingError(f"{path}: cannot be read ({error.strerror or error})") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}" if mark is not None else str(path)
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise SettingError(f"{where}: not {what} ({problem})") from None


def shipped_recipes() -> list[str]:
    """The names of the recipes shipped in the package (``-c reference``)."""
    return sorted(Path(str(recipe)).stem for recipe in RECIPES.iterdir() if str(recipe).endswith(".yaml"))


def config_paths(args: Sequence[str]) -> list[Path]:
    """The files given with ``-c`` / ``--config`` / ``--config=``."""
    paths = [value for flag, value in zip(args, args[1:], strict=False) if flag in ("-c", "--config")]
    paths += [arg.split("=", 1)[1] for arg in args if arg.startswith("--config=")]
    return [Path(path) for path in paths]


def check_yaml_files(args: Sequence[str]) -> None:
    """Each config file given with ``-c``/``--config`` exists, is a file, and is YAML without aliases; else one line
    naming it (and the line at fault).

    (jsonargparse would say a file is missing only once Lightning is imported, seconds later, and report a
    syntax error without saying which file it came from.)
    """
    for path in config_paths(args):
        if path.is_dir():
            raise SettingError(f"-c / --config: {path} is a folder; give a YAML file")
        if not path.is_file():
            close = difflib.get_close_matches(str(path), shipped_recipes(), n=1)
            hint = f"did you mean {close[0]}, a shipped recipe?" if close else "the shipped recipes are"
            raise SettingError(
                f"-c / --config: File does not exist: {str(path)!r} ({hint} "
                f"`emotion-lightning {args[0]} --help` names them)"
            )
        read_yaml_file(path)
