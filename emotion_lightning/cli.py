"""The command line: ``emotion-lightning SUBCOMMAND`` (also ``python -m emotion_lightning``).

This module stays light: ``--help`` and ``--version`` answer without importing torch or Lightning.
The Lightning subcommands live in :mod:`emotion_lightning.lightning_cli`.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import re
import sys
from pathlib import Path

from emotion_lightning import __version__
from emotion_lightning.console import quiet_libraries, show_messages
from emotion_lightning.errors import EmotionLightningError, parser_error

PROG = "emotion-lightning"
SUBCOMMANDS = {
    "fit": "train a model into a new run folder under trainer.default_root_dir (--ckpt_path last resumes)",
    "validate": "evaluate a checkpoint on the validation split; reports go beside the checkpoint",
    "test": "evaluate a checkpoint on the test split; reports go beside the checkpoint",
    "predict": "classify the texts of a file (one per line) into a CSV beside the checkpoint",
    "export": "write a checkpoint as a Hugging Face model folder (and ONNX with --onnx)",
    "serve": "answer predictions over HTTP with dynamic batching, and a page to try them (the `serve` extra)",
    "tune": "search fit settings on validation accuracy: a resumable Optuna study (the `tune` extra)",
}


def top_level_help() -> str:
    width = max(map(len, SUBCOMMANDS))
    commands = "\n".join(f"  {name.ljust(width)}  {summary}" for name, summary in SUBCOMMANDS.items())
    return (
        f"usage: {PROG} [-h] [--version] {{{','.join(SUBCOMMANDS)}}} ...\n\n"
        "Fine-tune DistilBERT (or any Hugging Face encoder) for emotion recognition with PyTorch Lightning.\n\n"
        f"subcommands:\n{commands}\n\n"
        "options:\n"
        "  -h, --help  show this help; `SUBCOMMAND --help` shows a subcommand's settings\n"
        "  --version   show the version\n"
        "  --verbose   (after the subcommand) show the libraries' own warnings and notices\n\n"
        f"example: {PROG} fit -c configs/reference.yaml -c configs/offline.yaml"
    )


LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")
# `SUBCOMMAND --help`, answered at once from these files (LightningCLI needs seconds to import Lightning and
# build its parser); tests/test_first_hour.py checks that they match the parser. Regenerate them with
# `python -c "from emotion_lightning.cli import write_settings_help; write_settings_help()"`.
HELP_FOLDER = Path(__file__).parent / "help"


def settings_named_in_help(subcommand: str) -> list[str]:
    """The settings a subcommand's shipped ``--help`` lists (``model.learning_rate``, ...)."""
    return re.findall(r"^  --([\w.]+)", (HELP_FOLDER / f"{subcommand}.txt").read_text(), flags=re.MULTILINE)


def settings_help(full_help: str, subcommand: str) -> str:
    """The package's settings out of LightningCLI's full help: its usage line and the Trainer's, optimizer's and
    scheduler's settings left out (``--help-all`` shows them)."""
    body = full_help[full_help.index("\noptions:\n") + 1 :]
    groups = [
        group
        for group in body.split("\n\n")
        if not re.search(r"^  --(trainer|optimizer|lr_scheduler)[ .]", group, flags=re.MULTILINE)
    ]
    return (
        f"usage: {PROG} {subcommand} [-h] [--help-all] [-c CONFIG] [--print_config] [--SETTING VALUE ...]\n\n"
        f"The package's settings; `{PROG} {subcommand} --help-all` lists the Trainer's (trainer.*) as well.\n\n"
        + "\n\n".join(groups).rstrip("\n")
        + "\n"
    )


def full_help(subcommand: str) -> str:
    """LightningCLI's own ``SUBCOMMAND --help``, 80 columns wide."""
    os.environ["COLUMNS"] = "80"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.suppress(SystemExit):
        run([subcommand, "--help"])
    return printed.getvalue()


def write_settings_help() -> None:
    """Write ``help/<subcommand>.txt`` for each Lightning subcommand."""
    HELP_FOLDER.mkdir(exist_ok=True)
    for subcommand in LIGHTNING_SUBCOMMANDS:
        (HELP_FOLDER / f"{subcommand}.txt").write_text(settings_help(full_help(subcommand), subcommand))


def parse_settings(settings_class, subcommand: str, argv: list[str]):
    """A settings dataclass from ``argv``, parsed as the Lightning subcommands parse theirs (jsonargparse:
    ``--SETTING VALUE``, ``-c FILE``, ``--print_config``); its fields without a default are positional."""
    import dataclasses
    from argparse import ArgumentError

    from jsonargparse import ActionConfigFile, ArgumentParser

    description = settings_class.__doc__.split("\n\n")[0]
    parser = ArgumentParser(
        prog=f"{PROG} {subcommand}", description=description, exit_on_error=False, allow_abbrev=False
    )
    parser.add_argument("-c", "--config", action=ActionConfigFile, help="a YAML file of these settings")
    parser.add_class_arguments(settings_class, as_positional=True, as_group=False)
    try:
        config = parser.parse_args(argv)
    except ArgumentError as error:
        raise parser_error(str(error), parser.get_defaults().keys(), subcommand) from None
    return settings_class(**{field.name: config[field.name] for field in dataclasses.fields(settings_class)})


def run(args: list[str] | None = None):
    """Run a Lightning subcommand with ``args`` (default: the command line); returns the CLI, for inspection."""
    from emotion_lightning.lightning_cli import run as run_lightning_cli

    return run_lightning_cli(args)


def main(args: list[str] | None = None) -> None:
    """The console script and ``python -m emotion_lightning``.

    Errors in the input (files, arguments, environment) end the program with their one-line message
    and exit status 1; anything else is a bug and keeps its traceback.
    """
    given = sys.argv[1:] if args is None else list(args)
    if not given or given[0] in ("-h", "--help"):
        print(top_level_help())
        return
    if given[0] == "--version":
        print(f"{PROG} {__version__}")
        return
    if given[0] == "--print_config":
        sys.exit(
            f"{PROG}: error: --print_config goes after a subcommand, "
            f"for example: {PROG} fit -c configs/reference.yaml --print_config"
        )
    asks_help = any(arg in ("-h", "--help") for arg in given[1:])
    if given[0] in LIGHTNING_SUBCOMMANDS and asks_help:
        print((HELP_FOLDER / f"{given[0]}.txt").read_text(), end="")
        return
    if given[0] in ("export", "serve", "tune") and asks_help:
        importlib.import_module(f"emotion_lightning.{given[0]}").main(given[1:])
        return
    given = ["--help" if arg == "--help-all" else arg for arg in given]
    show_messages()
    if "--verbose" in given:
        given.remove("--verbose")
    else:
        quiet_libraries()
    try:
        if given[0] in ("export", "serve", "tune"):
            module = importlib.import_module(f"emotion_lightning.{given[0]}")
            module.main(given[1:])
            return
        run(given)
    except EmotionLightningError as error:
        sys.exit(f"{PROG}: error: {error}")
