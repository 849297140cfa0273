"""The command line: ``emotion-lightning SUBCOMMAND`` (also ``python -m emotion_lightning``).

One table names each subcommand and the module that runs it (its ``main(args)``, ``args[0]`` the subcommand);
every one parses its settings by the rules of :mod:`emotion_lightning.cli.settings`. ``--help`` answers from the
shipped text without importing torch (a test checks it against each parser), ``--help-all`` from the parser.
"""

from __future__ import annotations

import difflib
import importlib
import sys

from emotion_lightning import __version__
from emotion_lightning.cli.config_files import check_yaml_files
from emotion_lightning.cli.settings import HELP_FOLDER, check_setting_names, take_texts, with_recipes
from emotion_lightning.console import set_up_messages
from emotion_lightning.errors import EmotionLightningError

PROG = "emotion-lightning"
# Adding a subcommand is one entry here, a module with main(args), and its help/<name>.txt.
SUBCOMMANDS = {
    "fit": ("cli.lightning", "train a model into a new run folder under trainer.default_root_dir"),
    "validate": ("cli.lightning", "evaluate a checkpoint on a labelled split; reports go beside the checkpoint"),
    "test": ("cli.lightning", "evaluate a checkpoint on the test split; reports go beside the checkpoint"),
    "predict": (
        "cli.lightning",
        "classify the texts of a file (one per line) or of --text, into a CSV beside the checkpoint",
    ),
    "export": ("export", "write a checkpoint as a Hugging Face model folder (and ONNX with --onnx true)"),
    "serve": ("serve.server", "answer predictions over HTTP with dynamic batching, and a page to try them"),
    "tune": ("tune.command", "search fit settings on validation accuracy: a resumable Optuna study"),
    "runs": ("runs.listing", "list the runs under a folder: their best val/acc, epochs and checkpoints"),
}


def top_level_help() -> str:
    width = max(map(len, SUBCOMMANDS))
    commands = "\n".join(f"  {name.ljust(width)}  {summary}" for name, (_, summary) in SUBCOMMANDS.items())
    return (
        f"usage: {PROG} [-h] [--version] {{{','.join(SUBCOMMANDS)}}} ...\n\n"
        "Fine-tune DistilBERT (or any Hugging Face encoder) for emotion recognition with PyTorch Lightning.\n\n"
        f"subcommands:\n{commands}\n\n"
        "options:\n"
        "  -h, --help  show this help; `SUBCOMMAND --help` shows a subcommand's settings\n"
        "  --version   show the version\n"
        "  --verbose   (after the subcommand) show the libraries' own warnings and notices\n\n"
        f"example: {PROG} fit -c reference -c offline   (recipes shipped with the package)"
    )


def run(args: list[str], callbacks: list | None = None):
    """Run a Lightning subcommand with ``args`` and return the CLI, for inspection (tests, the tuner)."""
    from emotion_lightning.cli.lightning import run as run_lightning_cli

    set_up_messages()
    args, texts = take_texts(list(args)) if args and args[0] == "predict" else (list(args), [])
    return run_lightning_cli(with_recipes(args), callbacks=callbacks, texts=texts)


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
    if given[0] not in SUBCOMMANDS:
        close = difflib.get_close_matches(given[0], SUBCOMMANDS, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        if given[0].startswith("-"):
            sys.exit(
                f"{PROG}: error: {given[0]} goes after a subcommand, for example: {PROG} fit -c reference {given[0]}"
            )
        sys.exit(f"{PROG}: error: unknown subcommand {given[0]!r}; {hint}(`{PROG} --help` lists them)")
    try:
        # `predict --text TEXT`: a text is no setting, and no word of it is read as one (--text --help is a text).
        given, texts = take_texts(given) if given[0] == "predict" else (given, [])
        if any(arg in ("-h", "--help") for arg in given[1:]):
            print((HELP_FOLDER / f"{given[0]}.txt").read_text(), end="")
            return
        given = ["--help" if arg == "--help-all" else arg for arg in with_recipes(given)]
        check_yaml_files(given)  # every subcommand's -c files: missing, not YAML, an alias
        if given[0] in ("fit", "validate", "test", "predict", "tune"):  # the parser takes seconds to build: first
            check_setting_names(given)
    except EmotionLightningError as error:
        sys.exit(f"{PROG}: error: {error}")
    given += [f"--text={text}" for text in texts]  # one word each, for lightning_cli to take back as they are
    verbose = "--verbose" in given
    if verbose:
        given.remove("--verbose")
    set_up_messages(verbose, libraries=given[0] not in ("serve", "runs"))  # serve's workers: in their own process
    try:
        importlib.import_module(f"emotion_lightning.{SUBCOMMANDS[given[0]][0]}").main(given)
    except EmotionLightningError as error:
        sys.exit(f"{PROG}: error: {error}")
