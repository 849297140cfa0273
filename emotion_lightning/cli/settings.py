"""How every subcommand reads its settings: jsonargparse, one set of rules.

``--SETTING VALUE`` (no abbreviations), ``-c FILE`` (or ``-c NAME``, a recipe shipped in the package when the working
folder has no file of that name), ``--print_config``, and a mistake said in one line with the closest real name.
LightningCLI parses fit, validate, test, predict and tune; :func:`parse_settings` builds the same kind of parser
from a settings dataclass for the others.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from importlib import resources
from pathlib import Path

from emotion_lightning.cli.config_files import RECIPES, config_paths, read_yaml_file, register_parser_mode
from emotion_lightning.compat import read_argument_error
from emotion_lightning.errors import SettingError

HELP_FOLDER = resources.files("emotion_lightning") / "help"


def parser_rules() -> dict:
    """What every parser of the package is built with: jsonargparse raises instead of printing a page of usage and
    exiting; a prefix of a name is not taken for it; YAML (files and values) is read without aliases."""
    return {"exit_on_error": False, "allow_abbrev": False, "parser_mode": register_parser_mode()}


def recipe_path(name: str) -> str:
    """``-c NAME``: the file NAME if the working folder has one, else the shipped recipe ``NAME.yaml``."""
    shipped = RECIPES / f"{name}.yaml"
    if Path(name).exists() or "/" in name or name.endswith((".yaml", ".yml", ".json")) or not shipped.is_file():
        return name
    return str(shipped)


def with_recipes(args: list[str]) -> list[str]:
    """The arguments with each ``-c NAME`` / ``--config NAME`` that names a shipped recipe resolved to its file."""
    resolved, follows_flag = [], False
    for arg in args:
        if follows_flag:
            arg = recipe_path(arg)
        elif arg.startswith("--config="):
            arg = f"--config={recipe_path(arg.removeprefix('--config='))}"
        resolved.append(arg)
        follows_flag = arg in ("-c", "--config")
    return resolved


def take_texts(args: list[str]) -> tuple[list[str], list[str]]:
    """``predict --text TEXT`` (or ``--text=TEXT``, repeated): the other arguments, and the texts as given.

    A text is never read as YAML or as a list (``--text "[I am happy, I am sad]"`` is one text, ``--text null`` the
    word null), in linear time; one that cannot be classified is the same one-line error as such a line of a file.
    """
    from emotion_lightning.sources import text_problem

    rest, texts = [], []
    arguments = iter(args)
    for arg in arguments:
        if arg == "--text":
            text = next(arguments, None)
            if text is None:
                raise SettingError('--text needs the text to classify after it: --text "I passed my exam!"')
        elif arg.startswith("--text="):
            text = arg.removeprefix("--text=")
        else:
            rest.append(arg)
            continue
        if problem := text_problem(text):
            raise SettingError(f"--text number {len(texts) + 1}: {problem}")
        texts.append(text)
    return rest, texts


def settings_named_in_help(subcommand: str) -> list[str]:
    """The settings a subcommand's shipped ``--help`` names (``model.learning_rate``, ``trainer.max_epochs``...)."""
    return re.findall(r"--([a-z][\w.]*)", (HELP_FOLDER / f"{subcommand}.txt").read_text())


def check_setting_names(args: list[str]) -> None:
    """Every ``--SETTING`` given, and every key of a ``-c`` file, is one the subcommand has: a mistyped name is one
    line at once, before the parser (and Lightning, seconds to import) is built. Values are the parser's to check.
    (The ``-c`` files are read by :func:`~emotion_lightning.cli.config_files.read_yaml_file`: a file that is missing,
    not YAML or with an alias is one line naming it.)"""
    subcommand, known = args[0], set(settings_named_in_help(args[0])) | {"config", "help", "verbose"}

    def unknown(name: str) -> bool:  # a setting's own keys (--trainer.logger.init_args.name) come with it
        parts = name.split(".")
        return not any(".".join(parts[:end]) in known for end in range(1, len(parts) + 1))

    given = [arg[2:].partition("=")[0].removesuffix("+") for arg in args[1:] if arg.startswith("--")]
    if names := [f"--{name}" for name in given if unknown(name)]:
        raise parser_error(f"unrecognized arguments: {' '.join(names)}", sorted(known), subcommand)
    for path in config_paths(args):
        for name in _keys(read_yaml_file(path), known):
            raise parser_error(f"Subcommand does not accept option '{name}'", sorted(known), subcommand)


def _keys(config: object, known: set[str], prefix: str = ""):
    """The dotted keys of a config file that are no setting (a known setting's own keys are not looked into)."""
    for key, value in config.items() if isinstance(config, dict) else ():
        name = f"{prefix}{key}"
        if name in known:
            continue
        if isinstance(value, dict) and any(setting.startswith(f"{name}.") for setting in known):
            yield from _keys(value, known, f"{name}.")
        else:
            yield name


def parse_settings(settings_class, args: list[str]):
    """A settings dataclass from ``args`` (``args[0]`` the subcommand); its fields without a default are positional."""
    from jsonargparse import ActionConfigFile, ArgumentError, ArgumentParser

    subcommand, description = args[0], settings_class.__doc__.split("\n\n")[0]
    parser = ArgumentParser(prog=f"emotion-lightning {subcommand}", description=description, **parser_rules())
    parser.add_argument("-c", "--config", action=ActionConfigFile, help="a YAML file of these settings")
    parser.add_class_arguments(settings_class, as_positional=True, as_group=False)
    try:
        config = parser.parse_args(args[1:])
    except ArgumentError as error:
        raise parser_error(str(error), settings_named_in_help(subcommand), subcommand) from None
    return settings_class(**{field.name: config[field.name] for field in dataclasses.fields(settings_class)})


def parser_error(message: str, settings: list[str], subcommand: str) -> SettingError:
    """jsonargparse's error (often several lines) as one line: the setting at fault, what it takes and what it got,
    the closest real name for one that does not exist, and where the settings are listed."""
    hint = f"`emotion-lightning {subcommand} --help` lists the settings"
    known = [f"--{name}" for name in settings]

    def closest(name: str) -> str:
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        return f"{name} (did you mean {close[0]}?)" if close else name

    error = read_argument_error(message)
    if error.unknown:
        return SettingError(f"unknown setting {', '.join(map(closest, error.unknown))}; {hint}")
    if error.unknown_in_config:
        return SettingError(f"unknown setting {closest('--' + error.unknown_in_config)} in a config file; {hint}")
    if error.key == "config":
        return SettingError(f"-c / --config: {message.partition(':')[2].strip()}")
    if error.key and error.wanted and error.given is not None:
        return SettingError(f"--{error.key} takes {' or '.join(error.wanted)}, not {error.given!r}; {hint}")
    if error.key:
        return SettingError(f"--{error.key}: {error.detail}; {hint}")
    return SettingError(f"{' '.join(message.split())}; {hint}")
