"""The shipped ``SUBCOMMAND --help`` texts (``emotion_lightning/help/*.txt``), made from each subcommand's parser.

``--help`` answers from these files at once (the parsers need Lightning, seconds to import); a test checks that
they are what the parsers say. Regenerate them with ``python -m tests.help_texts``.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import textwrap
from pathlib import Path

from emotion_lightning.cli import PROG, SUBCOMMANDS, main
from emotion_lightning.cli.config_files import RECIPES
from emotion_lightning.cli.settings import HELP_FOLDER

# What --help leaves to --help-all: the Trainer's eighty settings, and the optimizer's and scheduler's.
LEFT_TO_HELP_ALL = re.compile(r"--(trainer|optimizer|lr_scheduler)([ .]|$)")
# Shipped YAML files that are not fit settings: the search space of tune, a W&B sweep.
NOT_RECIPES = ("tune", "sweep")
# Summaries of the package's own, where the library's docstring says something else.
OWN_SUMMARIES = {
    "--ckpt_path": "a checkpoint fit wrote, or best (of the runs under trainer.default_root_dir), last or hpc",
    "--config": "a YAML file of settings, or a shipped recipe: "
    + ", ".join(sorted(path.stem for path in map(Path, map(str, RECIPES.iterdir())) if path.stem not in NOT_RECIPES)),
    "--print_config": "print the settings that would run, and exit",
    "--seed_everything": "the seed of every random number generator (default 42); true: a random one",
}


def full_help(subcommand: str) -> str:
    """The parser's own ``--help`` (``--help-all``), 100 columns wide."""
    os.environ["COLUMNS"] = "100"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.suppress(SystemExit):
        main([subcommand, "--help-all"])
    return printed.getvalue()


def _entries(text: str) -> list[tuple[str, str]]:
    """(name, help) of each argument in an argparse help text: ``--model.backbone``, or ``CHECKPOINT``."""
    entries, current = [], None
    for line in text.splitlines():
        if re.match(r"^  [-a-z]", line):
            head, _, help_text = line.strip().partition("  ")
            names = [part.strip().split(" ")[0] for part in head.split(", ")]
            name = next((n for n in names if n.startswith("--")), names[0])
            current = [name if name.startswith("-") else name.upper(), help_text.strip()]
            entries.append(current)
        elif current is not None and line.startswith("    ") and line.strip():
            # argparse wraps a line after a hyphen too (dair-/ai/emotion): no space is put back there.
            joint = "" if current[1].endswith("-") else " "
            current[1] = f"{current[1]}{joint}{line.strip()}".strip()
        else:
            current = None
    return [tuple(entry) for entry in entries]


def _summary(name: str, help_text: str) -> str:
    if name in OWN_SUMMARIES:
        return OWN_SUMMARIES[name]
    match = re.search(r"\((required, )?type: (.*?)(, default: (.*))?\)$", help_text)
    described = (help_text[: match.start()].strip() if match else help_text).replace("``", "")
    first = re.split(r"\.\s+(?=[A-Z])", described)[0].rstrip(".")
    if len(first) > 100:  # the first clause of a long sentence: the rest is in --help-all
        first = re.split(r"[;:] ", first)[0]
    if match and match[4] is not None and match[4] not in ("null", ""):
        first += f" (default {match[4]})"
    return first


def shipped_help(subcommand: str) -> str:
    """The package's settings of a subcommand, one line each; the Trainer's are left to ``--help-all``."""
    full = full_help(subcommand)
    entries = [
        (name, help_text)
        for name, help_text in _entries(full)
        if name not in ("-h", "--help")
        and not LEFT_TO_HELP_ALL.match(name)
        and not help_text.startswith("Path to a configuration file.")  # --model CONFIG: -c does it for all
    ]
    positional = " ".join(name for name, _ in entries if not name.startswith("-"))
    width = max(len(name) for name, _ in entries) + (4 if "--config" in dict(entries) else 0)
    lines = [
        f"  {('-c, ' if name == '--config' else '') + name:<{width}}  {_summary(name, text)}" for name, text in entries
    ]
    trainer = sorted({n for n, _ in _entries(full) if n.startswith("--trainer.") and not n.endswith(".help")})
    if trainer:
        listed = textwrap.fill(", ".join(trainer), width=116, initial_indent="  ", subsequent_indent="  ")
        lines.append(f"\nThe Trainer's settings (--help-all describes them):\n{listed}")
    more = "every setting in full" + (", the Trainer's (trainer.*) too" if trainer else "")
    usage = f"usage: {PROG} {subcommand} [-c CONFIG] [--print_config] [--SETTING VALUE ...] {positional}".rstrip()
    summary = SUBCOMMANDS[subcommand][1]
    return f"{usage}\n\n{summary[0].upper()}{summary[1:]}.\n`{PROG} {subcommand} --help-all`: {more}.\n\n" + (
        "\n".join(lines) + "\n"
    )


if __name__ == "__main__":
    for name in SUBCOMMANDS:
        (HELP_FOLDER / f"{name}.txt").write_text(shipped_help(name))
        print(f"wrote {HELP_FOLDER / name}.txt")
