"""``emotion-lightning runs``: the runs under a folder, a line each."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from emotion_lightning.runs.folders import (
    BEST_CHECKPOINT,
    CHECKPOINT_FOLDER,
    LAST_CHECKPOINT,
    LoggedRun,
    RunFileError,
    best_of,
    read_metrics,
    run_folders,
    run_number,
)


@dataclass(frozen=True)
class RunsSettings:
    """List the runs under a folder (and its subfolders): their best val/acc, epochs and checkpoints.

    Args:
        root: the folder (a trainer.default_root_dir, or one above several)
    """

    root: Path = Path("runs")


def describe_runs(root: Path) -> str:
    """One line per run folder under ``root``: its path, best ``val/acc``, epochs logged and checkpoints; the
    one ``--ckpt_path best`` picks in each root is marked. A file of a run that is not what the package wrote is
    left out, with a line saying which."""
    folders = sorted({path.parent for path in root.glob("**/version_*/") if run_number(path) is not None})
    if not folders:
        return f"no runs under {root}"
    lines, skipped = [f"{'run':<40} {'val/acc':>8} {'epochs':>6}  checkpoints"], []
    for parent in folders:
        rows, scored = [], []
        for number, folder in enumerate(run_folders(parent)):
            try:
                logged = read_metrics(folder)
            except RunFileError as error:
                skipped.append(f"skipped {error}")
                logged = LoggedRun(None, 0)
            kept = [
                name for name in (BEST_CHECKPOINT, LAST_CHECKPOINT) if (folder / CHECKPOINT_FOLDER / name).is_file()
            ]
            if BEST_CHECKPOINT in kept:
                scored.append((logged.best_score, number, folder))
            rows.append((folder, logged, kept))
        best = best_of(scored)
        for folder, logged, kept in rows:
            mark = "  <- --ckpt_path best" if folder == best else ""
            shown = f"{logged.best_score:.4f}" if logged.best_score is not None else "-"
            lines.append(f"{str(folder):<40} {shown:>8} {logged.epochs:>6}  {', '.join(kept) or '-'}{mark}")
    return "\n".join(lines + skipped)


def main(args: list[str]) -> None:
    """``emotion-lightning runs [ROOT]``"""
    from emotion_lightning.cli.settings import parse_settings

    if len(args) > 1 and not args[1].startswith("-"):  # the folder, given as the first argument
        args = [args[0], "--root", *args[1:]]
    print(describe_runs(parse_settings(RunsSettings, args).root))
